//! Where in the file a problem is, and what was probably meant: positions (line and column)
//! for every problem, the key a type error is at, and "did you mean" for a misspelt key, zone
//! or kind. Kept beside the parsing so `parse` reads as the checks it makes.

use std::ops::Range;

use serde_aux::serde_introspection::serde_introspect;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{
    RawAcquire, RawAlerts, RawConfig, RawDelivery, RawServer, RawState, RawTeam, RawWebhook,
};

/// One step into the document: a key of a table, or an element of an array.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// A line and a column, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub(super) fn of(text: &str, offset: usize) -> Position {
        let before = &text[..offset.min(text.len())];
        Position {
            line: before.matches('\n').count() + 1,
            column: before.chars().rev().take_while(|&c| c != '\n').count() + 1,
        }
    }
}

/// The closest of `candidates` to `word` when it is close enough to be a slip of the keyboard
/// (at most a third of its letters off, and at least one), as " (did you mean \"x\"?)".
pub(super) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    let word_lower = word.to_lowercase();
    let allowed = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&word_lower, &c.to_lowercase()),
                c,
            )
        })
        .filter(|&(distance, c)| distance <= allowed && c != word)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// The keys a table accepts, by where it is (`teams.0.webhooks.1`; `?` and indexes ignored).
pub(super) fn known_keys(table: &str) -> &'static [&'static str] {
    let named: Vec<&str> = (table.split('.'))
        .filter(|p| !p.is_empty() && *p != "?" && p.parse::<usize>().is_err())
        .collect();
    match named.as_slice() {
        [] => serde_introspect::<RawConfig>(),
        ["acquire"] => serde_introspect::<RawAcquire>(),
        ["state"] => serde_introspect::<RawState>(),
        ["server"] => serde_introspect::<RawServer>(),
        ["delivery"] => serde_introspect::<RawDelivery>(),
        ["alerts"] => serde_introspect::<RawAlerts>(),
        ["teams"] => serde_introspect::<RawTeam>(),
        ["teams", "webhooks"] | ["alerts", "webhooks"] => serde_introspect::<RawWebhook>(),
        _ => &[],
    }
}

