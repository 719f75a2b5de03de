//! Telegram's automatic entities: in the text of every message, Telegram (TDLib's
//! `find_entities`) finds URLs, bare domains (`evil.example/x`, `www.x.com`), e-mail addresses and
//! `@mentions` on its own and makes them tappable, whatever the sender meant. Only text inside a
//! `code`, `pre` or `text_link` entity is left alone. So a display name that reads like a link
//! *is* a link in the owner's chat unless the sender puts it in code: this module is what lets the
//! tests see that.
//!
//! Modelled on TDLib's `match_mentions`, `match_urls`, `is_email_address` and `fix_url`:
//! - mention: `@` not after a letter, digit or `_`, then 2–32 of `[A-Za-z0-9_]` not followed by one;
//!   TDLib drops names shorter than 4 (except `gif`, `vid`, `pic`);
//! - url: a dotted host (labels of letters, digits, `_`, `-`, `~` or non-ASCII letters) with an
//!   optional `scheme://` before it, `:port` and `/path`, `?query` or `#fragment` after it; an IPv4
//!   address; or `scheme://host` without a dot (`tg://resolve`);
//! - email: `local@host.tld`.
//!
//! Knowingly broader than Telegram, so a test cannot pass on a lucky choice of words: a bare
//! domain counts with any alphabetic top-level label of two or more letters (TDLib wants one from
//! its list of common TLDs, so `evil.example` stays plain there), and any `scheme://` counts (TDLib
//! knows http, https, ftp, tonsite, tg and ton). Hashtags, cashtags, bot commands, bank card numbers
//! and media timestamps are not reproduced.

use serde_json::{Value, json};

/// The url, email and mention entities Telegram adds to `text`, given the entities it already has
/// (from HTML or explicit `entities`): UTF-16 offsets, sorted, none inside code, pre or a link.
pub fn find(text: &str, entities: &[Value]) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    // UTF-16 offset of each char, plus the end.
    let mut utf16 = Vec::with_capacity(chars.len() + 1);
    let mut at = 0i64;
    for c in &chars {
        utf16.push(at);
        at += c.len_utf16() as i64;
    }
    utf16.push(at);

    let mut found: Vec<(usize, usize, &'static str)> = Vec::new();
    found.extend(mentions(&chars).into_iter().map(|(b, e)| (b, e, "mention")));
    found.extend(urls(&chars));
    // Overlapping finds: the earlier (then the longer) one wins, as in TDLib.
    found.sort_by_key(|&(b, e, _)| (b, std::cmp::Reverse(e)));
    let mut out = Vec::new();
    let mut last_end = 0;
    for (b, e, kind) in found {
        if b < last_end {
            continue;
        }
        last_end = e;
        let (offset, end) = (utf16[b], utf16[e]);
        if protected(entities, offset, end) {
            continue;
        }
        out.push(json!({"type": kind, "offset": offset, "length": end - offset}));
    }
    out
}

/// Whether `[offset, end)` touches text that Telegram never scans: code, pre and links.
fn protected(entities: &[Value], offset: i64, end: i64) -> bool {
    entities.iter().any(|e| {
        let kind = e["type"].as_str().unwrap_or_default();
        let start = e["offset"].as_i64().unwrap_or(0);
        let stop = start + e["length"].as_i64().unwrap_or(0);
        matches!(kind, "code" | "pre" | "text_link") && start < end && offset < stop
    })
}

/// Letters and digits of any script, and `_` (TDLib's `is_word_character`).
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn mentions(chars: &[char]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        if c != '@' || (i > 0 && is_word(chars[i - 1])) {
            continue;
        }
        let end = i
            + 1
            + chars[i + 1..]
                .iter()
                .take_while(|c| is_username_char(**c))
                .count();
        let name: String = chars[i + 1..end].iter().collect();
        if !(2..=32).contains(&name.len()) || chars.get(end).is_some_and(|c| is_word(*c)) {
            continue;
        }
        if name.len() < 4 && !["gif", "vid", "pic"].contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        out.push((i, end));
    }
    out
}

/// A character a host name may hold (TDLib's `is_domain_symbol`): ASCII letters, digits, `_`, `-`,
/// `~`, and non-ASCII characters other than separators and most general punctuation.
fn is_host_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '~');
    }
    is_url_unicode(c) && c >= '\u{c0}'
}

fn is_url_unicode(c: char) -> bool {
    if ('\u{2000}'..='\u{206f}').contains(&c) {
        return matches!(c, '\u{200c}' | '\u{200d}' | '\u{2010}'..='\u{2015}');
    }
    !c.is_whitespace() && !c.is_control()
}

