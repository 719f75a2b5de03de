//! Configuration: layering, secrets from files, and start-up errors that name the key.

use std::collections::HashMap;

use countersign::config::{DiscordTarget, ExposeSecret, ListenerLimits, Synchronous};
use countersign::{App, Settings};

fn load(toml: &str) -> Result<Settings, countersign::config::ConfigError> {
    Settings::from_toml_and_env(Some(toml), HashMap::new())
}

const MINIMAL: &str = "[hook]\ntoken = \"t\"\n[opentrain]\ntoken = \"ot_pat_x\"\n";

#[test]
fn defaults_follow_the_spec() {
    let s = load(MINIMAL).unwrap();
    assert_eq!(s.hook.listen.to_string(), "127.0.0.1:8750");
    assert_eq!(s.hook.max_body_bytes, 65536);
    assert_eq!(
        s.opentrain.api_url.as_str(),
        "https://app.opentrain.ai/api/public/v1"
    );
    assert_eq!(s.opentrain.app_url, "https://app.opentrain.ai");
    assert_eq!(s.opentrain.poll_interval.as_secs(), 15);
    assert_eq!(s.store.path.to_str(), Some("countersign.db"));
    assert_eq!(s.store.synchronous, Synchronous::Full);
    assert!(s.telegram.is_none() && s.discord.is_none());
    assert!(s.console, "the console is on when no chat is configured");
    assert_eq!(
        s.reminders,
        vec![
            std::time::Duration::from_secs(86400),
            std::time::Duration::from_secs(3600)
        ]
    );
    assert!(!s.proxy.enabled);
    assert_eq!(s.proxy.listen.to_string(), "127.0.0.1:8751");
    let limits = |secs, max| ListenerLimits {
        read_timeout: std::time::Duration::from_secs(secs),
        max_connections: max,
    };
    assert_eq!(s.hook.limits, limits(10, 256));
    assert_eq!(s.proxy.limits, limits(30, 256));
}

#[test]
fn the_example_config_is_valid_and_documents_every_key() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
        .unwrap();
    // With every commented key enabled except the mutually exclusive/secret-file ones.
    let enabled: String = text
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .filter(|r| {
                    r.split_once(" = ")
                        .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                })
                .unwrap_or(l)
        })
        .filter(|l| !l.contains("_file =") && !l.starts_with("channel_id"))
        .map(|l| format!("{l}\n"))
        .collect();
    let s = load(&enabled).unwrap_or_else(|e| panic!("config.example.toml: {e}\n{enabled}"));
    assert_eq!(
        s.discord.unwrap().target,
        DiscordTarget::User(123456789012345678)
    );
    for key in [
        "listen",
        "token",
        "allow_anonymous_loopback",
        "max_body_bytes",
        "api_url",
        "app_url",
        "poll_interval_secs",
        "webhook_secret",
        "path",
        "synchronous",
        "bot_token",
        "chat_id",
        "user_id",
        "channel_id",
        "enabled",
        "before_expiry",
        "format",
        "level",
        "read_timeout_secs",
        "max_connections",
        "allow_remote",
    ] {
        assert!(
            text.contains(&format!("# {key} = ")),
            "config.example.toml lacks {key}"
        );
    }
}

