//! countersign's benchmark: every figure of SPEC §5 (and issue #6), measured against the real
//! daemon (the release binary, run as a child process) talking to the strict local fakes of
//! OpenTrain and Telegram from `countersign-fakes`, served by this process.
//!
//! ```sh
//! cargo bench --bench bench                          # 3 rounds, then median and min–max per figure
//! cargo bench --bench bench -- --rounds 1            # one round
//! cargo bench --bench bench -- --only intake,burst   # intake, tracking, doorbell, burst, longpoll
//! ```
//!
//! Linux only (it reads `/proc`). For a diagnosis: `COUNTERSIGN_BENCH_KEEP_LOGS=DIR` keeps each
//! daemon's log (and, with `COUNTERSIGN_BENCH_KEEP_STORE=1`, its database);
//! `COUNTERSIGN_BENCH_DOORBELLS=FILE` writes every doorbell latency (µs), one per line.
//!
//! Each scenario starts a fresh daemon with a fresh store (in a temporary directory on the same
//! disk as everything else, `synchronous = FULL` as by default) and fresh fakes. The load
//! generator and the fakes share the machine's cores with the daemon: on a 2-core machine the
//! daemon gets at most what they leave. Every round prints one line per figure,
//! `figure | value | target | met`; the summary prints the median and min–max over the rounds.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use countersign_fakes::{FakeOpenTrain, FakeTelegram};
use serde_json::json;
use tokio::process::{Child, Command};

const HOOK_TOKEN: &str = "bench-hook-token-0001";
const OT_TOKEN: &str = "ot_pat_bench-opentrain-0002";
const TG_TOKEN: &str = "123456:BENCH-telegram-token-0003";
const CHAT: i64 = 4242;
/// A group chat the bot is in (Telegram's supergroup ids start at -100).
const GROUP_CHAT: i64 = -1_001_234_567_890;
const APP_URL: &str = "https://app.opentrain.test";
const API_PREFIX: &str = "/api/public/v1";

/// Concurrent agents for the intake figures.
const AGENTS: usize = 64;
/// Submissions measured per intake run, after the warm-up.
const INTAKE_N: usize = 20_000;
const WARMUP_N: usize = 2_000;
/// The offered load of the paced (open-loop) latency run: SPEC §5's throughput target.
const PACED_RATE: f64 = 5_000.0;
/// Tracked approvals for the memory figure, and pending ones for the OpenTrain-cost figure.
const TRACKED_N: usize = 10_000;
const PENDING_N: usize = 1_000;
/// Quiet window over which OpenTrain requests are counted (poll interval 1 s).
const QUIET_WINDOW: Duration = Duration::from_secs(10);
/// Approvals followed from submission to a terminal status for the reads-per-life figure
/// (besides the doorbell ones).
const LIFECYCLES_N: usize = 100;
/// Doorbells timed.
const DOORBELLS_N: usize = 200;
const BURST_N: usize = 200;
/// Telegram pacing for the scenarios that are not about the chat's pace (tracking, doorbells):
/// 1/20 of the real one message a second, enforced by the fake (any early request is a 429).
/// The burst runs at the real pace.
const TG_PACE_MS: u64 = 50;
/// Long polls held at once (issue #15).
const WAITERS_N: usize = 10_000;

// ------------------------------------------------------------------------------------------
// figures

#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    Below(f64),
    AtMost(f64),
    Exactly(f64),
    /// No target: context (a baseline, a breakdown).
    Info,
}

impl Target {
    fn met(self, v: f64) -> Option<bool> {
        match self {
            Target::AtLeast(t) => Some(v >= t),
            Target::Below(t) => Some(v < t),
            Target::AtMost(t) => Some(v <= t),
            Target::Exactly(t) => Some((v - t).abs() < 1e-9),
            Target::Info => None,
        }
    }
}

#[derive(Clone)]
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    /// Decimals to print.
    prec: usize,
    target: Target,
    target_text: String,
    /// Extra context printed after the value (counts, percentiles).
    note: String,
}

fn fig(name: &str, value: f64, unit: &'static str, prec: usize, target: Target) -> Figure {
    let target_text = match target {
        Target::AtLeast(t) => format!(">= {} {unit}", num(t, prec)),
        Target::Below(t) => format!("< {} {unit}", num(t, prec)),
        Target::AtMost(t) => format!("<= {} {unit}", num(t, prec)),
        Target::Exactly(t) => format!("= {} {unit}", num(t, prec)),
        Target::Info => "-".into(),
    };
    Figure {
        name: name.into(),
        value,
        unit,
        prec,
        target,
        target_text: target_text.trim().to_string(),
        note: String::new(),
    }
}

impl Figure {
    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
    fn met_text(&self) -> &'static str {
        match self.target.met(self.value) {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        }
    }
    fn print(&self) {
        let mut value = with_unit(num(self.value, self.prec), self.unit);
        if !self.note.is_empty() {
            let _ = write!(value, " ({})", self.note);
        }
        println!(
            "{} | {} | {} | {}",
            self.name,
            value.trim(),
            self.target_text,
            self.met_text()
        );
    }
}

fn with_unit(value: String, unit: &str) -> String {
    if unit.is_empty() {
        value
    } else {
        format!("{value} {unit}")
    }
}

fn num(v: f64, prec: usize) -> String {
    format!("{v:.prec$}")
}

