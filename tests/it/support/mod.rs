//! `spawn_app()`: the real `App` on port 0 with a fresh store, against local fake OpenTrain,
//! Telegram and Discord servers (Discord reached over TLS as `discord.com`), plus helpers to drive
//! it and wait for outcomes without fixed sleeps.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use countersign::{App, Settings};
use countersign_fakes::{FakeDiscord, FakeOpenTrain, FakeTelegram};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const HOOK_TOKEN: &str = "hook-token-s3cr3t-0001";
pub const OT_TOKEN: &str = "ot_pat_pub_s3cr3t-opentrain-0002";
pub const TG_TOKEN: &str = "123456:S3CR3T-telegram-token-0003";
pub const CHAT: i64 = 4242;
pub const APP_URL: &str = "https://app.opentrain.test";
pub const DC_TOKEN: &str = "MTIz.S3CR3T-discord-token-0004";
/// The owner on Discord (DMs open) and a guild channel the bot may post in.
pub const DC_OWNER: u64 = 222_000_000_000_000_001;
pub const DC_CHANNEL: u64 = 555_000_000_000_000_001;

/// Where the Discord notifier posts, when enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscordMode {
    Dm,
    Channel,
}

/// How long `eventually` waits before failing a test.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub struct Options {
    pub poll_interval_secs: u64,
    /// The app's pacing; the fake Telegram enforces a slightly smaller interval, so a missing
    /// pace shows up as a 429.
    pub telegram_interval_ms: u64,
    pub telegram: bool,
    pub discord: Option<DiscordMode>,
    pub discord_interval_ms: u64,
    pub proxy: bool,
    /// `grouping.min_batch` and `grouping.max_batch`; `None` turns grouping off, so that every
    /// approval gets a message of its own, as the tests written before grouping expect.
    pub grouping: Option<(usize, usize)>,
    /// The owner's Telegram chat, when not the private chat `CHAT` (a negative id: a group).
    pub telegram_chat: Option<i64>,
    pub extra_toml: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            poll_interval_secs: 1,
            telegram_interval_ms: 60,
            telegram: true,
            discord: None,
            discord_interval_ms: 60,
            proxy: false,
            grouping: None,
            telegram_chat: None,
            extra_toml: String::new(),
        }
    }
}

pub struct TestApp {
    pub hook: String,
    /// The proxy's base URL, when proxy mode is on.
    pub proxy: Option<String>,
    pub opentrain: FakeOpenTrain,
    pub telegram: FakeTelegram,
    pub discord: FakeDiscord,
    pub store_path: PathBuf,
    pub toml: String,
    pub client: reqwest::Client,
    dir: Arc<tempfile::TempDir>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), countersign::app::StartError>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let opentrain = FakeOpenTrain::start(OT_TOKEN, APP_URL).await;
    let telegram = FakeTelegram::start(TG_TOKEN, CHAT).await;
    let chat = options.telegram_chat.unwrap_or(CHAT);
    telegram.add_chat(chat);
    telegram.set_min_interval(Duration::from_millis(
        options.telegram_interval_ms.saturating_sub(20),
    ));
    let discord = FakeDiscord::start(DC_TOKEN, DC_OWNER, DC_CHANNEL).await;
    // Discord's message buckets (5 per 5 s) scaled down 20 times; countersign reads them from
    // the answers' headers, so no test may draw a 429 it did not force.
    discord.set_bucket(5, Duration::from_millis(250));
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let store_path = dir.path().join("countersign.db");
    let telegram_toml = if options.telegram {
        format!(
            "[telegram]\nbot_token = \"{TG_TOKEN}\"\nchat_id = {chat}\napi_url = \"{}\"\nmin_send_interval_ms = {}\n",
            telegram.api_url(),
            options.telegram_interval_ms
        )
    } else {
        String::new()
    };
    let discord_toml = match options.discord {
        None => String::new(),
        Some(mode) => format!(
            "[discord]\nbot_token = \"{DC_TOKEN}\"\n{}\napi_url = \"{}\"\nmin_send_interval_ms = {}\n",
            match mode {
                DiscordMode::Dm => format!("user_id = {DC_OWNER}"),
                DiscordMode::Channel => format!("channel_id = {DC_CHANNEL}"),
            },
            discord.api_url(),
            options.discord_interval_ms
        ),
    };
    let proxy_toml = if options.proxy {
        "[proxy]\nenabled = true\nlisten = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    let (min_batch, max_batch) = options.grouping.unwrap_or((0, 10));
    let grouping_toml = format!("[grouping]\nmin_batch = {min_batch}\nmax_batch = {max_batch}\n");
    let toml = format!(
        "[hook]\nlisten = \"127.0.0.1:0\"\ntoken = \"{HOOK_TOKEN}\"\n\
         [opentrain]\napi_url = \"{}\"\napp_url = \"{APP_URL}\"\ntoken = \"{OT_TOKEN}\"\npoll_interval_secs = {}\nrequest_timeout_secs = 5\nnot_found_secs = 3\n\
         [store]\npath = \"{}\"\n\
         [console]\nenabled = false\n\
         {telegram_toml}{discord_toml}{proxy_toml}{grouping_toml}{}",
        opentrain.api_url(),
        options.poll_interval_secs,
        store_path.display(),
        options.extra_toml,
    );
    start(opentrain, telegram, discord, dir, store_path, toml).await
}