/// What may follow a host as path, query or fragment (TDLib's `is_url_path_symbol`).
fn is_path_char(c: char) -> bool {
    !matches!(c, '<' | '>' | '"' | '«' | '»') && is_url_unicode(c)
}

/// What may stand before `@` in `user@host` (TDLib's `is_user_data_symbol`).
fn is_user_char(c: char) -> bool {
    !matches!(
        c,
        '/' | '[' | ']' | '{' | '}' | '(' | ')' | '\'' | '`' | '<' | '>' | '"' | '@' | '«' | '»'
    ) && is_url_unicode(c)
}

fn is_email_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+')
}

/// Whether `host` (without port) is a name Telegram links: dotted labels ending in an alphabetic
/// label of two or more letters (or an `xn--` one), or an IPv4 address.
fn is_linkable_host(host: &[char]) -> bool {
    let labels: Vec<&[char]> = host.split(|c| *c == '.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return false;
    }
    if labels.len() == 4
        && labels
            .iter()
            .all(|l| l.len() <= 3 && l.iter().all(char::is_ascii_digit))
    {
        return true;
    }
    let tld: String = labels[labels.len() - 1].iter().collect();
    if let Some(rest) = tld.strip_prefix("xn--") {
        return !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric());
    }
    tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic)
}

/// URLs and e-mail addresses, as `(begin, end, kind)` char ranges.
fn urls(chars: &[char]) -> Vec<(usize, usize, &'static str)> {
    let mut out = Vec::new();
    let n = chars.len();
    let mut i = 0;
    while i < n {
        // `scheme://` starts a URL whether or not its host has a dot.
        if chars[i] == ':' && chars.get(i + 1) == Some(&'/') && chars.get(i + 2) == Some(&'/') {
            let scheme_begin = i - chars[..i]
                .iter()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-'))
                .count();
            let host_end = i
                + 3
                + chars[i + 3..]
                    .iter()
                    .take_while(|c| is_host_char(**c) || **c == '.' || **c == '@' || **c == ':')
                    .count();
            if scheme_begin < i && chars[scheme_begin].is_ascii_alphabetic() && host_end > i + 3 {
                let end = with_path(chars, host_end);
                out.push((scheme_begin, end, "url"));
                i = end;
                continue;
            }
        }
        if chars[i] != '.' || i + 1 >= n || chars[i + 1] == ' ' {
            i += 1;
            continue;
        }
        // A dot: the host around it.
        let is_host_or_dot = |c: &char| is_host_char(*c) || *c == '.';
        let mut begin = i - chars[..i]
            .iter()
            .rev()
            .take_while(|c| is_host_or_dot(c))
            .count();
        let mut host_end = i + chars[i..].iter().take_while(|c| is_host_or_dot(c)).count();
        // Dots at either end belong to the sentence, not the host.
        while begin < host_end && chars[begin] == '.' {
            begin += 1;
        }
        while host_end > begin && chars[host_end - 1] == '.' {
            host_end -= 1;
        }
        if host_end <= i || begin > i || !is_linkable_host(&chars[begin..host_end]) {
            i += 1;
            continue;
        }
        // Before the host: `user@` (an e-mail address, or credentials in a URL), or anything that
        // is not part of a word or a path.
        let mut url_begin = begin;
        let mut kind = "url";
        if begin > 0 && chars[begin - 1] == '@' {
            let user = chars[..begin - 1]
                .iter()
                .rev()
                .take_while(|c| is_user_char(**c))
                .count();
            if user == 0 {
                i = host_end;
                continue;
            }
            url_begin = begin - 1 - user;
            if chars[url_begin..begin - 1]
                .iter()
                .all(|c| is_email_local_char(*c))
            {
                kind = "email";
            }
        } else if begin > 0 && (is_word(chars[begin - 1]) || matches!(chars[begin - 1], '/' | '#'))
        {
            i = host_end;
            continue;
        }
        let end = if kind == "email" {
            host_end
        } else {
            with_path(chars, with_port(chars, host_end))
        };
        out.push((url_begin, end, kind));
        i = end.max(i + 1);
    }
    out
}

