//! `countersign demo`: the whole life of three sample approvals, for an owner who wants to see
//! what their chat will show before handing an agent a token.
//!
//! The real daemon ([`App`]) runs against the simulated OpenTrain of the fakes crate, inside this
//! process. Three sample approvals (a milestone fund, a hire, a payout release) go in through the
//! real hook and are verified, posted, tracked and edited by the real code; the simulated
//! OpenTrain then confirms the first, declines the second and lets the third expire.
//!
//! What keeps it a demo:
//! - of the owner's config only what shapes the messages is used (chats, console, log): the
//!   hook, the OpenTrain base and the store are the demo's own (the store in a temporary
//!   directory), the proxy is off, and no token is needed;
//! - every message says DEMO (the sample contract and job titles, the agent's name and its note,
//!   all of which every channel shows in every version of a message);
//! - the only link shown is `<app_url>/approvals/<id>`, as always, and `app_url` is a page this
//!   demo serves on loopback, which says it is the demo;
//! - Telegram's owner commands stay off, so the demo never reads the bot's updates.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use countersign_fakes::FakeOpenTrain;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::App;
use crate::app::StartError;
use crate::config::{ConfigError, ENV_PREFIX, Settings, TelegramSettings, read_sources};
use crate::init::{InitError, new_hook_token, random_hex};

mod page;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long each sample waits before its outcome.
    pub pace: Duration,
    /// Show the demo on the console only, whatever chats the config names.
    pub console_only: bool,
}

/// The agent's note on every sample: the one line that says, in every message, what this is.
const NOTE: &str =
    "DEMO: a sample from `countersign demo`. Nothing here is real and no money moves.";
const AGENT: &str = "countersign-demo";
/// How long the messages may take to appear before the third sample expires.
const EXPIRY_HEADROOM: Duration = Duration::from_secs(5);
/// How long one step may take before the demo gives up (a chat that keeps failing, say).
const STEP_PATIENCE: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Random(#[from] InitError),
    #[error("{0}")]
    Other(String),
}

fn other(what: &str) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |e| DemoError::Other(format!("{what}: {e}"))
}

/// The owner's config, read for its chats: as `run` reads it, except that the hook is put on an
/// ephemeral loopback port that needs no token, so a config without `hook.token` (or without
/// any file at all) is fine. `opentrain.token` is never required at load time.
pub fn owner_settings(path: Option<&FsPath>) -> Result<Settings, ConfigError> {
    let (text, mut env) = read_sources(path)?;
    for (key, value) in [
        ("HOOK__LISTEN", "127.0.0.1:0"),
        ("HOOK__ALLOW_ANONYMOUS_LOOPBACK", "true"),
    ] {
        env.insert(format!("{ENV_PREFIX}__{key}"), value.to_string());
    }
    Settings::from_toml_and_env(text.as_deref(), env)
}

/// The channels the demo will show its messages on, as the store names them.
pub fn channels(owner: &Settings, options: &Options) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !options.console_only {
        if owner.telegram.is_some() {
            out.push("telegram");
        }
        if owner.discord.is_some() {
            out.push("discord");
        }
    }
    if options.console_only || owner.console || out.is_empty() {
        out.push("console");
    }
    out
}

