//! The `countersign` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use countersign::App;
use countersign::config::{LogFormat, Settings};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "countersign",
    version,
    about = "Puts an AI agent's pending OpenTrain spending approvals in front of the owner on Telegram and Discord, and keeps the message true."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch three sample approvals live their whole life (posted, then confirmed, declined and
    /// expired) on your configured chats, or the console: the real daemon against a simulated
    /// OpenTrain inside this process. Needs no token; touches no real OpenTrain and no store.
    Demo {
        /// Config file whose chats the demo uses (default: countersign.toml, if present).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How long each sample waits before its outcome.
        #[arg(long, value_name = "DURATION", default_value = "4s", value_parser = humantime::parse_duration)]
        pace: std::time::Duration,
        /// Show the demo on the console, whatever chats the config names.
        #[arg(long)]
        console: bool,
    },
    /// Write a commented config with a fresh random hook.token (readable only by you), then
    /// print the next steps. Never replaces an existing file without --force.
    Init {
        /// Where to write it.
        #[arg(short, long, value_name = "FILE", default_value = countersign::config::DEFAULT_CONFIG_FILE)]
        config: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Run the daemon.
    Run {
        /// Config file (default: countersign.toml in the working directory, if present).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate the config and check every credential against its service (sends the owner
    /// nothing); exits non-zero on any failure.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List tracked approvals, newest first, with their delivery state (works while the daemon
    /// runs). Without --all: the open ones and those whose delivery failed.
    List {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Include settled approvals.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// At most this many approvals.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// Find your Telegram chat id: prints a code, waits for `/start <code>` sent to the bot, and
    /// prints the chat_id line to configure. Run it while the daemon is stopped.
    Pair {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Ask the running daemon's /healthz (for container and service health checks); exits 0
    /// when it answers 200.
    Health {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Hand a 202 body (from FILE, or stdin with - or no FILE) to the running daemon's hook and
    /// print its answer. With --wait, then wait for the outcome like `wait`.
    Submit {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Then wait until the approval ends (or DURATION passes: 90s, 15m, 2h), print its final
        /// state as JSON and exit with its code, as `wait` does.
        #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true,
              value_parser = countersign::client::parse_duration)]
        wait: Option<Option<Duration>>,
        /// The body to submit; `-` or nothing reads stdin.
        #[arg(value_name = "FILE|-")]
        input: Option<String>,
    },
    /// Wait until a tracked approval ends, print its final state as JSON and exit with its code:
    /// 0 confirmed, 3 declined, 4 expired, 5 superseded, 6 rejected (OpenTrain does not know
    /// it), 7 still open when --timeout passed, 1 countersign could not be asked. Rides out a
    /// daemon restart.
    Wait {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Give up after this long (90s, 15m, 2h) with exit 7; default: until the approval ends.
        #[arg(long, value_name = "DURATION", value_parser = countersign::client::parse_duration)]
        timeout: Option<Duration>,
        /// The approval id (`apr_…`).
        #[arg(value_name = "ID")]
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("countersign: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo {
                config,
                pace,
                console,
            } => demo(config, pace, console).await,
            Command::Init { config, force } => init(&config, force),
            Command::Run { config } => run(config).await,
            Command::Check { config } => check(config).await,
            Command::List {
                config,
                all,
                json,
                limit,
            } => list(config, all, json, limit),
            Command::Pair { config, timeout } => pair(config, timeout).await,
            Command::Health { config } => health(config).await,
            Command::Submit {
                config,
                input,
                wait,
            } => submit(config, input, wait).await,
            Command::Wait {
                config,
                timeout,
                id,
            } => wait(config, timeout, id).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("countersign: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(settings: &Settings) {
    init_logging_at(settings, &settings.log.level);
}

fn init_logging_at(settings: &Settings, level: &str) {
    // RUST_LOG, when set, wins over log.level: the usual way to turn up one module for a while.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only for a person at a terminal, not for journald or a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

fn init(path: &std::path::Path, force: bool) -> Result<ExitCode> {
    countersign::init::write(path, force)?;
    print!("{}", countersign::init::next_steps(path));
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "demo")]
async fn demo(
    config: Option<PathBuf>,
    pace: std::time::Duration,
    console_only: bool,
) -> Result<ExitCode> {
    use countersign::demo;
    let owner = demo::owner_settings(config.as_deref())?;
    // The demo's own story is on stdout; the daemon's log says only what went wrong.
    init_logging_at(&owner, "warn");
    let options = demo::Options { pace, console_only };
    let mut out = std::io::stdout();
    tokio::select! {
        done = demo::run(&owner, &options, &mut out) => Ok(if done? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        () = wait_for_signal() => {
            eprintln!("countersign: demo stopped");
            Ok(ExitCode::from(130))
        }
    }
}

#[cfg(not(feature = "demo"))]
async fn demo(
    _config: Option<PathBuf>,
    _pace: std::time::Duration,
    _console_only: bool,
) -> Result<ExitCode> {
    anyhow::bail!(
        "this countersign was built without the demo (cargo feature `demo`, on by default); \
         `cargo run --release -- demo` from the source builds it with the demo"
    )
}

async fn run(config: Option<PathBuf>) -> Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    init_logging(&settings);
    let app = App::build(settings).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: intake stops, in-flight work gets a few seconds");
        signal.cancel();
    });
    app.run_until(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn check(config: Option<PathBuf>) -> Result<ExitCode> {
    let settings = match Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            println!("FAIL  config     {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let lines = countersign::check::run(&settings).await;
    for line in &lines {
        println!("{line}");
    }
    Ok(if lines.iter().all(|l| l.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn list(config: Option<PathBuf>, all: bool, json: bool, limit: usize) -> Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    print!(
        "{}",
        countersign::list::render(&settings, all, json, limit)?
    );
    Ok(ExitCode::SUCCESS)
}

async fn pair(config: Option<PathBuf>, timeout: u64) -> Result<ExitCode> {
    let (token, api_url) = Settings::load_for_pairing(config.as_deref())?;
    let code = countersign::pair::new_code()?;
    let mut out = std::io::stdout();
    match countersign::pair::pair(
        &token,
        api_url,
        &code,
        std::time::Duration::from_secs(timeout),
        &mut out,
    )
    .await
    {
        Ok(paired) => {
            println!(
                "\nPaired with {}. Put this in your config:\n\n[telegram]\nchat_id = {}\n\n                 (or COUNTERSIGN__TELEGRAM__CHAT_ID={})",
                paired.who, paired.chat_id, paired.chat_id
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("countersign: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn health(config: Option<PathBuf>) -> Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    let url = format!(
        "{}/healthz",
        countersign::client::hook_base(settings.hook.listen)
    );
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if response.status().is_success() {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("countersign: {url} answered {}", response.status());
        Ok(ExitCode::FAILURE)
    }
}

async fn submit(
    config: Option<PathBuf>,
    input: Option<String>,
    wait: Option<Option<Duration>>,
) -> Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    Ok(countersign::client::submit(&settings, input.as_deref(), wait).await)
}

async fn wait(config: Option<PathBuf>, timeout: Option<Duration>, id: String) -> Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    Ok(countersign::client::wait(&settings, &id, timeout).await)
}
