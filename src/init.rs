//! `countersign init`: writes a commented config with a fresh random `hook.token`.
//!
//! The file is `config.example.toml` itself (compiled in), with its `hook.token` placeholder
//! replaced by a real token, so the keys and comments of the two can never drift apart. The
//! token comes from the OS's random source; the file is created readable by its owner only
//! (mode 0600 on Unix), and an existing file is replaced only when asked to, atomically.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::DEFAULT_CONFIG_FILE;

/// The documented example config, as shipped at the repository root.
pub const EXAMPLE: &str = include_str!("../config.example.toml");

/// The line of [`EXAMPLE`] that becomes the real `hook.token`.
pub const TOKEN_PLACEHOLDER: &str = "# token = \"change-me\"";

/// Bytes of randomness in a hook token (shown as twice as many hex digits).
const TOKEN_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{} already exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the OS's random source failed: {0}")]
    Random(getrandom::Error),
}

/// A fresh hook token: 256 bits from the OS's random source, as 64 hex digits.
pub fn new_hook_token() -> Result<String, InitError> {
    random_hex(TOKEN_BYTES)
}

/// `bytes` bytes from the OS's random source, as hex.
pub fn random_hex(bytes: usize) -> Result<String, InitError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(InitError::Random)?;
    Ok(hex::encode(buf))
}

/// The config text: the example, with `hook.token` set to `token` and a first line that says
/// where the file came from.
pub fn render(token: &str) -> String {
    let header = "# Written by `countersign init`. hook.token below was generated for this file: keep \
                  it private.\n";
    let line = format!("token = \"{token}\"");
    format!("{header}{}", EXAMPLE.replacen(TOKEN_PLACEHOLDER, &line, 1))
}

/// Writes a new config at `path`. Without `force`, an existing file (or anything else at that
/// path) is left alone and reported; with it, the file is replaced in one step (a reader sees
/// the old file or the new one, never half of one). Either way the new file is mode 0600.
pub fn write(path: &Path, force: bool) -> Result<(), InitError> {
    let text = render(&new_hook_token()?);
    let io = |source| InitError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !force {
        // `create_new` refuses an existing path in the same system call that creates the file,
        // so nothing can slip in between a check and the write.
        let file = match private_file(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(InitError::Exists(path.to_path_buf()));
            }
            Err(e) => return Err(io(e)),
        };
        return fill(file, &text).map_err(|e| {
            let _ = std::fs::remove_file(path);
            io(e)
        });
    }
    // Write beside the target, then rename over it: the old file's looser mode is not inherited.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| DEFAULT_CONFIG_FILE.to_string());
    let temp = path.with_file_name(format!(".{name}.{}.tmp", random_hex(6)?));
    let written = private_file(&temp)
        .and_then(|file| fill(file, &text))
        .and_then(|()| std::fs::rename(&temp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io(e)
    })
}

/// Creates `path`, which must not exist yet, readable and writable by its owner only.
fn private_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn fill(mut file: File, text: &str) -> std::io::Result<()> {
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// What to do after `init`, naming the file (the `-c` flag only when it is not the default).
pub fn next_steps(path: &Path) -> String {
    let c = if path == Path::new(DEFAULT_CONFIG_FILE) {
        String::new()
    } else {
        format!(" -c {}", path.display())
    };
    format!(
        "Wrote {file} (readable only by you) with a fresh random hook.token: agents send it as\n\
         `Authorization: Bearer <hook.token>`.\n\
         \n\
         Next steps:\n\
         \x20 1. Put the owner's OpenTrain token in it: under [opentrain], uncomment `token` and paste\n\
         \x20    the ot_pat_ token (scopes payments:read, proposals:read), or set\n\
         \x20    COUNTERSIGN__OPENTRAIN__TOKEN.\n\
         \x20 2. For Telegram, set telegram.bot_token (a bot from @BotFather), then run\n\
         \x20    `countersign pair{c}` to find your chat_id.\n\
         \x20 3. `countersign check{c}` tries every credential; when each line says ok,\n\
         \x20    `countersign run{c}` starts the daemon.\n",
        file = path.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_has_exactly_one_hook_token_placeholder_inside_hook() {
        assert_eq!(EXAMPLE.matches(TOKEN_PLACEHOLDER).count(), 1);
        let hook = EXAMPLE.find("[hook]").expect("a [hook] section");
        let next = EXAMPLE[hook + 1..]
            .find("\n[")
            .map_or(EXAMPLE.len(), |i| hook + 1 + i);
        let at = EXAMPLE.find(TOKEN_PLACEHOLDER).unwrap();
        assert!(hook < at && at < next, "the placeholder must sit in [hook]");
    }

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = new_hook_token().unwrap();
        let b = new_hook_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