/// The daemon's settings for the demo. Everything that reaches outside the process or onto disk
/// is the demo's own: the hook (fresh token, ephemeral loopback port), OpenTrain (the simulated
/// one, with its own token), the store (in `dir`) and the proxy (off). Everything that shapes
/// what the owner sees is the owner's: the chats (Telegram without owner commands), the console,
/// the log, and any other setting about how messages look. Reminders are off: the samples live
/// for seconds, not days.
fn demo_settings(
    owner: &Settings,
    options: &Options,
    opentrain: &FakeOpenTrain,
    hook_token: &str,
    opentrain_token: &str,
    dir: &FsPath,
) -> Result<Settings, ConfigError> {
    let toml = format!(
        "[hook]\nlisten = \"127.0.0.1:0\"\ntoken = \"{hook_token}\"\n\
         [opentrain]\napi_url = \"{}\"\napp_url = \"{}\"\ntoken = \"{opentrain_token}\"\n\
         poll_interval_secs = 1\nrequest_timeout_secs = 10\n",
        opentrain.api_url(),
        opentrain.app_url(),
    );
    let own = Settings::from_toml_and_env(Some(&toml), HashMap::new())?;
    let mut settings = owner.clone();
    settings.hook = own.hook;
    settings.opentrain = own.opentrain;
    settings.store = own.store;
    settings.store.path = dir.join("demo.db");
    settings.proxy = own.proxy;
    settings.reminders = Vec::new();
    let channels = channels(owner, options);
    settings.telegram = settings
        .telegram
        .take()
        .filter(|_| channels.contains(&"telegram"))
        .map(|t| TelegramSettings {
            // Reading the bot's updates could take them from a daemon that runs beside the demo.
            owner_commands: false,
            ..t
        });
    settings.discord = settings
        .discord
        .take()
        .filter(|_| channels.contains(&"discord"));
    settings.console = channels.contains(&"console");
    Ok(settings)
}

/// A directory under the OS's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, DemoError> {
        let name = format!("countersign-demo-{}", random_hex(8)?);
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).map_err(other("cannot create the demo's temporary store"))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Confirmed,
    Declined,
    Expired,
}

impl Outcome {
    fn status(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Declined => "declined",
            Outcome::Expired => "expired",
        }
    }

    /// What the owner does in OpenTrain to bring it about; nothing, for an expiry.
    fn owner_act(self) -> Option<&'static str> {
        match self {
            Outcome::Confirmed => Some("confirms"),
            Outcome::Declined => Some("declines"),
            Outcome::Expired => None,
        }
    }
}

struct Sample {
    what: &'static str,
    outcome: Outcome,
    id: String,
    /// What the agent hands to the hook: OpenTrain's 202 body, its name and its note.
    body: Value,
}

