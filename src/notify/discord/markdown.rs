//! Text as Discord shows it literally. Two ways, and each value takes one:
//!
//! - [`inline_code`]: verbatim inside a code span that nothing in the text can close. Inside
//!   code Discord formats, links and mentions nothing. Every value countersign did not write
//!   itself is shown this way: the agent's words, and the titles and names people wrote on
//!   OpenTrain.
//! - [`escape_markdown`]: readable prose with every markdown character backslash-escaped, for
//!   the few outside words that sit where code would read badly (a status word in a title, a
//!   key of OpenTrain's result). The escaped `:` of `https:` stops Discord's autolink and the
//!   escaped `<` stops `<@id>` mentions.
//!
//! Both put a zero-width space after every `@`, so `@everyone` does not even look like a ping,
//! and both cut to a length without ever splitting an escape, a delimiter or an `@` from its
//! space.

const ZWSP: char = '\u{200B}';

pub(super) fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Cutting to a length is the same for every platform.
pub(super) use crate::text::cut;

/// Characters that mean something to Discord's markdown anywhere in a line: emphasis, code,
/// spoilers, masked links, `<@mentions>`, `<t:timestamps>`, `:emoji:` and `https:` (a
/// backslash before the colon stops the autolink).
fn is_markdown(c: char) -> bool {
    matches!(
        c,
        '\\' | '*' | '_' | '~' | '`' | '|' | '<' | '[' | ']' | '(' | ')' | ':'
    )
}

/// Characters that mean something only at the start of a line: quotes, headings, lists.
fn is_line_start_markdown(c: char) -> bool {
    matches!(c, '>' | '#' | '-' | '+')
}

/// Outside text (one line, as `clean` makes it) as Discord shows it literally: markdown
/// characters escaped with a backslash, as is a leading quote, heading or list marker (`>`,
/// `#`, `-`, `+`, `1.`), and a zero-width space after every `@` (so `@everyone` does not even
/// look like a ping). At most `max` characters, an escape never split.
pub fn escape_markdown(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut leading_digits = true;
    let total = s.chars().count();
    for (i, c) in s.chars().enumerate() {
        let mut piece = String::new();
        if is_markdown(c)
            || (i == 0 && is_line_start_markdown(c))
            || (c == '.' && leading_digits && i > 0)
        {
            piece.push('\\');
        }
        piece.push(c);
        if c == '@' {
            piece.push(ZWSP);
        }
        leading_digits = leading_digits && c.is_ascii_digit();
        let len = chars(&piece);
        // Keep room for the ellipsis unless this is the last character.
        let reserve = usize::from(i + 1 < total);
        if count + len + reserve > max {
            if max > 0 {
                out.push('…');
            }
            return out;
        }
        out.push_str(&piece);
        count += len;
    }
    out
}

/// The agent's text shown verbatim as inline code: delimited by one more backtick than the
/// longest run inside it (padded with a space where it starts or ends with one), with a
/// zero-width space after every `@`. Nothing inside code is formatted, linked or mentioned.
pub fn inline_code(s: &str, max: usize) -> String {
    let text: String = s
        .chars()
        .flat_map(|c| if c == '@' { vec![c, ZWSP] } else { vec![c] })
        .collect();
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let ticks = "`".repeat(longest_run + 1);
    let wrap = |body: &str| {
        let pad_start = if body.starts_with('`') { " " } else { "" };
        let pad_end = if body.ends_with('`') { " " } else { "" };
        format!("{ticks}{pad_start}{body}{pad_end}{ticks}")
    };
    let whole = wrap(&text);
    if chars(&whole) <= max {
        return whole;
    }
    // Delimiters, the ellipsis (which ends the body, so no end pad) and a start pad if needed.
    let pad_start = usize::from(text.starts_with('`'));
    let room = max.saturating_sub(2 * ticks.len() + 1 + pad_start);
    if room == 0 {
        return cut("…", max);
    }
    let mut body: String = text.chars().take(room).collect();
    // Never end on half of an `@` + zero-width-space pair.
    if body.ends_with('@') {
        body.pop();
    }
    body.push('…');
    cut(&wrap(&body), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backticks_in_agent_text_cannot_close_the_code_span() {
        assert_eq!(inline_code("a`b", 100), "``a`b``");
        assert_eq!(inline_code("``x", 100), "``` ``x```");
        assert_eq!(inline_code("x`", 100), "``x` ``");
        let cut = inline_code(&"y".repeat(50), 20);
        assert_eq!(chars(&cut), 20, "{cut}");
        assert!(cut.starts_with('`') && cut.ends_with("…`"), "{cut}");
    }

    #[test]
    fn outside_text_is_escaped_and_never_cut_inside_an_escape() {
        assert_eq!(
            escape_markdown("# **x** <@1> @here https://a.b 1. c - d > e", 200),
            "\\# \\*\\*x\\*\\* \\<@\u{200B}1> @\u{200B}here https\\://a.b 1. c - d > e"
        );
        assert_eq!(escape_markdown("1. list", 50), "1\\. list");
        assert_eq!(escape_markdown("- item", 50), "\\- item");
        assert_eq!(escape_markdown(">>> quote", 50), "\\>>> quote");
        assert_eq!(escape_markdown("due 2026-07-01", 50), "due 2026-07-01");
        let cut = escape_markdown(&"*".repeat(100), 11);
        assert_eq!(cut, format!("{}…", "\\*".repeat(5)));
        assert_eq!(escape_markdown("abc", 3), "abc");
        assert_eq!(escape_markdown("abcd", 3), "ab…");
    }
}
