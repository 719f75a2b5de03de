//! The agent's side of the hook: `countersign submit [--wait]` and `countersign wait`
//! (SPEC §3.1, §3.7).
//!
//! Each prints one JSON object on stdout — the hook's answer, the approval's final state, or
//! `{"error", "message"}` when countersign could not be asked — and exits with the code of its
//! [`Outcome`]. A wait re-issues the long poll until the approval is final or the caller's time
//! is up.
//!
//! Invariant: **once the hook has answered, an outage is not an outcome.** A refused or dropped
//! connection or a 5xx (the daemon restarting) is waited out with backoff for as long as the wait
//! lasts, up to [`OUTAGE_PATIENCE`] in a row; only then is it exit 1. A hook that never answered
//! at all (wrong address, daemon not running) is exit 1 at once.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use secrecy::{ExposeSecret, SecretString};

use crate::config::Settings;
use crate::intake::wait::MAX_WAIT_SECS;
use crate::outcome::Outcome;

/// How long a wait rides out a hook that stopped answering before it gives up (exit 1).
pub const OUTAGE_PATIENCE: Duration = Duration::from_secs(300);
/// Backoff between attempts while the hook does not answer.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Beyond the time the daemon was asked to hold a long poll: how long its answer may take
/// before the daemon is taken for gone.
const ANSWER_GRACE: Duration = Duration::from_secs(30);
/// How long a submission may take.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a client reaches a hook listening on `listen` (a wildcard address means this machine).
pub fn hook_base(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// A duration on the command line: `90s`, `15m`, `2h`, `1h30m`, or bare seconds (`90`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 90s, 15m, 2h)"))
}

/// `countersign submit [--wait[=DURATION]] [FILE|-]`: hands a 202 body to the hook. Without
/// `wait`, prints the hook's answer (exit 0 on a 2xx); with it (`Some(None)`: until the approval
/// ends), then waits for the outcome.
pub async fn submit(
    settings: &Settings,
    input: Option<&str>,
    wait: Option<Option<Duration>>,
) -> ExitCode {
    let body = match read_input(input) {
        Ok(body) => body,
        Err(message) => return not_asked("unreadable_input", &message).into(),
    };
    let hook = Hook::new(settings);
    let (status, text) = match hook.post_approval(body).await {
        Ok(answer) => answer,
        Err(e) => return hook.unreachable(&e).into(),
    };
    if !status.is_success() {
        return refused(status, &text).into();
    }
    let Some(limit) = wait else {
        println!("{}", text.trim_end());
        return ExitCode::SUCCESS;
    };
    let id = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["approvalId"].as_str().map(String::from));
    match id {
        Some(id) => hook.wait(&id, limit, true).await.into(),
        None => not_asked(
            "bad_answer",
            &format!("the hook's answer names no approvalId: {}", cut(&text)),
        )
        .into(),
    }
}

/// `countersign wait [--timeout DURATION] ID`.
pub async fn wait(settings: &Settings, id: &str, timeout: Option<Duration>) -> ExitCode {
    Hook::new(settings).wait(id, timeout, false).await.into()
}

/// The running daemon's hook, as the config names it.
struct Hook {
    base: String,
    token: Option<SecretString>,
    http: reqwest::Client,
}

