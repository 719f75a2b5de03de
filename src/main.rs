//! The `countersign` command line.

use std::io::{IsTerminal, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// print its answer.
    Submit {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The body to submit; `-` or nothing reads stdin.
        #[arg(value_name = "FILE|-")]
        input: Option<String>,
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
            Command::Submit { config, input } => submit(config, input).await,
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
    // RUST_LOG, when set, wins over log.level: the usual way to turn up one module for a while.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
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
    let code = countersign::pair::new_code();
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

/// Where a client reaches a hook listening on `listen` (a wildcard address means this machine).
fn hook_base(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

async fn health(config: Option<PathBuf>) -> Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    let url = format!("{}/healthz", hook_base(settings.hook.listen));
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

async fn submit(config: Option<PathBuf>, input: Option<String>) -> Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    let body = match input.as_deref() {
        None | Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            buf
        }
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}"))?,
    };
    let url = format!("{}/v1/approvals", hook_base(settings.hook.listen));
    let mut request = reqwest::Client::new()
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(token) = &settings.hook.token {
        request = request.bearer_auth(token.expose());
    }
    let response = request.send().await.with_context(|| {
        format!("cannot reach the countersign hook at {url}: is `countersign run` running?")
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{text}");
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("countersign: the hook answered {status}");
        Ok(ExitCode::FAILURE)
    }
}