async fn start(
    opentrain: FakeOpenTrain,
    telegram: FakeTelegram,
    discord: FakeDiscord,
    dir: Arc<tempfile::TempDir>,
    store_path: PathBuf,
    toml: String,
) -> TestApp {
    let mut settings = Settings::from_toml_and_env(Some(&toml), HashMap::new()).expect("settings");
    // In process, Discord is reached as in production: at discord.com, over TLS, which the
    // client resolves to the fake. (`toml` names the fake's plain listener in `api_url` for the
    // child processes that tests start, which cannot be handed a client.)
    if let Some(dc) = settings.discord.as_mut() {
        dc.api_url = None;
    }
    let app = App::build(settings)
        .await
        .expect("app builds")
        .with_discord_client(discord_client(&discord));
    let hook = format!("http://{}", app.hook_addr());
    let proxy = app.proxy_addr().map(|a| format!("http://{a}"));
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until(shutdown.clone()));
    TestApp {
        hook,
        proxy,
        opentrain,
        telegram,
        discord,
        store_path,
        toml,
        client: reqwest::Client::new(),
        dir,
        shutdown,
        handle: Some(handle),
    }
}

impl TestApp {
    /// Stops the app (as on SIGTERM) and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.expect("app task").expect("app ran cleanly");
        }
    }

    /// Stops the app and starts a new one on the same store, config and fakes.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        start(
            self.opentrain.clone(),
            self.telegram.clone(),
            self.discord.clone(),
            self.dir.clone(),
            self.store_path.clone(),
            self.toml.clone(),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.hook))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("hook reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `POST /v1/approvals` with the hook token.
    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        self.post_json(
            "/v1/approvals",
            Some(HOOK_TOKEN),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.hook))
            .bearer_auth(HOOK_TOKEN)
            .send()
            .await
            .expect("hook reachable");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The tracked approval as `GET /v1/approvals/{id}` shows it.
    pub async fn approval(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/approvals/{id}")).await;
        assert_eq!(status, 200, "GET /v1/approvals/{id}: {body}");
        body
    }

    /// A funded-milestone scenario: a contract with one unfunded $450 milestone, and the 202 body
    /// OpenTrain gives the agent for funding it.
    pub fn fund_request(&self, contract: &str, milestone: &str) -> Value {
        self.opentrain.add_simple_contract(
            contract,
            "Spanish Sentiment Labeling Contract",
            "Maria G.",
            &[(milestone, "First labeling batch", 450.0, "NOT_FUNDED")],
        );
        self.opentrain
            .create_approval("milestone_fund", Some(contract), Some(milestone), None)
    }
}