impl Hook {
    fn new(settings: &Settings) -> Hook {
        Hook {
            base: hook_base(settings.hook.listen),
            token: settings.hook.token.clone(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                // The hook is local and the bearer token must not go through a proxy.
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    async fn post_approval(&self, body: Vec<u8>) -> Result<(StatusCode, String), reqwest::Error> {
        let request = self
            .http
            .post(format!("{}/v1/approvals", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(SUBMIT_TIMEOUT)
            .body(body);
        self.send(request).await
    }

    /// `GET /v1/approvals/{id}`, held up to `hold_secs` when given.
    async fn get_approval(
        &self,
        id: &str,
        hold_secs: Option<u64>,
    ) -> Result<(StatusCode, String), reqwest::Error> {
        let mut url = format!("{}/v1/approvals/{id}", self.base);
        if let Some(secs) = hold_secs {
            url.push_str(&format!("?wait={secs}"));
        }
        let request = self
            .http
            .get(url)
            .timeout(Duration::from_secs(hold_secs.unwrap_or(0)) + ANSWER_GRACE);
        self.send(request).await
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), reqwest::Error> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.text().await?))
    }

    fn unreachable(&self, e: &reqwest::Error) -> Outcome {
        not_asked(
            "unreachable",
            &format!(
                "cannot reach the countersign hook at {}: is `countersign run` running? ({e})",
                self.base
            ),
        )
    }

    /// Waits until approval `id` is final or `limit` has passed (`None`: until it is final),
    /// prints its state and returns its outcome. `answered`: the hook has already answered in
    /// this run, so an outage from the start is a restart to ride out.
    async fn wait(&self, id: &str, limit: Option<Duration>, mut answered: bool) -> Outcome {
        let deadline = limit.map(|d| Instant::now() + d);
        let time_is_up = || deadline.is_some_and(|d| Instant::now() >= d);
        // The last state seen, while still open: what a wait that ends in an outage reports.
        let mut last: Option<String> = None;
        let mut outage: Option<Instant> = None;
        let mut backoff = RETRY_FIRST;
        loop {
            let hold = match deadline {
                None => Some(MAX_WAIT_SECS),
                Some(d) => match d.saturating_duration_since(Instant::now()) {
                    left if left.is_zero() => None,
                    left => Some((left.as_secs_f64().ceil() as u64).clamp(1, MAX_WAIT_SECS)),
                },
            };
            let asked = Instant::now();
            let error = match self.get_approval(id, hold).await {
                Ok((status, text)) if status.is_success() => {
                    answered = true;
                    outage = None;
                    let Some(outcome) = outcome_of(&text) else {
                        return not_asked(
                            "bad_answer",
                            &format!("the hook's answer is not an approval: {}", cut(&text)),
                        );
                    };
                    if outcome.is_final() || time_is_up() {
                        println!("{}", text.trim_end());
                        if let Some(note) = outcome.note() {
                            eprintln!("countersign: {note}");
                        }
                        return outcome;
                    }
                    last = Some(text);
                    // Open before its time: the daemon is shutting down, or does not hold long
                    // polls. Ask again, but not in a tight loop.
                    if asked.elapsed() < Duration::from_secs(hold.unwrap_or(0)) {
                        pause(&mut backoff, deadline).await;
                    } else {
                        backoff = RETRY_FIRST;
                    }
                    continue;
                }
                Ok((status, _)) if status.is_server_error() && answered => {
                    format!("the hook answered {status}")
                }
                Ok((status, text)) => return refused(status, &text),
                Err(e) if answered => e.to_string(),
                Err(e) => return self.unreachable(&e),
            };
            let since = *outage.get_or_insert_with(|| {
                eprintln!(
                    "countersign: the hook at {} is not answering ({error}); still waiting",
                    self.base
                );
                Instant::now()
            });
            if since.elapsed() >= OUTAGE_PATIENCE {
                return not_asked(
                    "unreachable",
                    &format!(
                        "the hook at {} has not answered for {} s ({error})",
                        self.base,
                        since.elapsed().as_secs()
                    ),
                );
            }
            if time_is_up() {
                return match last {
                    Some(text) => {
                        eprintln!(
                            "countersign: the wait ended while the hook was not answering; this is the last state it gave"
                        );
                        println!("{}", text.trim_end());
                        Outcome::StillOpen
                    }
                    None => not_asked("unreachable", &error),
                };
            }
            pause(&mut backoff, deadline).await;
        }
    }
}

/// Sleeps for `backoff` (never past `deadline`) and doubles it, up to [`RETRY_MAX`].
async fn pause(backoff: &mut Duration, deadline: Option<Instant>) {
    let pause = match deadline {
        Some(d) => (*backoff).min(d.saturating_duration_since(Instant::now())),
        None => *backoff,
    };
    tokio::time::sleep(pause).await;
    *backoff = (*backoff * 2).min(RETRY_MAX);
}

/// The outcome an approval view (the hook's `GET` body) shows.
fn outcome_of(text: &str) -> Option<Outcome> {
    let view: Value = serde_json::from_str(text).ok()?;
    let status = view["status"].as_str()?;
    Some(Outcome::of(status, !view["resolved_at"].is_null()))
}

/// Countersign could not be asked: the error as one JSON object on stdout, the sentence on
/// stderr.
fn not_asked(code: &str, message: &str) -> Outcome {
    println!("{}", json!({"error": code, "message": message}));
    eprintln!("countersign: {message}");
    Outcome::NotAsked
}

/// The hook refused the request: its JSON error as it is, or wrapped if it sent something else.
fn refused(status: StatusCode, text: &str) -> Outcome {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.is_object() => {
            println!("{v}");
            eprintln!("countersign: the hook answered {status}");
            Outcome::NotAsked
        }
        _ => not_asked(
            "hook_refused",
            &format!("the hook answered {status}: {}", cut(text)),
        ),
    }
}

fn read_input(input: Option<&str>) -> Result<Vec<u8>, String> {
    match input {
        None | Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            Ok(buf)
        }
        Some(path) => std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}")),
    }
}

/// At most 200 characters of an answer, for a message.
fn cut(text: &str) -> String {
    crate::text::cut(text, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5").is_err());
    }

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        assert_eq!(
            hook_base("0.0.0.0:8750".parse().unwrap()),
            "http://127.0.0.1:8750"
        );
        assert_eq!(hook_base("[::]:8750".parse().unwrap()), "http://[::1]:8750");
        assert_eq!(
            hook_base("10.0.0.2:8750".parse().unwrap()),
            "http://10.0.0.2:8750"
        );
    }
}