// ------------------------------------------------------------------------------------------
// the daemon under test

struct DaemonOptions {
    poll_interval_secs: u64,
    /// `telegram.min_send_interval_ms`; the fake enforces the same interval.
    telegram_interval_ms: u64,
    group_commit: bool,
    /// `log.format = "json"`: lines a scenario reads back, with microsecond timestamps.
    json_log: bool,
    /// `hook.max_connections`: the default (256) but for the long-poll scenario, whose
    /// 10,000 waiters each hold a connection (an operator expecting that raises it too).
    hook_max_connections: usize,
    /// `telegram.chat_id`: the owner's private chat but for the group-chat burst.
    chat_id: i64,
    /// `grouping.min_batch`, `grouping.max_batch`; `None` turns grouping off, so every
    /// approval has a message of its own (the scenarios that count per-approval messages).
    grouping: Option<(usize, usize)>,
}

struct Daemon {
    child: Child,
    pid: u32,
    hook: String,
    dir: tempfile::TempDir,
}

impl Daemon {
    async fn start(opentrain: &FakeOpenTrain, telegram: &FakeTelegram, o: DaemonOptions) -> Daemon {
        telegram.set_min_interval(Duration::from_millis(o.telegram_interval_ms));
        let dir = tempfile::Builder::new()
            .prefix("countersign-bench")
            .tempdir()
            .expect("a temporary directory");
        let port = free_port();
        let store = dir.path().join("countersign.db");
        let config = format!(
            "[hook]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{HOOK_TOKEN}\"\n\
             max_connections = {}\n\
             [opentrain]\napi_url = \"{}\"\napp_url = \"{APP_URL}\"\ntoken = \"{OT_TOKEN}\"\n\
             poll_interval_secs = {}\n\
             [store]\npath = \"{}\"\ngroup_commit = {}\n\
             [console]\nenabled = false\n\
             [telegram]\nbot_token = \"{TG_TOKEN}\"\nchat_id = {}\napi_url = \"{}\"\n\
             min_send_interval_ms = {}\n\
             [grouping]\nmin_batch = {}\nmax_batch = {}\n\
             [log]\nformat = \"{}\"\n",
            o.hook_max_connections,
            opentrain.api_url(),
            o.poll_interval_secs,
            store.display(),
            o.group_commit,
            o.chat_id,
            telegram.api_url(),
            o.telegram_interval_ms,
            o.grouping.map_or(0, |g| g.0),
            o.grouping.map_or(10, |g| g.1),
            if o.json_log { "json" } else { "human" },
        );
        let config_path = dir.path().join("countersign.toml");
        std::fs::write(&config_path, config).expect("write the config");
        // The daemon logs at its default level (info), to a file as it would to journald.
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = Command::new(daemon_binary())
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the countersign daemon");
        let pid = child.id().expect("a running child has a pid");
        let daemon = Daemon {
            child,
            pid,
            hook: format!("http://127.0.0.1:{port}"),
            dir,
        };
        daemon.wait_healthy().await;
        daemon
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.hook)).send().await
                && r.status().as_u16() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not become healthy; see {}",
                self.dir.path().join("daemon.log").display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `(VmRSS, VmHWM)` in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("/proc/<pid>/status (Linux)");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time the daemon has used so far (user + system).
    fn cpu(&self) -> Duration {
        cpu_of(&format!("/proc/{}/stat", self.pid))
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        // COUNTERSIGN_BENCH_KEEP_LOGS=DIR keeps each daemon's log there.
        if let Some(keep) = std::env::var_os("COUNTERSIGN_BENCH_KEEP_LOGS") {
            let to = PathBuf::from(&keep).join(format!("daemon-{}.log", self.pid));
            let _ = std::fs::create_dir_all(to.parent().expect("a parent"));
            let _ = std::fs::copy(self.dir.path().join("daemon.log"), to);
            if std::env::var_os("COUNTERSIGN_BENCH_KEEP_STORE").is_some() {
                for ext in ["db", "db-wal"] {
                    let from = self.dir.path().join(format!("countersign.{ext}"));
                    let to = PathBuf::from(&keep).join(format!("store-{}.{ext}", self.pid));
                    let _ = std::fs::copy(from, to);
                }
            }
        }
    }
}

/// User + system CPU time of a process, from its `/proc/<pid>/stat` (in USER_HZ = 100 ticks/s).
fn cpu_of(stat: &str) -> Duration {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15; after the name, state is index 0 (field 3).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// CPU time the whole machine spent busy (all CPUs, everything but idle and iowait), from
/// `/proc/stat`: what is left after the daemon's and this process's share is other work
/// (interrupt time nobody is charged for counts there too).
fn machine_busy() -> Duration {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Duration::from_millis(busy * 10)
}

/// The daemon binary Cargo built for this benchmark (release profile under `cargo bench`).
fn daemon_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_countersign"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn fakes() -> (FakeOpenTrain, FakeTelegram) {
    (
        FakeOpenTrain::start(OT_TOKEN, APP_URL).await,
        FakeTelegram::start(TG_TOKEN, CHAT).await,
    )
}