#[test]
fn environment_overrides_the_file() {
    let env: HashMap<String, String> = [
        ("COUNTERSIGN__TELEGRAM__BOT_TOKEN", "123:abc"),
        ("COUNTERSIGN__TELEGRAM__CHAT_ID", "-1001"),
        ("COUNTERSIGN__OPENTRAIN__POLL_INTERVAL_SECS", "30"),
        ("COUNTERSIGN__REMINDERS__BEFORE_EXPIRY", "2h, 10m"),
        ("UNRELATED", "ignored"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let s = Settings::from_toml_and_env(Some(MINIMAL), env).unwrap();
    let tg = s.telegram.unwrap();
    assert_eq!(tg.chat_id, -1001);
    assert_eq!(tg.bot_token.expose_secret(), "123:abc");
    assert_eq!(
        tg.min_send_interval.as_millis(),
        1000,
        "a group is spaced like any chat; its 20 a minute are the pacer's window"
    );
    assert_eq!(s.opentrain.poll_interval.as_secs(), 30);
    assert_eq!(s.reminders.len(), 2);
    assert!(!s.console);
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ot");
    std::fs::write(&path, "ot_pat_from_file\n").unwrap();
    let s = load(&format!(
        "[hook]\ntoken = \"t\"\n[opentrain]\ntoken_file = \"{}\"\n",
        path.display()
    ))
    .unwrap();
    assert_eq!(
        s.opentrain.token.unwrap().expose_secret(),
        "ot_pat_from_file"
    );
}

#[test]
fn invalid_config_names_the_key() {
    let cases = [
        (
            "[hook]\nlisten = \"nowhere\"\ntoken = \"t\"\n",
            "hook.listen",
        ),
        ("[hook]\ntoken = \"t\"\ntokn = \"typo\"\n", "tokn"),
        ("[hook]\ntoken = \"t\"\n[telegrm]\nchat_id = 1\n", "telegrm"),
        ("[opentrain]\ntoken = \"x\"\n", "hook.token"),
        ("[hook]\ntoken = \"t\"\ntoken_file = \"/x\"\n", "hook.token"),
        (
            "[hook]\ntoken = \"t\"\n[telegram]\nbot_token = \"1:a\"\n",
            "telegram.chat_id",
        ),
        (
            "[hook]\ntoken = \"t\"\n[telegram]\nchat_id = 5\n",
            "telegram.bot_token",
        ),
        (
            "[hook]\ntoken = \"t\"\n[telegram]\nchat_id = \"five\"\nbot_token = \"1:a\"\n",
            "telegram.chat_id",
        ),
        (
            "[hook]\ntoken = \"t\"\n[store]\nsynchronous = \"off\"\n",
            "store.synchronous",
        ),
        (
            "[hook]\ntoken = \"t\"\n[opentrain]\napi_url = \"ftp://x\"\n",
            "opentrain.api_url",
        ),
        (
            "[hook]\ntoken = \"t\"\n[opentrain]\npoll_interval_secs = 0\n",
            "opentrain.poll_interval_secs",
        ),
        (
            "[hook]\ntoken = \"t\"\n[discord]\nbot_token = \"d\"\n",
            "discord.user_id",
        ),
        (
            "[hook]\ntoken = \"t\"\n[discord]\nbot_token = \"d\"\nuser_id = 1\nchannel_id = 2\n",
            "discord.user_id",
        ),
        (
            "[hook]\ntoken = \"t\"\n[reminders]\nbefore_expiry = [\"soon\"]\n",
            "reminders.before_expiry[0]",
        ),
        (
            "[hook]\ntoken = \"t\"\n[log]\nformat = \"xml\"\n",
            "log.format",
        ),
        (
            "[hook]\nlisten = \"0.0.0.0:8750\"\nallow_anonymous_loopback = true\n",
            "hook.token",
        ),
        (
            "[hook]\ntoken = \"t\"\nread_timeout_secs = 0\n",
            "hook.read_timeout_secs",
        ),
        (
            "[hook]\ntoken = \"t\"\nmax_connections = 0\n",
            "hook.max_connections",
        ),
        (
            "[hook]\ntoken = \"t\"\n[proxy]\nread_timeout_secs = 301\n",
            "proxy.read_timeout_secs",
        ),
    ];
    for (toml, key) in cases {
        let err = load(toml).expect_err(toml);
        assert!(
            err.to_string().contains(key),
            "{toml:?}: {err} does not name {key}"
        );
    }
    // Anonymous agents are allowed only on loopback, and only when asked for.
    assert!(load("[hook]\nallow_anonymous_loopback = true\n").is_ok());
}

#[test]
fn plain_http_is_refused_except_to_loopback_naming_the_key() {
    let with = |section: &str, key: &str, url: &str| {
        let extra = match section {
            "telegram" => "chat_id = 1\nbot_token = \"1:a\"\n",
            "discord" => "user_id = 1\nbot_token = \"d\"\n",
            _ => "",
        };
        load(&format!(
            "[hook]\ntoken = \"t\"\n[{section}]\n{extra}{key} = \"{url}\"\n"
        ))
    };
    for (section, key) in [
        ("opentrain", "api_url"),
        ("opentrain", "app_url"),
        ("telegram", "api_url"),
        ("discord", "api_url"),
    ] {
        for url in [
            "http://api.example.com",
            "http://10.0.0.5:8080/x",
            "http://localhost.example.com",
            "http://[2001:db8::1]/",
        ] {
            let err = with(section, key, url).expect_err(url);
            let text = err.to_string();
            assert!(
                text.contains(&format!("{section}.{key}")) && text.contains("https"),
                "{url}: {text}"
            );
        }
        for url in [
            "https://api.example.com",
            "http://127.0.0.1:9000",
            "http://127.0.0.2/base",
            "http://[::1]:9000",
            "http://localhost:9000",
        ] {
            with(section, key, url).unwrap_or_else(|e| panic!("{section}.{key} = {url}: {e}"));
        }
    }
}

#[test]
fn a_proxy_outside_loopback_needs_allow_remote() {
    let err = load("[hook]\ntoken = \"t\"\n[proxy]\nenabled = true\nlisten = \"0.0.0.0:8751\"\n")
        .expect_err("a remote proxy without allow_remote");
    assert!(err.to_string().contains("proxy.listen"), "{err}");
    assert!(err.to_string().contains("proxy.allow_remote"), "{err}");
    let s = load(
        "[hook]\ntoken = \"t\"\n[proxy]\nenabled = true\nlisten = \"0.0.0.0:8751\"\nallow_remote = true\n",
    )
    .unwrap();
    assert_eq!(s.proxy.listen.to_string(), "0.0.0.0:8751");
    assert!(load("[hook]\ntoken = \"t\"\n[proxy]\nlisten = \"[::1]:8751\"\n").is_ok());
}

#[tokio::test]
async fn a_missing_opentrain_token_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = load(&format!(
        "[hook]\ntoken = \"t\"\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n",
        dir.path().join("x.db").display()
    ))
    .unwrap();
    let err = App::build(s).await.err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("opentrain.token"), "{text}");
    assert!(text.contains("COUNTERSIGN__OPENTRAIN__TOKEN"), "{text}");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[hook]\ntoken = \"t\"\nlisten = \"127.0.0.1:0\"\n[opentrain]\ntoken = \"x\"\n[store]\npath = \"{}\"\n",
        dir.path().join("x.db").display()
    );
    let first = App::build(load(&toml).unwrap())
        .await
        .expect("first daemon");
    let err = App::build(load(&toml).unwrap())
        .await
        .err()
        .expect("second refused");
    assert!(
        err.to_string().contains("in use by another countersign"),
        "{err}"
    );
    drop(first);
    App::build(load(&toml).unwrap())
        .await
        .expect("free again once the first is gone");
}
