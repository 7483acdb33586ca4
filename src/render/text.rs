//! Shared escaping and fitting: what every kind does to visitor text before a template sees it,
//! and how a text too long for its place is cut.

use std::borrow::Cow;

/// The most characters one visitor-chosen value keeps, so no single value (a 5,000-character
/// country code) can crowd the rest of its list out of a message.
pub const VALUE_CAP: usize = 300;

/// Marks that reorder text (U+202E turns `gnp.exe` into `exe.png`): never visitor-chosen.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Every kind's first step: bidi controls dropped, control characters and line or paragraph
/// separators made spaces (a visitor's line break must not start a line of the template's
/// output), and the value capped at [`VALUE_CAP`] characters.
pub fn clean(text: &str) -> Cow<'_, str> {
    let inert = |c: char| !is_bidi(c) && !c.is_control() && !matches!(c, '\u{2028}' | '\u{2029}');
    if text.len() <= VALUE_CAP && text.chars().all(inert) {
        return Cow::Borrowed(text);
    }
    let kept: Vec<char> = text
        .chars()
        .filter(|&c| !is_bidi(c))
        .take(VALUE_CAP + 1)
        .collect();
    let long = kept.len() > VALUE_CAP;
    let mut out: String = kept
        .into_iter()
        .take(VALUE_CAP - usize::from(long))
        .map(|c| if inert(c) { c } else { ' ' })
        .collect();
    if long {
        out.push('…');
    }
    Cow::Owned(out)
}

/// Breaks what a chat client would turn into a mention or a link, invisibly: a zero-width
/// joiner after `@` (`@channel` reads the same but notifies nobody) and a zero-width space
/// after `:` and `.` (no `https://` and no domain name for an auto-linker to find) and after
/// `]` (no Markdown `[label](url)`).
pub fn defang(text: &str) -> Cow<'_, str> {
    const BREAKABLE: [char; 4] = ['@', ':', '.', ']'];
    if !text.contains(BREAKABLE) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        out.push(c);
        match c {
            '@' => out.push('\u{200D}'),
            ':' | '.' | ']' => out.push('\u{200B}'),
            _ => {}
        }
    }
    Cow::Owned(out)
}