/// One distinct funding approval: a contract with one $450 milestone, and the 202 body OpenTrain
/// gives the agent, as the agent would post it. Returns `(approval id, contract id, body)`.
fn new_approval(ot: &FakeOpenTrain, n: usize) -> (String, String, Vec<u8>) {
    let contract = format!("ctr_b{n}");
    let milestone = format!("ms_b{n}");
    ot.add_simple_contract(
        &contract,
        "Spanish Sentiment Labeling Contract",
        "Maria G.",
        &[(&milestone, "First labeling batch", 450.0, "NOT_FUNDED")],
    );
    let mut body = ot.create_approval("milestone_fund", Some(&contract), Some(&milestone), None);
    let id = body["approval"]["id"].as_str().expect("an id").to_string();
    body["agent"] = json!("bench-agent");
    body["context"] = json!({"note": "benchmark"});
    (id, contract, serde_json::to_vec(&body).expect("json"))
}

fn new_approvals(ot: &FakeOpenTrain, from: usize, n: usize) -> Vec<(String, String, Vec<u8>)> {
    (from..from + n).map(|i| new_approval(ot, i)).collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("an HTTP client")
}

// ------------------------------------------------------------------------------------------
// load generation

struct LoadResult {
    /// Answers per status code other than 202.
    errors: usize,
    elapsed: Duration,
    /// Latencies in microseconds, sorted.
    latencies: Vec<u64>,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        (self.latencies.len() - self.errors) as f64 / self.elapsed.as_secs_f64()
    }
    fn pct_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p) as f64 / 1000.0
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> u16 {
    match client
        .post(url)
        .bearer_auth(HOOK_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// Closed loop: `agents` tasks each submit the next body as soon as their previous answer came.
async fn closed_loop(hook: &str, bodies: Vec<Vec<u8>>, agents: usize) -> LoadResult {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let client = client();
    let url = format!("{hook}/v1/approvals");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..agents {
        let (bodies, next, client, url) =
            (bodies.clone(), next.clone(), client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let t = Instant::now();
                if post(&client, &url, body.clone()).await != 202 {
                    errors += 1;
                }
                lat.push(t.elapsed().as_micros() as u64);
            }
            (lat, errors)
        }));
    }
    collect(tasks, started).await
}

/// Open loop: `rate` submissions a second spread over `agents` connections, each on a fixed
/// schedule. Latency counts from the scheduled time, so an agent held up by a slow answer does
/// not hide the wait of the requests behind it (no coordinated omission).
async fn paced(hook: &str, bodies: Vec<Vec<u8>>, agents: usize, rate: f64) -> LoadResult {
    let bodies = Arc::new(bodies);
    let client = client();
    let url = format!("{hook}/v1/approvals");
    let started = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for agent in 0..agents {
        let (bodies, client, url) = (bodies.clone(), client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = agent;
            while let Some(body) = bodies.get(i) {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                if post(&client, &url, body.clone()).await != 202 {
                    errors += 1;
                }
                lat.push(due.elapsed().as_micros() as u64);
                i += agents;
            }
            (lat, errors)
        }));
    }
    collect(tasks, started).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(Vec<u64>, usize)>>,
    started: Instant,
) -> LoadResult {
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("load task");
        latencies.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    LoadResult {
        errors,
        elapsed,
        latencies,
    }
}

/// Submits every body with `concurrency` agents and asserts each was newly accepted.
async fn submit_all(hook: &str, bodies: Vec<Vec<u8>>, concurrency: usize) {
    let n = bodies.len();
    let r = closed_loop(hook, bodies, concurrency).await;
    assert_eq!(
        r.errors, 0,
        "{} of {n} submissions were not accepted",
        r.errors
    );
}