/// `:port` after a host, when it is a number up to 65535.
fn with_port(chars: &[char], end: usize) -> usize {
    if chars.get(end) != Some(&':') {
        return end;
    }
    let digits: String = chars[end + 1..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    match digits.parse::<u32>() {
        Ok(port) if digits.len() <= 5 && port <= 65535 => end + 1 + digits.len(),
        _ => end,
    }
}

/// A `/path`, `?query` or `#fragment` after a host, without the punctuation that usually ends a
/// sentence rather than a URL.
fn with_path(chars: &[char], end: usize) -> usize {
    if !matches!(chars.get(end), Some('/' | '?' | '#')) {
        return end;
    }
    let mut path_end = end
        + 1
        + chars[end + 1..]
            .iter()
            .take_while(|c| is_path_char(**c))
            .count();
    while path_end > end + 1
        && matches!(
            chars[path_end - 1],
            '.' | ':' | ';' | ',' | '(' | '\'' | '?' | '!' | '`'
        )
    {
        path_end -= 1;
    }
    if chars[end] == '/' || path_end > end + 1 {
        path_end
    } else {
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The found entities as `(type, found text)`.
    fn found(text: &str) -> Vec<(String, String)> {
        let units: Vec<u16> = text.encode_utf16().collect();
        find(text, &[])
            .iter()
            .map(|e| {
                let (o, l) = (
                    e["offset"].as_i64().unwrap() as usize,
                    e["length"].as_i64().unwrap() as usize,
                );
                (
                    e["type"].as_str().unwrap().to_string(),
                    String::from_utf16(&units[o..o + l]).unwrap(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn urls_with_a_scheme_bare_domains_and_www_are_links() {
        assert_eq!(
            found("Trainer: https://app-opentrain.support/approve now"),
            pairs(&[("url", "https://app-opentrain.support/approve")])
        );
        assert_eq!(
            found("see evil.example/x."),
            pairs(&[("url", "evil.example/x")])
        );
        assert_eq!(found("(www.x.com)"), pairs(&[("url", "www.x.com")]));
        assert_eq!(
            found("go to Evil.COM:8443/pay?x=1#y!"),
            pairs(&[("url", "Evil.COM:8443/pay?x=1#y")])
        );
        assert_eq!(
            found("tg://resolve?domain=x"),
            pairs(&[("url", "tg://resolve?domain=x")])
        );
        assert_eq!(found("ip 10.0.0.1/x"), pairs(&[("url", "10.0.0.1/x")]));
        assert_eq!(found("раз.рф"), pairs(&[("url", "раз.рф")]));
        assert_eq!(found("Trainer:evil.com"), pairs(&[("url", "evil.com")]));
    }

    #[test]
    fn emails_and_mentions_are_found() {
        assert_eq!(
            found("mail pay@evil.co now"),
            pairs(&[("email", "pay@evil.co")])
        );
        assert_eq!(found("hi @everyone!"), pairs(&[("mention", "@everyone")]));
        assert_eq!(found("@admin_bot"), pairs(&[("mention", "@admin_bot")]));
        assert_eq!(found("@gif"), pairs(&[("mention", "@gif")]));
        assert_eq!(
            found("user:pw@evil.com"),
            pairs(&[("url", "user:pw@evil.com")])
        );
    }

    #[test]
    fn ordinary_text_has_no_entities() {
        for text in [
            "🔔 Fund milestone · $450.00",
            "Amount: $339.95 (requested by agent) + $30.00 marketplace fee",
            "Expires: 2026-06-15 10:00 UTC (in 71 h)",
            "the message is updated.\n\n/pending — the requests",
            "e.g. this, and 3.5 more; a@b; x @ab @abc word@name",
            "file.txt1 version 1.2.3",
        ] {
            assert_eq!(found(text), vec![], "{text}");
        }
    }

    #[test]
    fn code_pre_and_links_are_not_scanned() {
        let text = "a evil.com b @someone c x.com";
        let code = json!({"type": "code", "offset": 2, "length": 8});
        let link = json!({"type": "text_link", "offset": 13, "length": 8, "url": "https://x.y"});
        let pre = json!({"type": "pre", "offset": 24, "length": 5});
        assert_eq!(find(text, std::slice::from_ref(&code)).len(), 2);
        assert!(find(text, &[code, link, pre]).is_empty());
        // Bold does not protect.
        let bold = json!({"type": "bold", "offset": 0, "length": 29});
        assert_eq!(find(text, &[bold]).len(), 3);
    }

    #[test]
    fn offsets_are_utf16() {
        let e = &find("😀 x.com", &[])[0];
        assert_eq!(
            (e["offset"].as_i64(), e["length"].as_i64()),
            (Some(3), Some(5))
        );
    }
}