/// Markdown (Discord, Mattermost): a backslash before every character that could start
/// formatting, a link (`[x](y)`, `<url>`) or a quote, then [`defang`]ed.
pub fn markdown(text: &str) -> Cow<'_, str> {
    const FORMATTING: [char; 14] = [
        '\\', '*', '_', '~', '`', '|', '<', '>', '[', ']', '(', ')', '#', '!',
    ];
    if !text.contains(FORMATTING) {
        return defang(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if FORMATTING.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    Cow::Owned(defang(&out).into_owned())
}

/// Markdown as its reader sees it: escaping backslashes gone (for previews).
pub fn unmarkdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match chars.peek() {
            Some(next) if c == '\\' && next.is_ascii_punctuation() => {
                out.push(*next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// HTML text (Google Chat's card text): entities for `& < > "`, then [`defang`]ed.
pub fn html(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"']) {
        return defang(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    Cow::Owned(defang(&out).into_owned())
}

/// Length in UTF-16 units, what Slack, Discord and Mattermost count; never less than the
/// number of characters.
pub fn units(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Whether `text` is at most `max` units long, without counting them when its bytes fit (a
/// character is never more UTF-16 units than UTF-8 bytes).
pub fn fits(text: &str, max: usize) -> bool {
    text.len() <= max || units(text) <= max
}

/// Cuts on a character boundary so the result, with its "…", fits in `max` units; never leaves
/// half an entity (`&am…`), a lone escaping backslash or an `@` without its joiner behind.
pub fn cut(text: &str, max: usize) -> String {
    if fits(text, max) {
        return text.to_owned();
    }
    let mut used = 1; // the ellipsis
    let mut out = String::new();
    for c in text.chars() {
        used += c.len_utf16();
        if used > max {
            break;
        }
        out.push(c);
    }
    if let Some(amp) = out.rfind('&')
        && !out[amp..].contains(';')
        && out.len() - amp < 6
    {
        out.truncate(amp);
    }
    if (out.len() - out.trim_end_matches('\\').len()) % 2 == 1 {
        out.pop();
    }
    // An `@` whose zero-width joiner was cut off would sit right before the "…".
    if out.ends_with('@') {
        out.pop();
    }
    out.push('…');
    out
}

/// Keeps whole lines while they fit in `max` units, then says how many were left out. When
/// the text doesn't fit, each line is cut to a quarter of `max`, so one long line can't
/// crowd out the rest.
pub fn fit_lines(text: &str, max: usize) -> String {
    if fits(text, max) {
        return text.to_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    let reserve = units("…and 99999 more lines") + 1;
    let mut kept: Vec<String> = Vec::new();
    let mut used = 0;
    for line in &lines {
        let line = cut(line, (max / 4).max(1));
        let len = units(&line) + 1;
        if used + len + reserve > max {
            break;
        }
        used += len;
        kept.push(line);
    }
    let left = lines.len() - kept.len();
    if left > 0 {
        kept.push(format!(
            "…and {left} more line{}",
            if left == 1 { "" } else { "s" }
        ));
    }
    kept.join("\n")
}

/// Fits `value`, when it is a string, in `max` units with `fit` ([`cut`] or [`fit_lines`]);
/// one that fits already is left as it is, uncopied.
pub fn fit_text(value: Option<&mut serde_json::Value>, max: usize, fit: fn(&str, usize) -> String) {
    if let Some(serde_json::Value::String(text)) = value
        && !fits(text, max)
    {
        *text = fit(text, max);
    }
}

/// A JSON value's size in bytes, measured without building the string.
pub fn json_size(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("counting can't fail");
    count.0
}

/// Shortens a list of parts (blocks, card elements, sections) found in `body` at `pointer`
/// until it has at most `max_items` and the whole body is at most `max_bytes`: parts are
/// dropped from the end, except the last (the footer), and `note(n)` stands in for the n
/// dropped. Sizes are summed per part, so a list of thousands is fitted in one pass.
pub fn fit_parts(
    body: &mut serde_json::Value,
    pointer: &str,
    max_items: usize,
    max_bytes: usize,
    note: impl Fn(usize) -> serde_json::Value,
) {
    let total = json_size(body);
    let Some(parts) = body.pointer_mut(pointer).and_then(|p| p.as_array_mut()) else {
        return;
    };
    if parts.len() <= max_items && total <= max_bytes {
        return;
    }
    let footer = parts.pop();
    let sizes: Vec<usize> = parts.iter().map(|p| json_size(p) + 1).collect();
    // The note for the most parts is the largest one.
    let mut size = total + json_size(&note(parts.len())) + 1;
    let mut keep = parts.len();
    while keep > 0 && (keep + 2 > max_items || size > max_bytes) {
        keep -= 1;
        size -= sizes[keep];
    }
    let dropped = parts.len() - keep;
    parts.truncate(keep);
    parts.push(note(dropped));
    parts.extend(footer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cleaning_drops_bidi_and_line_breaks_and_caps_length() {
        assert_eq!(clean("a\u{202E}b\u{2028}c\nd\u{2066}"), "ab c d");
        let long = "x".repeat(5000);
        let long = clean(&long);
        assert_eq!(long.chars().count(), VALUE_CAP);
        assert!(long.ends_with('…'));
        assert_eq!(clean(&"y".repeat(VALUE_CAP)), "y".repeat(VALUE_CAP));
    }

    #[test]
    fn markdown_and_html_escapes_leave_no_mention_or_link() {
        let md = markdown("[x](https://evil.example) @everyone <@1> *b*");
        assert!(
            !md.contains("](") && !md.contains("://") && !md.contains("@e"),
            "{md}"
        );
        assert!(md.contains("\\*b\\*"), "{md}");
        let h = html("<users/all> & \"q\" https://x.example");
        assert_eq!(h.matches('<').count(), 0, "{h}");
        assert!(
            h.starts_with("&lt;users/all&gt; &amp; &quot;q&quot;"),
            "{h}"
        );
        assert!(!h.contains("://"), "{h}");
    }

    #[test]
    fn cutting_respects_characters_entities_and_escapes() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("😀😀😀", 5), "😀😀…");
        assert_eq!(units(&cut(&"é".repeat(200), 150)), 150);
        assert_eq!(cut("ab &amp; c", 6), "ab …");
        assert_eq!(cut("ab &lt;", 7), "ab &lt;");
        assert_eq!(cut("ab\\*cd", 4), "ab…");
    }

    #[test]
    fn a_text_fits_by_its_units_not_its_bytes() {
        // 300 bytes, 150 units; an emoji is 4 bytes and 2 units.
        let accented = "é".repeat(150);
        assert!(fits(&accented, 150));
        assert!(!fits(&accented, 149));
        assert_eq!(cut(&accented, 150), accented);
        assert!(fits("😀😀", 4));
        assert!(!fits("😀😀", 3));
        assert!(fits("abc", 3) && !fits("abcd", 3));
        let mut card = serde_json::json!(accented);
        fit_text(Some(&mut card), 150, cut);
        assert_eq!(card, serde_json::json!(accented));
        fit_text(Some(&mut card), 100, cut);
        assert_eq!(units(card.as_str().unwrap()), 100);
    }

    #[test]
    fn long_texts_keep_whole_lines_and_say_how_many_are_left_out() {
        let text = (0..400)
            .map(|i| format!("line {i:03} xxxxxxxxxx"))
            .collect::<Vec<_>>()
            .join("\n");
        let fitted = fit_lines(&text, 3000);
        assert!(units(&fitted) <= 3000);
        let kept = fitted.lines().count() - 1;
        assert_eq!(
            fitted.lines().last().unwrap(),
            format!("…and {} more lines", 400 - kept)
        );
        // One overlong line is cut, and the lines after it still show.
        let text = format!("head\n{}\nafter", "z".repeat(5000));
        let fitted = fit_lines(&text, 3000);
        assert!(fitted.ends_with("\nafter"), "{fitted}");
    }

    #[test]
    fn too_many_parts_keep_the_footer_and_a_note() {
        let mut body = json!({"blocks": (0..80).map(|i| json!({"n": i})).collect::<Vec<_>>()});
        fit_parts(&mut body, "/blocks", 50, 30_000, |n| json!({"dropped": n}));
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 50);
        assert_eq!(blocks[49], json!({"n": 79}));
        assert_eq!(blocks[48], json!({"dropped": 31}));
        assert_eq!(blocks[47], json!({"n": 47}));
    }
}
