//! What Discord's markdown turns into a link or a mention, so a test can assert that none of it
//! reaches the owner from text countersign did not write.
//!
//! Discord renders markdown in a message's content and in an embed's title, description and
//! fields. Outside inline code it links every `scheme://…` URL on its own (also inside `<…>` and
//! as the target of a masked link `[text](url)`), and shows `<@id>`, `<@!id>`, `<@&id>`, `<#id>`
//! and `</command:id>` as mentions, and `@everyone` / `@here` as mass mentions. Inside inline code
//! (a run of backticks, anything, the same run again) nothing is parsed. A backslash before any
//! character that is not a letter, a digit or white space makes that character plain text, so
//! it can no longer be part of any of those patterns (`https\://` is not a link).
//!
//! The scan errs on the side of flagging: any letters followed by `://` count as a URL (Discord
//! itself links only some schemes).

/// What in `text` Discord would show as a link or a mention, outside inline code; empty when
/// nothing would be.
pub fn autolinks(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let plain = outside_code(text);
    for (i, (c, raw)) in plain.iter().enumerate() {
        if !raw {
            continue;
        }
        let rest = &plain[i..];
        match c {
            ':' if starts_raw(rest, "://") && scheme_before(&plain[..i]) => {
                found.push(format!("URL at character {i}: {}", excerpt(&plain, i)));
            }
            '<' if mention(&rest[1..]) => {
                found.push(format!("mention at character {i}: {}", excerpt(&plain, i)));
            }
            '@' if starts_raw(rest, "@everyone") || starts_raw(rest, "@here") => {
                found.push(format!(
                    "mass mention at character {i}: {}",
                    excerpt(&plain, i)
                ));
            }
            _ => {}
        }
    }
    found
}

/// The text outside inline code, each character with whether it is raw (true) or escaped by a
/// backslash (false). Code spans are left out; a lone backtick run that closes nothing is text.
fn outside_code(text: &str) -> Vec<(char, bool)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1).is_some_and(|n| escapable(*n)) {
            out.push((chars[i + 1], false));
            i += 2;
            continue;
        }
        if c == '`' {
            let run = run_length(&chars, i);
            if let Some(end) = closing_run(&chars, i + run, run) {
                i = end + run;
                continue;
            }
            // No closing run: the backticks are plain text.
            out.extend(std::iter::repeat_n(('`', true), run));
            i += run;
            continue;
        }
        out.push((c, true));
        i += 1;
    }
    out
}

/// Discord's escape rule: a backslash before anything but a letter, a digit or white space.
fn escapable(c: char) -> bool {
    !(c.is_ascii_alphanumeric() || c.is_whitespace())
}

fn run_length(chars: &[char], start: usize) -> usize {
    chars[start..].iter().take_while(|c| **c == '`').count()
}

/// Where a run of exactly `run` backticks starts after at least one character of code.
fn closing_run(chars: &[char], from: usize, run: usize) -> Option<usize> {
    let mut i = from + 1;
    while i < chars.len() {
        if chars[i] == '`' {
            let length = run_length(chars, i);
            if length == run && chars[i - 1] != '`' {
                return Some(i);
            }
            i += length;
        } else {
            i += 1;
        }
    }
    None
}

/// `pattern` starts here, every character of it raw.
fn starts_raw(rest: &[(char, bool)], pattern: &str) -> bool {
    let mut n = 0;
    for (want, (c, raw)) in pattern.chars().zip(rest) {
        if !raw || want != *c {
            return false;
        }
        n += 1;
    }
    n == pattern.chars().count()
}

/// Raw letters end right before the `://`.
fn scheme_before(before: &[(char, bool)]) -> bool {
    before
        .last()
        .is_some_and(|(c, raw)| *raw && c.is_ascii_alphabetic())
}

/// What follows a raw `<`: `@id>`, `@!id>`, `@&id>`, `#id>`, or `/name:id>` (`name` may hold
/// spaces for subcommands), with every character raw.
fn mention(rest: &[(char, bool)]) -> bool {
    let raw: String = rest
        .iter()
        .take_while(|(_, raw)| *raw)
        .map(|(c, _)| *c)
        .collect();
    let Some(end) = raw.find('>') else {
        return false;
    };
    let inner = &raw[..end];
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(id) = inner
        .strip_prefix("@!")
        .or_else(|| inner.strip_prefix("@&"))
        .or_else(|| inner.strip_prefix('@'))
        .or_else(|| inner.strip_prefix('#'))
    {
        return digits(id);
    }
    if let Some(command) = inner.strip_prefix('/') {
        return command
            .rsplit_once(':')
            .is_some_and(|(name, id)| !name.is_empty() && digits(id));
    }
    false
}

fn excerpt(plain: &[(char, bool)], at: usize) -> String {
    let start = at.saturating_sub(12);
    plain[start..(at + 24).min(plain.len())]
        .iter()
        .map(|(c, _)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::autolinks;

    #[test]
    fn links_and_mentions_outside_code_are_found() {
        for text in [
            "see https://evil.example/pay",
            "xhttps://a.b",
            "<https://a.b>",
            "[pay here](http://a.b)",
            "steam://run/1",
            "hi <@123>",
            "<@!123>",
            "<@&456>",
            "<#789>",
            "</deploy now:123>",
            "@everyone",
            "ping @here!",
            "`code` then https://a.b",
            "``` `` ``` https://a.b",
            "\\`https://a.b`",
        ] {
            assert!(!autolinks(text).is_empty(), "{text:?} not flagged");
        }
    }

    #[test]
    fn escaped_broken_or_coded_text_is_not() {
        for text in [
            "https\\://evil.example",
            "\\<@123>",
            "<\\@123>",
            "@\u{200B}everyone",
            "<@\u{200B}123>",
            "`https://a.b @everyone <@1>`",
            "``a ` https://b.c``",
            "`` `@here` ``",
            "<t:1700000000:R>",
            "<@abc>",
            "mail me at a@b.c",
            "plain text",
            "",
        ] {
            assert_eq!(autolinks(text), Vec::<String>::new(), "{text:?}");
        }
    }
}
