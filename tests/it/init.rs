//! `countersign init`, run as the real binary: a private config that is `config.example.toml`
//! with a fresh `hook.token`, valid once the OpenTrain token is in, never written over unless
//! forced.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use countersign::Settings;
use countersign::init::{EXAMPLE, TOKEN_PLACEHOLDER};

fn init(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("init")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the countersign binary runs")
}

/// The `token = "…"` line that replaced the placeholder.
fn hook_token(text: &str) -> String {
    let hook = text.find("[hook]").expect("a [hook] section");
    let line = text[hook..]
        .lines()
        .find(|l| l.starts_with("token = \""))
        .expect("an uncommented hook.token");
    line.trim_start_matches("token = \"")
        .trim_end_matches('"')
        .to_string()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_a_private_config_that_is_valid_once_the_opentrain_token_is_added() {
    let dir = tempfile::tempdir().unwrap();
    let out = init(&[], dir.path());
    assert!(out.status.success(), "{out:?}");
    let path = dir.path().join("countersign.toml");
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600, "only the owner may read the hook token");

    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in ["[opentrain]", "countersign pair", "countersign check"] {
        assert!(stdout.contains(step), "next steps name {step:?}: {stdout}");
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let token = hook_token(&text);
    assert_eq!(token.len(), 64, "256 bits as hex: {token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(
        !stdout.contains(&token),
        "the token stays in the file, not on the terminal"
    );

    // As written, the config is valid but the daemon would stop for want of the OpenTrain token.
    let settings = Settings::from_toml_and_env(Some(&text), HashMap::new()).expect("valid");
    assert!(settings.hook.token.is_some());
    assert!(settings.opentrain_token().is_err());

    // The owner does what the next steps say: uncomment `token` under [opentrain].
    let opentrain = text.find("[opentrain]").unwrap();
    let filled = format!(
        "{}{}",
        &text[..opentrain],
        text[opentrain..].replacen("# token = \"ot_pat_...\"", "token = \"ot_pat_x1\"", 1)
    );
    assert_ne!(
        filled, text,
        "the [opentrain] token line is where the steps say"
    );
    let settings = Settings::from_toml_and_env(Some(&filled), HashMap::new()).expect("valid");
    assert!(settings.hook.token.is_some());
    assert!(settings.opentrain_token().is_ok());
}

#[test]
fn init_output_is_the_example_config_with_only_the_hook_token_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.toml");
    let out = init(&["-c", path.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("countersign check -c {}", path.display())),
        "a custom path is passed on in the steps: {stdout}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let token = hook_token(&text);
    let (header, rest) = text.split_once('\n').unwrap();
    assert!(header.starts_with("# Written by `countersign init`"));
    assert_eq!(
        rest.replacen(&format!("token = \"{token}\""), TOKEN_PLACEHOLDER, 1),
        EXAMPLE,
        "every key and comment of config.example.toml, nothing else"
    );
}

#[test]
fn init_refuses_to_overwrite_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.toml");
    std::fs::write(&path, "# the owner's own config\n").unwrap();

    let out = init(&[], dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "# the owner's own config\n"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = init(&["--force"], dir.path());
    assert!(out.status.success(), "{out:?}");
    let first = hook_token(&std::fs::read_to_string(&path).unwrap());
    #[cfg(unix)]
    assert_eq!(
        mode(&path),
        0o600,
        "a replaced file does not keep the old mode"
    );

    let out = init(&["--force"], dir.path());
    assert!(out.status.success(), "{out:?}");
    let second = hook_token(&std::fs::read_to_string(&path).unwrap());
    assert_ne!(first, second, "each run draws a new token");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file is left behind");
}