/// The path to the innermost key whose value holds `span` (where a type error was found),
/// with that key's own span. Every table is searched: a `[table]`'s own span is its header's
/// alone, not its keys'.
pub(super) fn key_at(doc: &DeTable<'_>, span: &Range<usize>) -> Option<(Vec<Step>, Range<usize>)> {
    fn in_value(value: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &mut Vec<Step>) -> bool {
        let found_inside = match value.get_ref() {
            DeValue::Table(table) => in_table(table, span, path),
            DeValue::Array(array) => array.iter().enumerate().any(|(i, element)| {
                path.push(Step::Index(i));
                let found = in_value(element, span, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        };
        found_inside || contains(&value.span(), span)
    }
    fn in_table(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<Step>) -> bool {
        table.iter().any(|(key, value)| {
            path.push(Step::Key(key.get_ref().to_string()));
            let found = in_value(value, span, path) || contains(&key.span(), span);
            if !found {
                path.pop();
            }
            found
        })
    }
    let mut path = Vec::new();
    if !in_table(doc, span, &mut path) {
        return None;
    }
    // An element of an array names the key that holds the array.
    while matches!(path.last(), Some(Step::Index(_))) && !is_table_at(doc, &path) {
        path.pop();
    }
    let key = key_span(doc, &path)?;
    Some((path, key))
}

/// Whether `path` leads to a table (an element of `[[teams]]`, say).
fn is_table_at(doc: &DeTable<'_>, path: &[Step]) -> bool {
    let mut value: Option<&DeValue<'_>> = None;
    for step in path {
        let next = match (value, step) {
            (None, Step::Key(k)) => doc.get(k.as_str()),
            (Some(DeValue::Table(t)), Step::Key(k)) => t.get(k.as_str()),
            (Some(DeValue::Array(a)), Step::Index(i)) => a.get(*i),
            _ => None,
        };
        match next {
            Some(v) => value = Some(v.get_ref()),
            None => return false,
        }
    }
    matches!(value, Some(DeValue::Table(_)))
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

/// The span of the last key of `path` (or of the array element it ends at).
fn key_span(doc: &DeTable<'_>, path: &[Step]) -> Option<Range<usize>> {
    let mut table = doc;
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    let mut last = None;
    for step in path {
        match step {
            Step::Key(name) => {
                let current = match value.map(|v| v.get_ref()) {
                    None => table,
                    Some(DeValue::Table(t)) => t,
                    _ => return last,
                };
                let (key, found) = current.get_key_value(name.as_str())?;
                last = Some(key.span());
                value = Some(found);
                if let DeValue::Table(t) = found.get_ref() {
                    table = t;
                }
            }
            Step::Index(i) => {
                let Some(DeValue::Array(array)) = value.map(|v| v.get_ref()) else {
                    return last;
                };
                let found = array.get(*i)?;
                last = Some(found.span());
                value = Some(found);
            }
        }
    }
    last
}

/// Removes the key `path` leads to (the whole array, for an element of one), so
/// deserializing can go on to the file's other problems. False when it isn't there.
pub(super) fn remove(doc: &mut DeTable<'_>, path: &[Step]) -> bool {
    let Some(last_key) = path.iter().rposition(|s| matches!(s, Step::Key(_))) else {
        return false;
    };
    let mut table = doc;
    let mut at = 0;
    loop {
        let Step::Key(name) = &path[at] else {
            return false;
        };
        if at == last_key {
            return table.remove(name.as_str()).is_some();
        }
        let mut value = match table.get_mut(name.as_str()) {
            Some(value) => value.get_mut(),
            None => return false,
        };
        at += 1;
        // Through the array elements the path names, to the next table.
        while let Some(Step::Index(i)) = path.get(at) {
            value = match value {
                DeValue::Array(array) => match array.get_mut(*i) {
                    Some(element) => element.get_mut(),
                    None => return false,
                },
                _ => return false,
            };
            at += 1;
        }
        table = match value {
            DeValue::Table(t) => t,
            _ => return false,
        };
    }
}

/// Where a problem's place (`team "apac".webhooks[1].kind`, `teams[2]`, `acquire.base_url`)
/// is in the file: its key, or the nearest enclosing one that is there (a missing key is
/// reported at its table). The file's start when none is.
pub(super) fn position_of(doc: &DeTable<'_>, text: &str, place: &str) -> Position {
    let path = steps(doc, place);
    // The longest prefix of the path that exists.
    let span = (1..=path.len())
        .rev()
        .find_map(|n| key_span(doc, &path[..n]));
    Position::of(text, span.map_or(0, |s| s.start))
}

/// A place as the problems write it, as steps into the document.
fn steps(doc: &DeTable<'_>, place: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = place;
    if let Some(after) = rest.strip_prefix("team \"") {
        let Some((name, tail)) = after.split_once('"') else {
            return steps;
        };
        let index = doc.get("teams").and_then(|teams| match teams.get_ref() {
            DeValue::Array(teams) => teams.iter().position(|t| {
                t.get_ref().get("name").and_then(|n| n.get_ref().as_str()) == Some(name)
            }),
            _ => None,
        });
        steps.push(Step::Key("teams".into()));
        match index {
            Some(index) => steps.push(Step::Index(index)),
            None => return steps,
        }
        rest = tail.strip_prefix('.').unwrap_or(tail);
    }
    for part in rest.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
        if key.contains(char::is_whitespace) {
            break;
        }
        steps.push(Step::Key(key.to_owned()));
        for index in indexes.split('[') {
            match index.trim_end_matches(']').parse() {
                Ok(i) => steps.push(Step::Index(i)),
                Err(_) => break,
            }
        }
    }
    steps
}

/// How a path reads in a problem: `team "apac".top`, `teams[3].name`, `acquire.timeout_secs`.
pub(super) fn describe(doc: &DeTable<'_>, path: &[Step]) -> String {
    let mut out = String::new();
    let mut rest = path;
    if let [Step::Key(teams), Step::Index(i), tail @ ..] = path
        && teams == "teams"
    {
        let name = (doc.get("teams").and_then(|t| t.get_ref().get(*i)))
            .and_then(|team| team.get_ref().get("name"))
            .and_then(|n| n.get_ref().as_str().map(str::to_owned));
        out = match name {
            Some(name) => format!("team {name:?}"),
            None => format!("teams[{i}]"),
        };
        rest = tail;
    }
    for step in rest {
        match step {
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slip_gets_a_suggestion_and_a_different_word_none() {
        let keys = ["skip_empty", "schedule", "timezone", "top"];
        assert_eq!(
            did_you_mean("skip_emtpy", keys),
            " (did you mean \"skip_empty\"?)"
        );
        assert_eq!(
            did_you_mean("Timezone", keys),
            " (did you mean \"timezone\"?)"
        );
        assert_eq!(did_you_mean("colour", keys), "");
        // One letter off in a short word is still a slip; two is another word.
        assert_eq!(did_you_mean("tpo", keys), " (did you mean \"top\"?)");
        assert_eq!(did_you_mean("xyz", keys), "");
    }

    #[test]
    fn places_are_found_in_the_file_or_at_their_nearest_table() {
        let text = "history_days = 30\n\n[[teams]]\nname = \"a\"\n\n[[teams]]\nname = \"b\"\ntop = 3\n\n[[teams.webhooks]]\nkind = \"x\"\n";
        let doc = DeTable::parse(text).unwrap();
        let at = |place: &str| {
            let p = position_of(doc.get_ref(), text, place);
            (p.line, p.column)
        };
        assert_eq!(at("history_days"), (1, 1));
        assert_eq!(at("team \"b\".top"), (8, 1));
        assert_eq!(at("team \"b\".webhooks[0].kind"), (11, 1));
        // A missing key is shown at its team.
        assert_eq!(at("team \"a\".timezone").0, 3);
        assert_eq!(at("teams"), (3, 3));
        assert_eq!(at("alerts.webhooks"), (1, 1));
    }
}