/// Waits until `check` holds, polling every `every`; panics after `limit`.
async fn wait_for(what: &str, limit: Duration, every: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

// ------------------------------------------------------------------------------------------
// scenarios

/// A fresh daemon for an intake run, already warmed up with `WARMUP_N` submissions, and the
/// `INTAKE_N` distinct bodies to measure with.
async fn intake_daemon(group_commit: bool) -> (FakeOpenTrain, FakeTelegram, Daemon, Vec<Vec<u8>>) {
    let (ot, tg) = fakes().await;
    let mut bodies: Vec<_> = new_approvals(&ot, 0, WARMUP_N + INTAKE_N)
        .into_iter()
        .map(|a| a.2)
        .collect();
    let measured = bodies.split_off(WARMUP_N);
    let d = Daemon::start(
        &ot,
        &tg,
        DaemonOptions {
            poll_interval_secs: 15,
            telegram_interval_ms: 1000,
            group_commit,
            json_log: false,
            hook_max_connections: 256,
            chat_id: CHAT,
            grouping: None,
        },
    )
    .await;
    submit_all(&d.hook, bodies, AGENTS).await;
    (ot, tg, d, measured)
}

/// Durable intake: throughput at saturation (closed loop) and latency at the target rate
/// (open loop), each on a fresh daemon. `group_commit = false` is the baseline: one commit per
/// write, everything else the same.
async fn intake(group_commit: bool, out: &mut Vec<Figure>) {
    let (label, rate_target, p99_target) = if group_commit {
        ("group commit", Target::AtLeast(5000.0), Target::Below(20.0))
    } else {
        ("one commit per write", Target::Info, Target::Info)
    };

    // Saturation.
    let (ot, _tg, d, bodies) = intake_daemon(group_commit).await;
    let approvals = format!("{API_PREFIX}/approvals/");
    let (cpu_d, cpu_b, cpu_all, verified) = (
        d.cpu(),
        cpu_of("/proc/self/stat"),
        machine_busy(),
        ot.count("GET", &approvals),
    );
    let r = closed_loop(&d.hook, bodies, AGENTS).await;
    let cpu_d = d.cpu() - cpu_d;
    let cpu_b = cpu_of("/proc/self/stat") - cpu_b;
    let cpu_others = (machine_busy() - cpu_all).saturating_sub(cpu_d + cpu_b);
    let verified = ot.count("GET", &approvals) - verified;
    d.stop().await;
    let secs = r.elapsed.as_secs_f64();
    out.push(
        fig(
            &format!("intake, {label}: accepted/s, {AGENTS} agents, closed loop"),
            r.rate(),
            "/s",
            0,
            rate_target,
        )
        .note(format!(
            "{} in {secs:.2} s, {} errors; CPU: daemon {:.2} cores ({:.0} us/approval), \
             load generator + fakes {:.2} cores, other processes {:.2} cores; \
             {verified} verified meanwhile",
            r.latencies.len(),
            r.errors,
            cpu_d.as_secs_f64() / secs,
            cpu_d.as_secs_f64() * 1e6 / r.latencies.len() as f64,
            cpu_b.as_secs_f64() / secs,
            cpu_others.as_secs_f64() / secs,
        )),
    );
    out.push(
        fig(
            &format!("intake, {label}: hook latency p99 at saturation"),
            r.pct_ms(99.0),
            "ms",
            1,
            Target::Info,
        )
        .note(format!("p50 {:.1} ms", r.pct_ms(50.0))),
    );

    // Latency at the target load.
    let (_ot, _tg, d, bodies) = intake_daemon(group_commit).await;
    let (cpu_d, cpu_b, cpu_all) = (d.cpu(), cpu_of("/proc/self/stat"), machine_busy());
    let r = paced(&d.hook, bodies, AGENTS, PACED_RATE).await;
    let cpu_d = d.cpu() - cpu_d;
    let cpu_b = cpu_of("/proc/self/stat") - cpu_b;
    let cpu_others = (machine_busy() - cpu_all).saturating_sub(cpu_d + cpu_b);
    d.stop().await;
    let secs = r.elapsed.as_secs_f64();
    out.push(
        fig(
            &format!(
                "intake, {label}: hook latency p99 at {PACED_RATE:.0}/s offered, {AGENTS} agents"
            ),
            r.pct_ms(99.0),
            "ms",
            1,
            p99_target,
        )
        .note(format!(
            "p50 {:.1} ms, p99.9 {:.1} ms, achieved {:.0}/s, {} errors; CPU: daemon {:.2} cores, \
             load generator + fakes {:.2}, other processes {:.2}",
            r.pct_ms(50.0),
            r.pct_ms(99.9),
            r.rate(),
            r.errors,
            cpu_d.as_secs_f64() / secs,
            cpu_b.as_secs_f64() / secs,
            cpu_others.as_secs_f64() / secs,
        )),
    );
}

/// Memory idle and with 10,000 tracked approvals; OpenTrain requests while 1,000 and 10,000
/// approvals are pending and quiet; OpenTrain reads over the life of approvals resolved through
/// `/updates`.
async fn tracking(out: &mut Vec<Figure>, lives: &mut Vec<usize>) {
    let (ot, tg) = fakes().await;
    let approvals = new_approvals(&ot, 0, TRACKED_N);
    let d = Daemon::start(
        &ot,
        &tg,
        DaemonOptions {
            poll_interval_secs: 1,
            telegram_interval_ms: 0,
            group_commit: true,
            json_log: false,
            hook_max_connections: 256,
            chat_id: CHAT,
            grouping: None,
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, hwm) = d.memory_kib();
    out.push(
        fig(
            "resident memory, idle",
            mb(rss),
            "MB",
            1,
            Target::Below(25.0),
        )
        .note(format!("{:.1} MiB; peak {:.1} MB", mib(rss), mb(hwm))),
    );

    // 1,000 pending, verified and posted; then count OpenTrain requests while nothing happens.
    let bodies: Vec<_> = approvals[..PENDING_N].iter().map(|a| a.2.clone()).collect();
    submit_all(&d.hook, bodies, AGENTS).await;
    wait_posted(&tg, PENDING_N).await;
    quiet_cost(&ot, PENDING_N, out).await;

    // 10,000 tracked.
    let bodies: Vec<_> = approvals[PENDING_N..].iter().map(|a| a.2.clone()).collect();
    let t = Instant::now();
    submit_all(&d.hook, bodies, AGENTS).await;
    wait_posted(&tg, TRACKED_N).await;
    let pipeline = t.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, hwm) = d.memory_kib();
    out.push(
        fig(
            &format!("resident memory, {TRACKED_N} tracked approvals"),
            mb(rss),
            "MB",
            1,
            Target::Below(60.0),
        )
        .note(format!("{:.1} MiB; peak {:.1} MB", mib(rss), mb(hwm))),
    );
    out.push(
        fig(
            &format!(
                "pipeline: {} approvals submitted -> verified -> posted (no pacing)",
                TRACKED_N - PENDING_N
            ),
            (TRACKED_N - PENDING_N) as f64 / pipeline.as_secs_f64(),
            "/s",
            0,
            Target::Info,
        )
        .note(format!("{:.1} s", pipeline.as_secs_f64())),
    );
    quiet_cost(&ot, TRACKED_N, out).await;

    // Lives: resolve some through OpenTrain (the event reaches the daemon through /updates).
    let edits_before = tg.count("editMessageText");
    for (i, (id, _, _)) in approvals.iter().take(LIFECYCLES_N).enumerate() {
        ot.resolve(id, if i % 2 == 0 { "confirmed" } else { "declined" }, None);
    }
    wait_for(
        "the resolved approvals' messages to be edited",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || tg.count("editMessageText") >= edits_before + LIFECYCLES_N,
    )
    .await;
    lives.extend(reads_per_life(&ot, &approvals[..LIFECYCLES_N]));
    assert_eq!(
        tg.rate_limited_count(),
        0,
        "no pacing was set, no 429 expected"
    );
    d.stop().await;
}

async fn wait_posted(tg: &FakeTelegram, n: usize) {
    wait_for(
        &format!("{n} messages posted"),
        Duration::from_secs(600),
        Duration::from_millis(50),
        || tg.count("sendMessage") >= n,
    )
    .await;
}

/// Counts OpenTrain requests over `QUIET_WINDOW` with `pending` approvals tracked and nothing
/// happening upstream.
async fn quiet_cost(ot: &FakeOpenTrain, pending: usize, out: &mut Vec<Figure>) {
    // Let the verifier's last answers land before the window opens.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let count = |ot: &FakeOpenTrain| {
        (
            ot.count("GET", &format!("{API_PREFIX}/updates")),
            ot.count("GET", &format!("{API_PREFIX}/approvals"))
                + ot.count("GET", &format!("{API_PREFIX}/contracts"))
                + ot.count("GET", &format!("{API_PREFIX}/proposals")),
            ot.count("GET", "/") + ot.count("POST", "/"),
        )
    };
    let (u0, r0, a0) = count(ot);
    let t = Instant::now();
    tokio::time::sleep(QUIET_WINDOW).await;
    let (u1, r1, a1) = count(ot);
    let secs = t.elapsed().as_secs_f64();
    let updates = (u1 - u0) as f64;
    out.push(
        fig(
            &format!("OpenTrain /updates per poll interval, {pending} pending, quiet"),
            updates / secs,
            "",
            2,
            Target::AtMost(1.1),
        )
        .note(format!("{} in {secs:.1} s at a 1 s interval", u1 - u0)),
    );
    out.push(
        fig(
            &format!("OpenTrain reads of approvals/contracts, {pending} pending, quiet"),
            (r1 - r0) as f64,
            "",
            0,
            Target::Exactly(0.0),
        )
        .note(format!("{} requests of any kind in {secs:.1} s", a1 - a0)),
    );
}