impl TestApp {
    /// Calls the fake OpenTrain as an agent would (with the owner's token).
    pub async fn opentrain_post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.opentrain.api_url()))
            .bearer_auth(OT_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("fake OpenTrain reachable");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn approval_id(body: &Value) -> String {
    body["approval"]["id"]
        .as_str()
        .expect("approval.id")
        .to_string()
}

/// Rings the approval's doorbell as an agent forwarding an event would (the hook, not the
/// ledger, so a refused token upstream does not silence it); returns the hook's answer. The
/// event says "confirmed" whatever the status: only a read of OpenTrain may say.
pub async fn ring(app: &TestApp, id: &str) -> serde_json::Value {
    let event = json!({"id": "99", "type": "approval.confirmed", "apiVersion": "v1",
        "createdAt": "2026-06-12T10:05:00.000Z", "resourceId": id, "jobId": null,
        "data": {"approvalId": id, "status": "confirmed"}});
    let (status, answer) = app
        .post_json("/v1/events", Some(HOOK_TOKEN), json_body(event))
        .await;
    assert_eq!(status, 202, "{answer}");
    answer
}

/// Waits until `check` returns `Some`, polling; fails the test after `PATIENCE`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The owner's chat, once it holds `n` messages.
pub async fn messages(app: &TestApp, n: usize) -> Vec<countersign_fakes::telegram::FakeMessage> {
    eventually(&format!("{n} message(s) in the owner's chat"), || async {
        let m = app.telegram.messages(CHAT);
        (m.len() >= n).then_some(m)
    })
    .await
}

/// Waits until the store has no work due: no doorbell unanswered, no read past its time, nothing
/// waiting for verification, no delivery due, no claim in flight. After that, nothing happens
/// until something rings or a scheduled time comes: assert what did *not* happen here, not after
/// a sleep.
pub async fn no_due_work(app: &TestApp) {
    let db = rusqlite::Connection::open(&app.store_path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    eventually("no work due in the store", || async {
        let now = chrono::Utc::now().timestamp_millis();
        let due: i64 = db
            .query_row(
                "SELECT (SELECT COUNT(*) FROM approvals
                         WHERE recheck > 0 OR lease_until > 0 OR phase = 'verify'
                            OR (phase = 'track' AND next_read_at <= ?1))
                      + (SELECT COUNT(*) FROM deliveries WHERE due = 1 OR lease_until > 0)",
                [now],
                |r| r.get(0),
            )
            .ok()?;
        (due == 0).then_some(())
    })
    .await;
}

pub fn json_body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

pub fn bare(v: &Value) -> Value {
    v["approval"].clone()
}

pub fn with_agent(body: &Value, agent: &str, context: Value) -> Value {
    let mut b = body.clone();
    b["agent"] = json!(agent);
    b["context"] = context;
    b
}

/// Every log line written on this thread while it lives. With the default current-thread test
/// runtime every task of the app runs on the test's thread, so it sees the app's logs.
pub struct CapturedLogs {
    buffer: Captured,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.0.lock().unwrap()).into_owned()
    }
}

pub fn capture_logs() -> CapturedLogs {
    let buffer = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    CapturedLogs {
        buffer,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// countersign's Discord client, as production builds it, except that `discord.com` is the fake
/// and the fake's CA is trusted.
pub fn discord_client(fake: &FakeDiscord) -> reqwest::Client {
    discord_client_with(fake, countersign::notify::discord::client_builder())
}

/// The same, from a given builder (a test may shorten its timeouts).
pub fn discord_client_with(fake: &FakeDiscord, builder: reqwest::ClientBuilder) -> reqwest::Client {
    let ca = reqwest::Certificate::from_der(&fake.ca_certificate_der()).expect("the fake's CA");
    builder
        .resolve(countersign_fakes::discord::DISCORD_HOST, fake.tls_addr())
        .add_root_certificate(ca)
        .build()
        .expect("Discord client")
}

/// `http://127.0.0.1:<port>` where nothing listens: every request to it fails to connect.
pub fn closed_address() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", closed.local_addr().unwrap())
}

/// Fails the test if `text` contains any secret the tests configure (every token and webhook
/// secret here carries "S3CR3T"/"s3cr3t", so a partial leak is caught too).
pub fn assert_no_secret(what: &str, text: &str) {
    for secret in [OT_TOKEN, TG_TOKEN, HOOK_TOKEN, DC_TOKEN, "S3CR3T", "s3cr3t"] {
        assert!(
            !text.contains(secret),
            "{what} reveals a secret ({secret}):\n{text}"
        );
    }
}