/// Puts the samples' contracts and proposal in the simulated OpenTrain and creates their
/// approvals. The third expires on its own: three paces after it is created, plus time for the
/// messages to appear, so about one pace after the second is declined.
fn seed(opentrain: &FakeOpenTrain, pace: Duration) -> Vec<Sample> {
    opentrain.add_simple_contract(
        "ctr_demo_sentiment",
        "[DEMO] Spanish sentiment labeling",
        "Maria G. (demo)",
        &[(
            "ms_demo_batch1",
            "First labeling batch",
            450.0,
            "NOT_FUNDED",
        )],
    );
    opentrain.add_simple_proposal(
        "prp_demo_boxes",
        "[DEMO] Bounding boxes for street scenes",
        "Ana R. (demo)",
    );
    opentrain.add_simple_contract(
        "ctr_demo_audio",
        "[DEMO] Audio transcription review",
        "Kenji T. (demo)",
        &[(
            "ms_demo_review",
            "Second review pass",
            120.0,
            "ACTIVE_FUNDED",
        )],
    );
    let due = (chrono::Utc::now() + chrono::Duration::days(14))
        .format("%Y-%m-%d")
        .to_string();
    let sample = |what, outcome, kind, contract, milestone, proposal, context: Value| {
        let accepted = opentrain.create_approval(kind, contract, milestone, proposal);
        let id = accepted["approval"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut body = accepted;
        if outcome == Outcome::Expired {
            let at = chrono::Utc::now()
                + chrono::Duration::from_std(pace * 3 + EXPIRY_HEADROOM).unwrap_or_default();
            opentrain.set_expires_at(&id, at);
            body["approval"] = opentrain.approval(&id).unwrap_or(Value::Null);
        }
        body["agent"] = json!(AGENT);
        body["context"] = context;
        Sample {
            what,
            outcome,
            id,
            body,
        }
    };
    vec![
        sample(
            "fund a milestone ($450.00)",
            Outcome::Confirmed,
            "milestone_fund",
            Some("ctr_demo_sentiment"),
            Some("ms_demo_batch1"),
            None,
            json!({"note": NOTE}),
        ),
        sample(
            "hire a trainer ($300.00 + fees)",
            Outcome::Declined,
            "proposal_hire",
            None,
            None,
            Some("prp_demo_boxes"),
            json!({"note": NOTE, "milestone": {
                "name": "Pilot: 500 images",
                "description": "Boxes around every vehicle and pedestrian",
                "amount": 300,
                "dueDate": due,
            }}),
        ),
        sample(
            "release a milestone payment ($120.00)",
            Outcome::Expired,
            "milestone_approve",
            Some("ctr_demo_audio"),
            Some("ms_demo_review"),
            None,
            json!({"note": NOTE}),
        ),
    ]
}

/// Runs the demo to its end. `Ok(true)` when every message appeared and ended on every channel;
/// `Ok(false)` when a channel refused (what it said is written to `out`).
pub async fn run(
    owner: &Settings,
    options: &Options,
    out: &mut (dyn Write + Send),
) -> Result<bool, DemoError> {
    let dir = TempDir::new()?;
    let pages = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(other("cannot listen for the demo's approval pages"))?;
    let app_url = format!(
        "http://{}",
        pages.local_addr().map_err(other("the pages' address"))?
    );
    let (hook_token, opentrain_token) = (new_hook_token()?, new_hook_token()?);
    let opentrain = FakeOpenTrain::start(&opentrain_token, &app_url).await;
    let samples = seed(&opentrain, options.pace);
    let channels = channels(owner, options);
    let settings = demo_settings(
        owner,
        options,
        &opentrain,
        &hook_token,
        &opentrain_token,
        &dir.0,
    )?;
    let app = App::build(settings).await?;
    let hook = format!("http://{}", app.hook_addr());
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(app.run_until(shutdown.clone()));
    let page_server = tokio::spawn(
        axum::serve(pages, page::page_router(opentrain.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    let story = Story {
        out,
        client: reqwest::Client::new(),
        hook,
        hook_token,
        channels,
        opentrain,
        refused: HashMap::new(),
    };
    let result = story.tell(&samples, options.pace, &app_url).await;

    shutdown.cancel();
    let _ = page_server.await;
    match daemon.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(DemoError::Other(format!("the demo daemon failed: {e}"))),
    }
    drop(dir);
    result
}

struct Story<'a> {
    out: &'a mut (dyn Write + Send),
    client: reqwest::Client,
    hook: String,
    hook_token: String,
    channels: Vec<&'static str>,
    opentrain: FakeOpenTrain,
    /// Channels that refused a message, with what they said.
    refused: HashMap<&'static str, String>,
}

impl Story<'_> {
    fn say(&mut self, text: &str) {
        // The console notifier shares stdout; a whole line at a time keeps them apart.
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    async fn tell(
        mut self,
        samples: &[Sample],
        pace: Duration,
        app_url: &str,
    ) -> Result<bool, DemoError> {
        let on = self.channels.join(" and ");
        self.say(&format!(
            "countersign demo: the real daemon, against a simulated OpenTrain inside this process.\n\
             Nothing here is real: no money moves, no OpenTrain account is asked, your store is not touched.\n\
             Messages go to: {on}. Their links open a page this demo serves at {app_url}.\n"
        ));
        for (i, sample) in samples.iter().enumerate() {
            let answer = self.submit(&sample.body).await?;
            self.say(&format!(
                "[{}/3] An agent asks to {}; it hands OpenTrain's 202 to the hook: {answer}",
                i + 1,
                sample.what
            ));
        }
        self.say("\nWaiting for the three messages to appear…\n");
        for sample in samples {
            self.wait(&sample.id, |status| status != "verifying")
                .await?;
        }
        if !self.refused.is_empty() {
            return Ok(self.verdict());
        }
        self.say(&format!(
            "All three are in front of the owner ({on}). Now each one ends, {} apart:\n",
            humantime::format_duration(pace)
        ));
        for (i, sample) in samples.iter().enumerate() {
            let n = i + 1;
            let status = sample.outcome.status();
            match sample.outcome.owner_act() {
                Some(act) => {
                    tokio::time::sleep(pace).await;
                    self.say(&format!("[{n}/3] The owner {act} it in OpenTrain…"));
                    self.opentrain.resolve(&sample.id, status, None);
                }
                None => self.say(&format!(
                    "[{n}/3] Nobody answers it: countersign reads it again when it expires…"
                )),
            }
            self.wait(&sample.id, |s| s == status).await?;
            self.say(&format!(
                "[{n}/3] {status}: the message now says so ({on}).\n"
            ));
        }
        Ok(self.verdict())
    }

    fn verdict(&mut self) -> bool {
        if self.refused.is_empty() {
            self.say(
                "Done: three messages, three outcomes. To set up the real thing: `countersign init`, \
                 then `countersign pair`, `countersign check` and `countersign run`.",
            );
            return true;
        }
        let mut refused: Vec<_> = self.refused.clone().into_iter().collect();
        refused.sort();
        for (channel, error) in refused {
            self.say(&format!("{channel} refused the demo's message: {error}"));
        }
        self.say(
            "The demo's links point at its own page on 127.0.0.1, and a chat may refuse a link \
             there; the real daemon links to OpenTrain's https address. `countersign check` tests \
             the chat credentials, and `countersign demo --console` shows the demo here instead.",
        );
        false
    }

    async fn submit(&self, body: &Value) -> Result<String, DemoError> {
        let response = self
            .client
            .post(format!("{}/v1/approvals", self.hook))
            .bearer_auth(&self.hook_token)
            .json(body)
            .send()
            .await
            .map_err(|e| DemoError::Other(format!("the demo's hook did not answer: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(status.to_string())
        } else {
            Err(DemoError::Other(format!(
                "the demo's hook refused a sample ({status}): {text}"
            )))
        }
    }

    async fn view(&self, id: &str) -> Result<Tracked, DemoError> {
        let response = self
            .client
            .get(format!("{}/v1/approvals/{id}", self.hook))
            .bearer_auth(&self.hook_token)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| DemoError::Other(format!("the demo's hook did not answer: {e}")))?;
        let text = response
            .text()
            .await
            .map_err(|e| DemoError::Other(format!("the demo's hook did not answer: {e}")))?;
        serde_json::from_str::<Tracked>(&text)
            .map_err(|e| DemoError::Other(format!("the demo's hook answered {text}: {e}")))
    }

    /// Waits until approval `id` has a status that `done` accepts and every channel shows it (or
    /// has refused it). Refusals are remembered; a rejected sample is a bug, said as such.
    async fn wait(&mut self, id: &str, done: impl Fn(&str) -> bool) -> Result<(), DemoError> {
        let deadline = tokio::time::Instant::now() + STEP_PATIENCE;
        let mut retrying: HashMap<&'static str, String> = HashMap::new();
        loop {
            let view = self.view(id).await?;
            if view.status == "rejected" {
                return Err(DemoError::Other(format!(
                    "the simulated OpenTrain did not confirm sample {id}: {}",
                    view.reason.unwrap_or_default()
                )));
            }
            let mut settled = done(&view.status);
            for &channel in &self.channels.clone() {
                let delivery = view.deliveries.iter().find(|d| d.channel == channel);
                match delivery {
                    Some(d) if d.state == "failed" => {
                        let error = d.last_error.clone().unwrap_or_else(|| d.state.clone());
                        self.refused.entry(channel).or_insert(error);
                    }
                    // Shown and current, or deleted by the owner: nothing more will happen.
                    Some(d) if (d.posted && d.up_to_date) || d.state == "gone" => {}
                    Some(d) => {
                        settled = false;
                        if let Some(e) = &d.last_error
                            && retrying.get(channel) != Some(e)
                        {
                            retrying.insert(channel, e.clone());
                            self.say(&format!("  ({channel} is not there yet: {e}; retrying)"));
                        }
                    }
                    None => settled = false,
                }
            }
            if settled {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DemoError::Other(format!(
                    "sample {id} did not reach every channel within {}",
                    humantime::format_duration(STEP_PATIENCE)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The part of the hook's `GET /v1/approvals/{id}` answer the demo reads.
#[derive(serde::Deserialize)]
struct Tracked {
    status: String,
    reason: Option<String>,
    deliveries: Vec<TrackedDelivery>,
}

#[derive(serde::Deserialize)]
struct TrackedDelivery {
    channel: String,
    state: String,
    posted: bool,
    up_to_date: bool,
    last_error: Option<String>,
}