/// For each approval: how many times OpenTrain was asked for it or for its contract.
fn reads_per_life(ot: &FakeOpenTrain, approvals: &[(String, String, Vec<u8>)]) -> Vec<usize> {
    let requests = ot.requests();
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for r in &requests {
        if r.method == "GET" {
            *counts.entry(r.path.as_str()).or_default() += 1;
        }
    }
    approvals
        .iter()
        .map(|(id, contract, _)| {
            counts
                .get(format!("{API_PREFIX}/approvals/{id}").as_str())
                .copied()
                .unwrap_or(0)
                + counts
                    .get(format!("{API_PREFIX}/contracts/{contract}").as_str())
                    .copied()
                    .unwrap_or(0)
        })
        .collect()
}

/// Doorbell → edited message: an agent posts the `approval.confirmed` event it saw; the poll
/// interval is an hour, so only the doorbell can bring the news.
async fn doorbells(out: &mut Vec<Figure>, lives: &mut Vec<usize>) {
    let (ot, tg) = fakes().await;
    let approvals = new_approvals(&ot, 0, DOORBELLS_N);
    let d = Daemon::start(
        &ot,
        &tg,
        DaemonOptions {
            poll_interval_secs: 3600,
            telegram_interval_ms: TG_PACE_MS,
            group_commit: true,
            json_log: false,
            hook_max_connections: 256,
            chat_id: CHAT,
            grouping: None,
        },
    )
    .await;
    let bodies: Vec<_> = approvals.iter().map(|a| a.2.clone()).collect();
    submit_all(&d.hook, bodies, AGENTS).await;
    wait_for(
        "every doorbell approval posted",
        Duration::from_secs(600),
        Duration::from_millis(20),
        || tg.messages(CHAT).len() >= DOORBELLS_N,
    )
    .await;
    let client = client();
    let url = format!("{}/v1/events", d.hook);
    let mut latencies = Vec::new();
    let limited = tg.rate_limited_count();
    for (i, (id, _, _)) in approvals.iter().enumerate() {
        // Leave the chat's pacing interval behind, so this measures the pipeline, not the pace.
        tokio::time::sleep(Duration::from_millis(TG_PACE_MS + 10)).await;
        ot.resolve(id, if i % 2 == 0 { "confirmed" } else { "declined" }, None);
        let event = ot.events().pop().expect("the resolution's event");
        let edits = tg.count("editMessageText");
        let t = Instant::now();
        let status = post(&client, &url, serde_json::to_vec(&event).expect("json")).await;
        assert_eq!(status, 202, "POST /v1/events");
        loop {
            if tg.count("editMessageText") > edits {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no edit after a doorbell"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        latencies.push(t.elapsed().as_micros() as u64);
    }
    if let Some(path) = std::env::var_os("COUNTERSIGN_BENCH_DOORBELLS") {
        let text: String = latencies.iter().map(|l| format!("{l}\n")).collect();
        let _ = std::fs::write(path, text);
    }
    latencies.sort_unstable();
    let edited = tg
        .messages(CHAT)
        .iter()
        .filter(|m| m.edits >= 1 && m.reply_markup.is_none())
        .count();
    assert_eq!(edited, DOORBELLS_N, "every message shows its outcome");
    lives.extend(reads_per_life(&ot, &approvals));
    let p = |q| percentile(&latencies, q) as f64 / 1000.0;
    out.push(
        fig(
            "doorbell (agent event) -> message edited, p99",
            p(99.0),
            "ms",
            1,
            Target::Below(200.0),
        )
        .note(format!(
            "p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms, {DOORBELLS_N} doorbells, {} x 429 meanwhile",
            p(50.0),
            p(90.0),
            p(100.0),
            tg.rate_limited_count() - limited
        )),
    );
    d.stop().await;
}

/// Issue #16: 200 approvals at once, into the owner's private chat and into a group chat, at
/// Telegram's real pace (the fake: one message a second per chat, and at most 20 in any minute
/// in a group, answered with 429 beyond; the daemon at its defaults). Real time, not scaled: a
/// group's per-minute window is a Telegram fact the daemon keeps as a constant. Figures: the
/// time until every approval's link is in front of the owner, the messages it took, and the
/// 429s drawn. The group chat runs at the default `grouping.max_batch` (10) and at its largest
/// (25).
async fn burst(out: &mut Vec<Figure>) {
    burst_into(out, "private chat", CHAT, (4, 10)).await;
    burst_into(out, "group chat", GROUP_CHAT, (4, 10)).await;
    burst_into(out, "group chat", GROUP_CHAT, (4, 25)).await;
}

async fn burst_into(out: &mut Vec<Figure>, chat_name: &str, chat: i64, grouping: (usize, usize)) {
    let (ot, tg) = fakes().await;
    tg.add_chat(chat);
    let approvals = new_approvals(&ot, 0, BURST_N);
    // The daemon's default: 1 s between messages (and, in a group, 20 in any minute).
    let daemon_pace = 1_000;
    let d = Daemon::start(
        &ot,
        &tg,
        DaemonOptions {
            poll_interval_secs: 15,
            telegram_interval_ms: daemon_pace,
            group_commit: true,
            json_log: false,
            hook_max_connections: 256,
            chat_id: chat,
            grouping: Some(grouping),
        },
    )
    .await;
    // Telegram's limits: one message a second per chat, 20 a minute in a group.
    tg.set_min_interval(Duration::from_millis(1_000));
    tg.set_group_limit(20, Duration::from_secs(60));
    let bodies: Vec<_> = approvals.iter().map(|a| a.2.clone()).collect();
    let t = Instant::now();
    submit_all(&d.hook, bodies, BURST_N).await;
    let wanted: Vec<String> = approvals
        .iter()
        .map(|(id, _, _)| format!("{APP_URL}/approvals/{id}"))
        .collect();
    let shown = |tg: &FakeTelegram| -> Vec<String> {
        tg.messages(chat).iter().flat_map(button_links).collect()
    };
    wait_for(
        "every approval's link in the chat",
        Duration::from_secs(600),
        Duration::from_millis(10),
        || {
            let shown = shown(&tg);
            wanted.iter().all(|w| shown.contains(w))
        },
    )
    .await;
    let took = t.elapsed();
    // Anything more (a duplicate) would have a chance to show up now.
    tokio::time::sleep(Duration::from_millis(4 * daemon_pace)).await;
    let shown = shown(&tg);
    let once = wanted
        .iter()
        .filter(|w| shown.iter().filter(|s| s == w).count() == 1)
        .count();
    let messages = tg.messages(chat).len();
    let what = format!(
        "burst of {BURST_N} into a {chat_name}, max_batch {}",
        grouping.1
    );
    out.push(
        fig(
            &format!("{what}: every link in front of the owner"),
            took.as_secs_f64(),
            "s",
            1,
            Target::Below(30.0),
        )
        .note("real time, at Telegram's pace"),
    );
    out.push(
        fig(
            &format!("{what}: approvals shown exactly once"),
            once as f64,
            "",
            0,
            Target::Exactly(BURST_N as f64),
        )
        .note(format!("{messages} messages sent")),
    );
    out.push(fig(
        &format!("{what}: Telegram 429 answers"),
        tg.rate_limited_count() as f64,
        "",
        0,
        Target::Exactly(0.0),
    ));
    d.stop().await;
}

/// The URLs of a message's link buttons.
fn button_links(m: &countersign_fakes::telegram::FakeMessage) -> Vec<String> {
    let Some(keyboard) = &m.reply_markup else {
        return Vec::new();
    };
    keyboard["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| row.as_array())
        .flatten()
        .filter_map(|b| b["url"].as_str().map(str::to_owned))
        .collect()
}

/// SPEC §3.7 / issue #15: 10,000 agents waiting at once on `GET /v1/approvals/{id}?wait=300`.
/// First one waiter per approval, all resolved together; then all 10,000 on one approval. Each
/// time: the resident memory the held polls add, and the time from a status being recorded to
/// its waiters' answers. "Recorded" is the daemon's `status changed` log line (JSON, microsecond
/// timestamps), which the tracker writes just before the commit: the figure includes that
/// commit, the wake-up, the waiter's read and the HTTP answer.
async fn longpoll(out: &mut Vec<Figure>) {
    raise_open_files_limit(WAITERS_N as libc::rlim_t + 2_000);
    let (ot, tg) = fakes().await;
    // WAITERS_N approvals for one waiter each, and one more for everyone at once.
    let approvals = new_approvals(&ot, 0, WAITERS_N + 1);
    let d = Daemon::start(
        &ot,
        &tg,
        DaemonOptions {
            poll_interval_secs: 1,
            telegram_interval_ms: 0,
            group_commit: true,
            json_log: true,
            hook_max_connections: WAITERS_N + 1_000,
            chat_id: CHAT,
            grouping: None,
        },
    )
    .await;
    submit_all(
        &d.hook,
        approvals.iter().map(|a| a.2.clone()).collect(),
        AGENTS,
    )
    .await;
    wait_posted(&tg, WAITERS_N + 1).await;

    let each: Vec<String> = approvals[..WAITERS_N].iter().map(|a| a.0.clone()).collect();
    hold_and_resolve(&d, &ot, &each, "one per approval", out).await;
    let one = vec![approvals[WAITERS_N].0.clone(); WAITERS_N];
    hold_and_resolve(&d, &ot, &one, "all on one approval", out).await;
    d.stop().await;
}

/// Holds one long poll per entry of `ids` (each on its own connection), measures the memory
/// they add, then declines every approval in `ids` at once and times each waiter's answer from
/// its approval's status being recorded.
/// Long polls opened at once, before waiting for the daemon to hold them all.
const LONG_POLL_WAVE: usize = 1_000;
/// Long polls whose connect was dropped and tried again (printed with the memory figure).
static RETRIED_CONNECTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn hold_and_resolve(
    d: &Daemon,
    ot: &FakeOpenTrain,
    ids: &[String],
    label: &str,
    out: &mut Vec<Figure>,
) {
    let n = ids.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, _) = d.memory_kib();
    // A client of its own, dropped at the end: the daemon's connections close with it.
    let client = reqwest::Client::new();
    let metrics = format!("{}/metrics", d.hook);
    let started = Instant::now();
    let mut polls = Vec::with_capacity(n);
    // In waves: 10,000 connects at once overflow the daemon's listen backlog (a connection then
    // times out, seen once in three rounds), which is the benchmark's doing, not a long poll's.
    for wave in ids.chunks(LONG_POLL_WAVE) {
        for id in wave {
            let request = client
                .get(format!("{}/v1/approvals/{id}?wait=300", d.hook))
                .bearer_auth(HOOK_TOKEN);
            polls.push(tokio::spawn(async move {
                // A connection the kernel dropped before any answer (the listen backlog
                // overflowed while the daemon was accepting: seen once in a few rounds) is tried
                // again, as the agents' client does; an answer, good or bad, is never retried.
                let mut tries = 0;
                let resp = loop {
                    match request.try_clone().expect("a GET clones").send().await {
                        Ok(resp) => break resp,
                        Err(_) if tries < 3 => {
                            tries += 1;
                            RETRIED_CONNECTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => panic!("a long poll: {e:?}"),
                    }
                };
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                let at = chrono::Utc::now();
                (status, body, at)
            }));
        }
        let line = format!("countersign_hook_long_polls {}\n", polls.len());
        loop {
            let text = reqwest::get(&metrics)
                .await
                .expect("GET /metrics")
                .text()
                .await
                .unwrap_or_default();
            if text.contains(&line) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the daemon never held {} long polls",
                polls.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (held, hwm) = d.memory_kib();
    let added = held.saturating_sub(before);
    out.push(
        fig(
            &format!("long polls: resident memory added by {n} held, {label}"),
            mb(added),
            "MB",
            1,
            Target::Info,
        )
        .note(format!(
            "{:.1} KB per waiter; {:.1} MB before, {:.1} MB held, peak {:.1} MB; all held {:.1} s after the first; {} dropped connects tried again",
            added as f64 * 1024.0 / 1e3 / n as f64,
            mb(before),
            mb(held),
            mb(hwm),
            opened.as_secs_f64(),
            RETRIED_CONNECTS.swap(0, std::sync::atomic::Ordering::Relaxed)
        )),
    );

    let mut distinct = ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    for id in &distinct {
        ot.resolve(id, "declined", None);
    }
    let mut answers = Vec::with_capacity(n);
    for poll in polls {
        let (status, body, at) = poll.await.expect("long poll task");
        assert_eq!(status, 200, "a long poll answered {status}: {body}");
        assert_eq!(
            body["status"], "declined",
            "answered before the outcome: {body}"
        );
        let id = body["id"].as_str().expect("an id").to_string();
        answers.push((id, at));
    }
    drop(client);
    let recorded = recorded_at(d, "declined");
    let mut latencies: Vec<u64> = answers
        .iter()
        .map(|(id, at)| {
            let t = recorded
                .get(id)
                .unwrap_or_else(|| panic!("no `status changed` line for {id}"));
            (*at - *t).num_microseconds().unwrap_or(0).max(0) as u64
        })
        .collect();
    latencies.sort_unstable();
    let first = distinct
        .iter()
        .filter_map(|id| recorded.get(id))
        .min()
        .copied()
        .expect("a recorded status");
    let last = answers.iter().map(|(_, at)| *at).max().expect("an answer");
    let p = |q| percentile(&latencies, q) as f64 / 1000.0;
    out.push(
        fig(
            &format!("long polls: status recorded -> waiter answered, p99 of {n}, {label}"),
            p(99.0),
            "ms",
            1,
            Target::Info,
        )
        .note(format!(
            "p50 {:.1} ms, max {:.1} ms; first status recorded -> last waiter answered {:.0} ms for {} approval(s)",
            p(50.0),
            p(100.0),
            (last - first).num_microseconds().unwrap_or(0) as f64 / 1000.0,
            distinct.len()
        )),
    );
}

/// When the daemon recorded each approval's change to `status`: the timestamps of its
/// `status changed` log lines.
fn recorded_at(
    d: &Daemon,
    status: &str,
) -> std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> {
    let log = std::fs::read_to_string(d.dir.path().join("daemon.log")).expect("the daemon log");
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "status changed" && v["fields"]["to"] == status)
        .filter_map(|v| {
            let id = v["fields"]["approval_id"].as_str()?.to_string();
            let at = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?;
            Some((id, at.with_timezone(&chrono::Utc)))
        })
        .collect()
}

/// Each held long poll is a socket in this process and one in the daemon (which inherits the
/// limit): raise the soft limit on open files to the hard one, which must allow `needed`.
fn raise_open_files_limit(needed: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit),
            0,
            "getrlimit"
        );
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit");
    }
    assert!(
        limit.rlim_cur >= needed,
        "the long-poll scenario needs {needed} open files; the hard limit is {} (raise it with ulimit -Hn)",
        limit.rlim_cur
    );
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ------------------------------------------------------------------------------------------

/// One round of every scenario asked for; each figure is printed as soon as it is known.
async fn round(only: &[String]) -> Vec<Figure> {
    let wanted = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let mut out = Vec::new();
    let mut printed = 0;
    let mut flush = |out: &Vec<Figure>| {
        for f in &out[printed..] {
            f.print();
        }
        printed = out.len();
    };
    let mut lives = Vec::new();
    if wanted("intake") {
        intake(true, &mut out).await;
        flush(&out);
        intake(false, &mut out).await;
        flush(&out);
    }
    if wanted("tracking") {
        tracking(&mut out, &mut lives).await;
        flush(&out);
    }
    if wanted("doorbell") {
        doorbells(&mut out, &mut lives).await;
        flush(&out);
    }
    if !lives.is_empty() {
        let max = lives.iter().copied().max().unwrap_or(0);
        let mean = lives.iter().sum::<usize>() as f64 / lives.len() as f64;
        out.push(
            fig(
                "OpenTrain reads over one approval's life (max)",
                max as f64,
                "",
                0,
                Target::AtMost(3.0),
            )
            .note(format!(
                "mean {mean:.2} over {} approvals resolved",
                lives.len()
            )),
        );
        flush(&out);
    }
    if wanted("burst") {
        burst(&mut out).await;
        flush(&out);
    }
    if wanted("longpoll") {
        longpoll(&mut out).await;
        flush(&out);
    }
    out
}

fn summary(rounds: &[Vec<Figure>]) {
    println!();
    println!(
        "== summary over {} round(s): figure | median (min-max) | target | met (median; rounds met)",
        rounds.len()
    );
    for (i, first) in rounds[0].iter().enumerate() {
        let mut values: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r.get(i))
            .map(|f| f.value)
            .collect();
        values.sort_by(f64::total_cmp);
        let median = if values.len() % 2 == 1 {
            values[values.len() / 2]
        } else {
            (values[values.len() / 2 - 1] + values[values.len() / 2]) / 2.0
        };
        let met_rounds = values
            .iter()
            .filter(|v| first.target.met(**v) == Some(true))
            .count();
        let met = match first.target.met(median) {
            Some(true) => format!("yes ({met_rounds}/{})", values.len()),
            Some(false) => format!("NO ({met_rounds}/{})", values.len()),
            None => "-".into(),
        };
        println!(
            "{} | {} ({}-{}) | {} | {}",
            first.name,
            with_unit(num(median, first.prec), first.unit),
            num(values[0], first.prec),
            num(values[values.len() - 1], first.prec),
            first.target_text,
            met
        );
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    format!(
        "{} x {cpu}, {mem} memory",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every figure.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let mut rounds = 3usize;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds N")
            }
            "--only" => only.extend(
                args.next()
                    .expect("--only intake,tracking,doorbell,burst,longpoll")
                    .split(',')
                    .map(String::from),
            ),
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            other => panic!(
                "unknown argument {other:?}; use --rounds N, --only intake,tracking,doorbell,burst,longpoll"
            ),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!("countersign benchmark: {}", machine());
    println!("daemon: {}", daemon_binary().display());
    println!("figure | value | target | met");
    let mut all = Vec::new();
    for r in 1..=rounds {
        println!("== round {r}/{rounds} (load average {})", load_average());
        all.push(runtime.block_on(round(&only)));
    }
    if rounds > 1 {
        summary(&all);
    }
}
