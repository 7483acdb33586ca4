//! The API's JSON, parsed and checked into a [`DayReport`], or rejected with an error that
//! names the report, the row and the field.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::{Endpoint, Problem};
use crate::http;

/// One country row of visitors-by-location.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CountryRow {
    pub name: String,
    pub cca3: String,
    pub visitors: u64,
    pub chats: u64,
    pub cases: u64,
    pub emails: u64,
    pub cobrowse: u64,
    /// `videocall` + `audiocall` + `voipCallCount`.
    pub calls: u64,
}

/// One row of most-active-visit-times: an hour of the day and the sum of its counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HourRow {
    pub hour: u8,
    pub label: String,
    pub activity: u64,
}

/// A page (by `url`) or a referrer (by `source`) with its chats.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatSource {
    pub text: String,
    pub chats: u64,
    pub percentage: f64,
}

/// A day of analytics as the API reported it, parsed and checked.
/// Kept in the ledger's history as JSON, so an earlier span is compared without a request.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct DayReport {
    pub countries: Vec<CountryRow>,
    pub hours: Vec<HourRow>,
    pub pages: Vec<ChatSource>,
    pub referrers: Vec<ChatSource>,
}

impl DayReport {
    /// Parses the four response bodies, in [`Endpoint::ALL`]'s order.
    pub fn parse(bodies: [&[u8]; 4]) -> Result<DayReport, (Endpoint, Problem)> {
        let [countries, hours, pages, referrers] = bodies;
        Ok(DayReport {
            countries: self::countries(countries)?,
            hours: parse_quickly(hours, parse_hour)?,
            pages: parse_report(Endpoint::PagesWithMostChats, pages, |r| {
                parse_source(r, "url")
            })?,
            referrers: parse_report(Endpoint::VisitorReference, referrers, |r| {
                parse_source(r, "source")
            })?,
        })
    }
}

/// The country rows alone, of a visitors-by-location body.
pub(super) fn countries(body: &[u8]) -> Result<Vec<CountryRow>, (Endpoint, Problem)> {
    parse_quickly(body, parse_country)
}

/// [`parse_report`] for a report whose rows can be read [`quickly`]: read so unless
/// anything is off that way.
fn parse_quickly<T: Quickly>(
    body: &[u8],
    parse: impl Fn(&Row) -> Result<T, String>,
) -> Result<Vec<T>, (Endpoint, Problem)> {
    match quickly(body) {
        Some(rows) => Ok(rows),
        None => parse_report(T::ENDPOINT, body, parse),
    }
}

/// The rows of `endpoint`'s report in `body`, each parsed by `parse`. A body of the usual
/// shape is read straight into rows, without a tree of it; anything else (an error, an odd
/// shape, a row `parse` refuses) is read again as a tree, whose errors say what is wrong and
/// where. Both ways give `parse` the same fields (the tree's in name order, the quick way's
/// as the body has them; `parse` looks them up by name), so a body that reads the quick way
/// reads as it would the slow way.
fn parse_report<T>(
    endpoint: Endpoint,
    body: &[u8],
    parse: impl Fn(&Row) -> Result<T, String>,
) -> Result<Vec<T>, (Endpoint, Problem)> {
    let quick = rows_quickly::<Row>(body, endpoint).and_then(|rows| {
        rows.iter()
            .map(&parse)
            .collect::<Result<Vec<T>, String>>()
            .ok()
    });
    match quick {
        Some(parsed) => Ok(parsed),
        None => rows_of(body, endpoint)
            .and_then(|rows| parse_rows(rows, parse))
            .map_err(|problem| (endpoint, problem)),
    }
}

/// The rows of a body of the usual shape (`data.<key>.success` true and rows under
/// `data.<key>.data.graphRow.data`, every part where and what it should be); None otherwise.
fn rows_quickly<'a, R: Deserialize<'a>>(body: &'a [u8], endpoint: Endpoint) -> Option<Vec<R>> {
    #[derive(serde::Deserialize)]
    struct Body<'a, R> {
        #[serde(borrow)]
        data: HashMap<&'a str, Report<R>>,
    }
    #[derive(serde::Deserialize)]
    struct Report<R> {
        success: bool,
        data: Graph<R>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Graph<R> {
        graph_row: Table<R>,
    }
    #[derive(serde::Deserialize)]
    struct Table<R> {
        data: Vec<R>,
    }
    // One check of the whole body instead of one per string: a body's hundreds of short keys
    // made serde_json's per-string UTF-8 check a tenth of reading it.
    let text = std::str::from_utf8(body).ok()?;
    let mut body: Body<R> = serde_json::from_str(text).ok()?;
    let report = body.data.remove(endpoint.key())?;
    report.success.then_some(report.data.graph_row.data)
}

/// The rows of a body of `T`'s report in the usual shape, each read straight into a `T`,
/// with no row of values kept; None when any row is off that way (see [`each_field`] and
/// each [`Quickly::read`]), for the way every body can be read.
fn quickly<T: Quickly>(body: &[u8]) -> Option<Vec<T>> {
    let rows = rows_quickly::<Quick<T>>(body, T::ENDPOINT)?;
    Some(rows.into_iter().map(|Quick(row)| row).collect())
}

/// A report's row that can be read the quick way. The two with the most fields: the hours'
/// 24 rows of 13, and the countries'.
trait Quickly: Sized {
    const ENDPOINT: Endpoint;
    /// The row, or an error that leaves the whole body to the slow way.
    fn read<'de, M: MapAccess<'de>>(map: M) -> Result<Self, M::Error>;
}

/// A row read the quick way.
struct Quick<T>(T);

impl<'de, T: Quickly> Deserialize<'de> for Quick<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Quickly> Visitor<'de> for Fields<T> {
            type Value = Quick<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a row of {}", T::ENDPOINT)
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                T::read(map).map(Quick)
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData))
    }
}

fn off<E: serde::de::Error>() -> E {
    E::custom("off the usual shape")
}

/// Gives `field` each of a row's names in order, to read its value with. A name given twice,
/// an escaped one, or more names than the API's rows have fails the row: the slow way reads
/// those as a parsed JSON object would (the last value, unescaped).
fn each_field<'de, M: MapAccess<'de>>(
    mut map: M,
    mut field: impl FnMut(&'de str, &mut M) -> Result<(), M::Error>,
) -> Result<(), M::Error> {
    let mut names = [""; 32];
    let (mut count, mut seen) = (0, 0u128);
    // serde's `&str` takes only text borrowed from the body: an escaped name fails the row.
    while let Some(name) = map.next_key::<&'de str>()? {
        let bit = sketch(name);
        if (seen & bit != 0 && names[..count].contains(&name)) || count == names.len() {
            return Err(off());
        }
        (seen, names[count], count) = (seen | bit, name, count + 1);
        field(name, &mut map)?;
    }
    Ok(())
}

/// Summed as it is read. Off the usual shape too: a label that isn't an hour's or isn't
/// plain text, a value that isn't a count, no count at all.
impl Quickly for HourRow {
    const ENDPOINT: Endpoint = Endpoint::MostActiveVisitTimes;
    fn read<'de, M: MapAccess<'de>>(map: M) -> Result<Self, M::Error> {
        let (mut label, mut activity, mut columns) = (None, 0u64, 0);
        each_field(map, |name, map| {
            if name == "label" {
                label = Some(map.next_value::<&str>()?);
            } else {
                let Count(value) = map.next_value()?;
                activity = activity.saturating_add(value);
                columns += 1;
            }
            Ok(())
        })?;
        let label = label.ok_or_else(off)?;
        let hour = hour_of_label(label).ok_or_else(off)?;
        if columns == 0 {
            return Err(off());
        }
        Ok(HourRow {
            hour,
            label: label.to_owned(),
            activity,
        })
    }
}

/// The fields nothing reads skipped. Off the usual shape too: a name or a code that isn't
/// plain text, a count that isn't one or is missing.
impl Quickly for CountryRow {
    const ENDPOINT: Endpoint = Endpoint::VisitorsByLocation;
    fn read<'de, M: MapAccess<'de>>(map: M) -> Result<Self, M::Error> {
        let (mut name, mut cca3) = (None, "");
        // visitorCount, chatCount, caseCount, emailCount, cobrowseCount, videocall,
        // audiocall, voipCallCount: each required, as [`parse_country`] has them.
        let mut counts: [Option<u64>; 8] = [None; 8];
        each_field(map, |field, map| {
            let at = match field {
                "name" => {
                    name = Some(map.next_value::<&str>()?);
                    return Ok(());
                }
                "cca3" => {
                    cca3 = map.next_value::<&str>()?;
                    return Ok(());
                }
                "visitorCount" => 0,
                "chatCount" => 1,
                "caseCount" => 2,
                "emailCount" => 3,
                "cobrowseCount" => 4,
                "videocall" => 5,
                "audiocall" => 6,
                "voipCallCount" => 7,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    return Ok(());
                }
            };
            counts[at] = Some(map.next_value::<Count>()?.0);
            Ok(())
        })?;
        let [
            Some(visitors),
            Some(chats),
            Some(cases),
            Some(emails),
            Some(cobrowse),
            Some(video),
            Some(audio),
            Some(voip),
        ] = counts
        else {
            return Err(off());
        };
        Ok(CountryRow {
            name: name.ok_or_else(off)?.to_owned(),
            cca3: cca3.to_owned(),
            visitors,
            chats,
            cases,
            emails,
            cobrowse,
            calls: video + audio + voip,
        })
    }
}

/// A count as [`count_value`] takes one, read without a [`Value`] of it.
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        fn counted<E: serde::de::Error>(value: Value) -> Result<Count, E> {
            count_value(&value)
                .map(Count)
                .ok_or_else(|| E::custom("not a count"))
        }
        struct Number;
        impl Visitor<'_> for Number {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a count")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Count, E> {
                counted(n.into())
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Count, E> {
                counted(n.into())
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Count, E> {
                counted(n.into())
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Count, E> {
                counted(text.into())
            }
        }
        deserializer.deserialize_any(Number)
    }
}

/// A row's fields, in the response's order when read straight from the body, in name order
/// when taken from a tree. A name given twice keeps its first place and its last value, as it
/// does in a parsed JSON object.
#[derive(Debug, Default)]
struct Row<'a> {
    fields: Vec<(Cow<'a, str>, Value)>,
    /// A bit for each name's [`sketch`]: a name whose bit is clear is new, and only one whose
    /// bit is set is looked for among the others (comparing every pair was a fifth of
    /// reading a body).
    seen: u128,
}

/// A few of a name's bytes mixed: enough to tell apart the names a report's rows carry.
fn sketch(name: &str) -> u128 {
    let (bytes, n) = (name.as_bytes(), name.len());
    let byte = |i: usize| u32::from(bytes.get(i).copied().unwrap_or(0));
    // Wrapping: a hostile name may be any length.
    let mixed = (n as u32)
        .wrapping_mul(29_791)
        .wrapping_add(byte(0) * 961 + byte(1) * 31 + byte(n.wrapping_sub(1)));
    1 << (mixed % 128)
}

impl<'a> Row<'a> {
    fn insert(&mut self, name: Cow<'a, str>, value: Value) {
        let bit = sketch(&name);
        if self.seen & bit != 0
            && let Some((_, slot)) = self.fields.iter_mut().find(|(known, _)| *known == name)
        {
            *slot = value;
            return;
        }
        self.seen |= bit;
        self.fields.push((name, value));
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields
            .iter()
            .map(|(name, value)| (name.as_ref(), value))
    }

    fn len(&self) -> usize {
        self.fields.len()
    }
}

impl From<Map<String, Value>> for Row<'_> {
    fn from(fields: Map<String, Value>) -> Self {
        let mut row = Row::default();
        for (name, value) in fields {
            row.insert(Cow::Owned(name), value);
        }
        row
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Row<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<Row<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for Fields<'a> {
            type Value = Row<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Row<'a>, M::Error> {
                let mut row = Row {
                    fields: Vec::with_capacity(map.size_hint().unwrap_or(16)),
                    seen: 0,
                };
                while let Some(Name(name)) = map.next_key()? {
                    row.insert(name, map.next_value()?);
                }
                Ok(row)
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData))
    }
}

/// A field's name, borrowed from the body unless it had to be unescaped.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text<'a>(std::marker::PhantomData<Name<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for Text<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(name)))
            }
            fn visit_str<E>(self, name: &str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(Text(std::marker::PhantomData))
    }
}

/// Unwraps `data.<key>.data.graphRow.data`, insisting on `success: true`.
fn rows_of(body: &[u8], endpoint: Endpoint) -> Result<Vec<Value>, Problem> {
    let mut json: Value = serde_json::from_slice(body).map_err(|e| Problem::NotJson {
        reason: e.to_string(),
        excerpt: http::excerpt(body),
    })?;
    let report = json
        .get("data")
        .and_then(|d| d.get(endpoint.key()))
        .ok_or_else(|| {
            if json.get("success") == Some(&Value::Bool(false)) {
                Problem::Unsuccessful(message_of(&json))
            } else {
                Problem::Shape(format!("no data.{} in the response", endpoint.key()))
            }
        })?;
    match report.get("success") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(Problem::Unsuccessful(message_of(report))),
        _ => {
            return Err(Problem::Shape(format!(
                "data.{}.success is missing or not a boolean",
                endpoint.key()
            )));
        }
    }
    let rows = ["data", endpoint.key(), "data", "graphRow", "data"]
        .into_iter()
        .try_fold(&mut json, |value, key| value.get_mut(key));
    match rows.map(Value::take) {
        Some(Value::Array(rows)) => Ok(rows),
        Some(Value::Null) | None => Err(Problem::Shape(format!(
            "no data.{}.data.graphRow.data in the response",
            endpoint.key()
        ))),
        Some(_) => Err(Problem::Shape(format!(
            "data.{}.data.graphRow.data is not a list",
            endpoint.key()
        ))),
    }
}

fn message_of(value: &Value) -> Option<String> {
    ["message", "error", "msg"]
        .iter()
        .find_map(|key| value.get(key)?.as_str())
        .map(|m| http::excerpt(m.as_bytes()))
}

fn parse_rows<T>(
    rows: Vec<Value>,
    parse: impl Fn(&Row) -> Result<T, String>,
) -> Result<Vec<T>, Problem> {
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let parsed = match row {
                Value::Object(fields) => parse(&Row::from(fields)),
                other => Err(format!("not an object: {}", excerpt(&other))),
            };
            parsed.map_err(|e| Problem::Shape(format!("row {}: {e}", i + 1)))
        })
        .collect()
}

/// How many of a row's keys an error lists, and how many characters of each: enough for an
/// admin to spot a renamed field, not so many that a hostile response floods the log.
const KEYS_SHOWN: usize = 20;
const KEY_CHARS: usize = 40;

/// A required field is absent. The row's keys (never its values, which are visitor data) are
/// listed because the usual cause is an upstream rename such as `visitor_count`: sorted, so
/// the rename is where an admin looks for the name it replaced.
fn missing(fields: &Row, key: &str) -> String {
    if fields.len() == 0 {
        return format!("{key} is missing (the row is empty)");
    }
    let mut names: Vec<&str> = fields.iter().map(|(k, _)| k).collect();
    names.sort_unstable();
    let mut keys: Vec<String> = names.iter().take(KEYS_SHOWN).map(|k| shorten(k)).collect();
    if fields.len() > KEYS_SHOWN {
        keys.push(format!("… {} more", fields.len() - KEYS_SHOWN));
    }
    format!(
        "{key} is missing (renamed? the row has {})",
        keys.join(", ")
    )
}

/// A key from the response, escaped so it can't break a log line, and cut short.
fn shorten(key: &str) -> String {
    let escaped: String = key.escape_debug().collect();
    match escaped.char_indices().nth(KEY_CHARS) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

fn excerpt(value: &Value) -> String {
    http::excerpt(value.to_string().as_bytes())
}

/// A required count: a non-negative integer, given as a number or a numeric string. Null is
/// not 0: the vendor's reference never sends it, so it means the shape has changed.
fn count(fields: &Row, key: &str) -> Result<u64, String> {
    match fields.get(key) {
        None => Err(missing(fields, key)),
        Some(value) => {
            count_value(value).ok_or_else(|| format!("{key} is not a count: {}", excerpt(value)))
        }
    }
}

fn count_value(value: &Value) -> Option<u64> {
    const LIMIT: u64 = 1_000_000_000_000_000;
    // The usual count, a whole number, without the float checks below: they pass for it.
    if let Value::Number(n) = value
        && let Some(whole) = n.as_u64()
    {
        return (whole < LIMIT).then_some(whole);
    }
    let number = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (number.is_finite() && number >= 0.0 && number.fract() == 0.0 && number < LIMIT as f64)
        .then_some(number as u64)
}

fn text(fields: &Row, key: &str) -> Result<String, String> {
    match fields.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        None => Err(missing(fields, key)),
        Some(Value::Null) => Err(format!("{key} is null")),
        Some(other) => Err(format!("{key} is not text: {}", excerpt(other))),
    }
}

fn parse_country(fields: &Row) -> Result<CountryRow, String> {
    Ok(CountryRow {
        name: text(fields, "name")?,
        cca3: text(fields, "cca3").unwrap_or_default(),
        visitors: count(fields, "visitorCount")?,
        chats: count(fields, "chatCount")?,
        cases: count(fields, "caseCount")?,
        emails: count(fields, "emailCount")?,
        cobrowse: count(fields, "cobrowseCount")?,
        // Required too: every row of the vendor's example carries all three.
        calls: count(fields, "videocall")?
            + count(fields, "audiocall")?
            + count(fields, "voipCallCount")?,
    })
}

/// The columns besides `label` are named by the API and may change, so each is taken as a
/// count whatever its name; one that isn't a count fails the row rather than vanishing from
/// the sum.
fn parse_hour(fields: &Row) -> Result<HourRow, String> {
    let label = text(fields, "label")?;
    let hour = hour_of_label(&label).ok_or_else(|| {
        format!(
            "unrecognised hour label {}",
            http::excerpt(format!("{label:?}").as_bytes())
        )
    })?;
    let mut activity = 0u64;
    let mut columns = 0;
    for (key, value) in fields.iter().filter(|(key, _)| *key != "label") {
        let value = count_value(value).ok_or_else(|| {
            format!(
                "column \"{}\" of the {label:?} row is not a count: {}",
                shorten(key),
                excerpt(value)
            )
        })?;
        activity = activity.saturating_add(value);
        columns += 1;
    }
    if columns == 0 {
        return Err(format!("the {label:?} row has no count columns"));
    }
    Ok(HourRow {
        hour,
        label,
        activity,
    })
}

/// "12 AM" is midnight, "12 PM" noon, "05 PM" 17; a 24-hour "14 PM" is read as 14. Read
/// leniently, as a person would: "5 pm", "05PM", "05:00 PM", "17:00" and "17" too.
pub fn hour_of_label(label: &str) -> Option<u8> {
    let label = label.trim();
    // The clock before a half of the day written in any case, without a copy of the label:
    // it is read for every hour row of every digest.
    let before = |half: &str| {
        let at = label.len().checked_sub(half.len())?;
        let (clock, written) = (label.get(..at)?, label.get(at..)?);
        written.eq_ignore_ascii_case(half).then_some(clock.trim())
    };
    let (clock, pm) = (before("AM").map(|clock| (clock, Some(false))))
        .or_else(|| before("PM").map(|clock| (clock, Some(true))))
        .unwrap_or((label, None));
    let hours = clock.split_once(':').map_or(clock, |(hours, _)| hours);
    let number: u8 = hours.parse().ok()?;
    match (number, pm) {
        (0..=23, None) => Some(number),
        (12, Some(false)) => Some(0),
        (12, Some(true)) => Some(12),
        (1..=11, Some(false)) => Some(number),
        (1..=11, Some(true)) => Some(number + 12),
        (0, Some(false)) | (13..=23, Some(true)) => Some(number),
        _ => None,
    }
}

fn parse_source(fields: &Row, key: &str) -> Result<ChatSource, String> {
    let text = text(fields, key)?;
    let chats = count(fields, "chats")?;
    let percentage = match fields.get("percentage") {
        None | Some(Value::Null) => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(value @ Value::String(s)) => s
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| format!("percentage is not a number: {}", excerpt(value)))?,
        Some(other) => {
            return Err(format!("percentage is not a number: {}", excerpt(other)));
        }
    };
    if !(percentage.is_finite() && (0.0..=100.0).contains(&percentage)) {
        return Err(format!("percentage {percentage} is outside 0-100"));
    }
    Ok(ChatSource {
        text,
        chats,
        percentage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(endpoint: Endpoint, rows: Value) -> Vec<u8> {
        json!({"data": {endpoint.key(): {"data": {"graphRow": {"data": rows}}, "success": true, "output": "json"}}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_reference_examples_parse() {
        let body = include_bytes!("../simulator/reference/visitors-by-location.json");
        let rows = rows_of(body, Endpoint::VisitorsByLocation).unwrap();
        let countries = parse_rows(rows, parse_country).unwrap();
        assert_eq!(countries.len(), 6);
        let india = countries.iter().find(|c| c.cca3 == "IND").unwrap();
        assert_eq!((india.visitors, india.chats, india.calls), (100, 158, 3));

        let body = include_bytes!("../simulator/reference/most-active-visit-times.json");
        let rows = rows_of(body, Endpoint::MostActiveVisitTimes).unwrap();
        let hours = parse_rows(rows, parse_hour).unwrap();
        assert_eq!(hours.len(), 24);
        assert_eq!((hours[0].hour, hours[0].label.as_str()), (5, "05 AM"));
        assert!(hours.iter().any(|h| h.hour == 0 && h.label == "12 AM"));

        let body = include_bytes!("../simulator/reference/pages-with-most-chats.json");
        let rows = rows_of(body, Endpoint::PagesWithMostChats).unwrap();
        let pages = parse_rows(rows, |r| parse_source(r, "url")).unwrap();
        assert_eq!(pages[0].percentage, 89.86);
    }

    /// What the quick way and the slow way make of a body with `endpoint`'s parser: the
    /// quick way's rows (None: it left the body to the slow way), and the slow way's.
    fn both_ways(endpoint: Endpoint, body: &[u8]) -> (Option<String>, String) {
        fn ways<T: std::fmt::Debug>(
            endpoint: Endpoint,
            body: &[u8],
            parse: impl Fn(&Row) -> Result<T, String>,
        ) -> (Option<String>, String) {
            let quick = rows_quickly::<Row>(body, endpoint)
                .and_then(|rows| rows.iter().map(&parse).collect::<Result<Vec<T>, _>>().ok());
            let slow = rows_of(body, endpoint).and_then(|rows| parse_rows(rows, &parse));
            (quick.map(|q| format!("{q:?}")), format!("{slow:?}"))
        }
        match endpoint {
            Endpoint::VisitorsByLocation => {
                let (_, slow) = ways(endpoint, body, parse_country);
                (quickly::<CountryRow>(body).map(|q| format!("{q:?}")), slow)
            }
            Endpoint::MostActiveVisitTimes => {
                let (_, slow) = ways(endpoint, body, parse_hour);
                (quickly::<HourRow>(body).map(|q| format!("{q:?}")), slow)
            }
            Endpoint::PagesWithMostChats => ways(endpoint, body, |r| parse_source(r, "url")),
            Endpoint::VisitorReference => ways(endpoint, body, |r| parse_source(r, "source")),
        }
    }

    #[test]
    fn names_that_share_a_sketch_are_two_fields_and_a_repeated_one_is_one() {
        let first = "c0".to_owned();
        let twin = (1..)
            .map(|i| format!("c{i}"))
            .find(|name| sketch(name) == sketch(&first))
            .unwrap();
        let mut row = Row::default();
        for (name, value) in [(&first, 1), (&twin, 2), (&first, 3)] {
            row.insert(Cow::Owned(name.clone()), json!(value));
        }
        let fields: Vec<(&str, &Value)> = row.iter().collect();
        assert_eq!(
            fields,
            [(first.as_str(), &json!(3)), (twin.as_str(), &json!(2))]
        );
        // Any length of name, and none, has a sketch.
        assert_eq!(sketch(&"x".repeat(1 << 20)).count_ones(), 1);
        assert_eq!(sketch("").count_ones(), 1);
    }

    #[test]
    fn the_quick_way_reads_the_reference_day_as_the_slow_way_does() {
        let bodies: [&[u8]; 4] = [
            include_bytes!("../simulator/reference/visitors-by-location.json"),
            include_bytes!("../simulator/reference/most-active-visit-times.json"),
            include_bytes!("../simulator/reference/pages-with-most-chats.json"),
            include_bytes!("../simulator/reference/visitor-reference.json"),
        ];
        for (endpoint, body) in Endpoint::ALL.into_iter().zip(bodies) {
            let (quick, slow) = both_ways(endpoint, body);
            let quick = quick.unwrap_or_else(|| panic!("{endpoint} was left to the slow way"));
            assert_eq!(format!("Ok({quick})"), slow, "{endpoint}");
        }
    }

    #[test]
    fn bodies_off_the_usual_shape_read_the_same_either_way_or_go_the_slow_way() {
        let hour = |row: &str| {
            let body = format!(
                r#"{{"data":{{"mostActiveVisitTimes":{{"data":{{"graphRow":{{"data":[{row}]}}}},"success":true}}}}}}"#
            );
            (Endpoint::MostActiveVisitTimes, body)
        };
        let many: Vec<String> = (0..40).map(|i| format!(r#""c{i}":{i}"#)).collect();
        let country = |row: Value| {
            let body = format!(
                r#"{{"data":{{"visitorsByLocation":{{"data":{{"graphRow":{{"data":[{row}]}}}},"success":true}}}}}}"#
            );
            (Endpoint::VisitorsByLocation, body)
        };
        let counted = with(
            with(india(), "chatCount", Some(json!("7"))),
            "videocall",
            Some(json!(3.0)),
        );
        let cases = [
            // Counts as numeric text and whole floats, fields of any value it doesn't read, and
            // no cca3: read the quick way as the slow way reads them.
            country(with(with(counted, "extra", Some(json!({"a": [1, "}"]}))), "cca3", None)),
            // Counts of every kind a count comes in, and a label read as a person would.
            hour(r#"{"label":"05 PM","00 AM":"3","02 AM":4.0,"04 AM":"1e3","06 AM":" 9 "}"#),
            hour(r#"{"00 AM":1,"label":"5 pm"},{"label":"17","22 PM":0}"#),
            // More columns than an hour's row has.
            hour(&format!(r#"{{"label":"01 AM",{}}}"#, many.join(","))),
            // A column given twice counts once, with its last value.
            hour(r#"{"label":"01 AM","00 AM":1,"00 AM":"2","02 AM":3.0}"#),
            hour(r#"{"label":"01 AM","label":"02 PM","00 AM":1}"#),
            // An escaped name is unescaped, and still the same name.
            hour(r#"{"label":"01 AM","00 AM":1,"00 \u0041M":5}"#),
            hour(r#"{"label":"01 AM","00 AM":{"nested":1}}"#),
            hour(r#"{"label":"01 AM","00 AM":null}"#),
            hour(r#"[1, 2]"#),
            hour(r#"{"label":"13 AM","00 AM":1}"#),
            (Endpoint::MostActiveVisitTimes, r#"{"data":{"mostActiveVisitTimes":{"data":{"graphRow":{"data":[]}},"success":"true"}}}"#.to_owned()),
            (Endpoint::MostActiveVisitTimes, r#"{"data":{"mostActiveVisitTimes":{"data":{"graphRow":{"data":[]}},"success":true,"success":false}}}"#.to_owned()),
            (Endpoint::MostActiveVisitTimes, r#"{"data":{"other":1,"mostActiveVisitTimes":{"data":{"graphRow":{"data":[]}},"success":true}}}"#.to_owned()),
            (Endpoint::MostActiveVisitTimes, r#"{"data":{"mostActiveVisitTimes":{"data":{"graphRow":{"data":[{"label":"01 AM","a":1}]}},"success":true}},"data":{}}"#.to_owned()),
            (Endpoint::VisitorReference, r#"{"data":{"visitorReference":{"data":{"graphRow":{"data":[{"source":"a","chats":"3","percentage":"50%","source":"b","extra":[1]}]}},"success":true}}}"#.to_owned()),
            // A code that isn't text, a missing count, an escaped name: the slow way's.
            country(with(india(), "cca3", Some(json!(7)))),
            country(with(india(), "cca3", Some(json!({"a": 1})))),
            country(with(india(), "audiocall", None)),
            country(with(india(), "name", Some(json!("Côte d\"Ivoire")))),
        ];
        let mut quickly = 0;
        for (endpoint, body) in &cases {
            let (quick, slow) = both_ways(*endpoint, body.as_bytes());
            if let Some(quick) = quick {
                quickly += 1;
                assert_eq!(format!("Ok({quick})"), slow, "{body}");
            }
        }
        // The usual shape with rows that parse reads quickly (the first three, the referrer);
        // names given twice, escaped or too many, values the quick way doesn't take, the
        // other shapes, and rows the parser refuses were left to the slow way.
        assert_eq!(quickly, 4);
        let (_, many) = both_ways(cases[3].0, cases[3].1.as_bytes());
        assert!(many.contains("activity: 780"), "{many}");
        let (_, coded) = both_ways(cases[16].0, cases[16].1.as_bytes());
        assert!(coded.contains(r#"cca3: "7""#), "{coded}");
        // "00 AM" counts its last value, 2, beside 3; not 1 + 2 + 3.
        let (_, twice) = both_ways(cases[4].0, cases[4].1.as_bytes());
        assert!(twice.contains("activity: 5"), "{twice}");
        // A byte that isn't UTF-8, even inside a label, is left to the slow way to name.
        let mut bytes = hour(r#"{"label":"01 AM","00 AM":1}"#).1.into_bytes();
        let at = bytes.windows(2).position(|w| w == b"AM").unwrap();
        bytes[at] = 0xFF;
        let (quick, slow) = both_ways(Endpoint::MostActiveVisitTimes, &bytes);
        assert_eq!(quick, None);
        assert!(slow.starts_with("Err(NotJson"), "{slow}");
    }

    #[test]
    fn the_reference_day_parses_whole() {
        let day = DayReport::parse([
            include_bytes!("../simulator/reference/visitors-by-location.json"),
            include_bytes!("../simulator/reference/most-active-visit-times.json"),
            include_bytes!("../simulator/reference/pages-with-most-chats.json"),
            include_bytes!("../simulator/reference/visitor-reference.json"),
        ])
        .unwrap();
        assert_eq!((day.countries.len(), day.hours.len()), (6, 24), "{day:?}");
        assert_eq!((day.pages.len(), day.referrers.len()), (2, 2));
        assert_eq!(day.referrers[0].chats, 3);
    }

    /// A day whose `endpoint` report has `rows` and the others none, parsed as `fetch_day`
    /// parses it; the error reads as it would after "report for account ...".
    fn parse_day(endpoint: Endpoint, rows: Value) -> Result<DayReport, String> {
        let bodies = Endpoint::ALL.map(|e| {
            envelope(
                e,
                if e == endpoint {
                    rows.clone()
                } else {
                    json!([])
                },
            )
        });
        DayReport::parse([&bodies[0], &bodies[1], &bodies[2], &bodies[3]])
            .map_err(|(endpoint, problem)| format!("{endpoint}: {problem}"))
    }

    /// India's row from the vendor's example.
    fn india() -> Value {
        json!({
            "name": "India", "cca3": "IND", "id": 1, "countryKey": "387",
            "visitorCount": 100, "caseCount": 178, "chatCount": 158, "emailCount": 17,
            "cobrowseCount": 12, "screenShareCount": 0, "videocall": 2, "audiocall": 1,
            "totalVoip": 0, "voipCallCount": 0, "voipSmsCount": 0, "lat": "20", "lng": "77"
        })
    }

    fn with(mut row: Value, key: &str, value: Option<Value>) -> Value {
        let fields = row.as_object_mut().unwrap();
        match value {
            Some(value) => fields.insert(key.to_owned(), value),
            None => fields.remove(key),
        };
        row
    }

    #[test]
    fn a_renamed_count_is_an_error_naming_the_field_and_the_rows_keys() {
        let renamed = with(
            with(india(), "visitorCount", None),
            "visitor_count",
            Some(json!(100)),
        );
        let err = parse_day(Endpoint::VisitorsByLocation, json!([india(), renamed])).unwrap_err();
        assert!(
            err.starts_with(
                "visitors-by-location: unexpected shape: row 2: visitorCount is missing (renamed? \
                 the row has audiocall, caseCount, cca3,"
            ),
            "{err}"
        );
        assert!(
            err.contains(", videocall, visitor_count, voipCallCount,"),
            "{err}"
        );
        // Keys only: the row's values are visitor data.
        assert!(!err.contains("India") && !err.contains("387"), "{err}");
    }

    #[test]
    fn null_or_absent_country_counts_are_errors_not_zeros() {
        let nulled = with(india(), "caseCount", Some(Value::Null));
        let err = parse_day(Endpoint::VisitorsByLocation, json!([nulled])).unwrap_err();
        assert!(
            err.contains("row 1: caseCount is not a count: null"),
            "{err}"
        );

        for call in ["videocall", "audiocall", "voipCallCount"] {
            let err = parse_day(
                Endpoint::VisitorsByLocation,
                json!([with(india(), call, None)]),
            )
            .unwrap_err();
            assert!(err.contains(&format!("row 1: {call} is missing")), "{err}");
        }

        let err = parse_day(
            Endpoint::VisitorsByLocation,
            json!([with(india(), "name", None)]),
        )
        .unwrap_err();
        assert!(err.contains("row 1: name is missing"), "{err}");

        let unnamed = parse_day(
            Endpoint::VisitorsByLocation,
            json!([with(india(), "cca3", None)]),
        );
        assert_eq!(unnamed.unwrap().countries[0].cca3, "");
    }

    #[test]
    fn a_page_or_referrer_without_chats_or_its_text_is_an_error() {
        let page = json!([{"url": "https://a.example/", "percentage": "10.00"}]);
        assert_eq!(
            parse_day(Endpoint::PagesWithMostChats, page).unwrap_err(),
            "pages-with-most-chats: unexpected shape: row 1: chats is missing (renamed? the row \
             has percentage, url)"
        );
        let referrer = json!([{"chats": 2, "percentage": "10.00", "referrer": "direct"}]);
        let err = parse_day(Endpoint::VisitorReference, referrer).unwrap_err();
        assert!(err.contains("row 1: source is missing"), "{err}");
        let no_percentage = json!([{"source": "direct", "chats": 2}]);
        let day = parse_day(Endpoint::VisitorReference, no_percentage).unwrap();
        assert_eq!(day.referrers[0].percentage, 0.0);
    }

    #[test]
    fn hour_values_that_are_not_counts_name_the_column_and_row() {
        let good = json!({"label": "06 AM", "00 AM": 1, "02 AM": 2});
        for bad in [
            json!(-1),
            json!("NaN"),
            json!(1e300),
            json!("lots"),
            json!(true),
            json!(null),
            json!(2.5),
            json!("inf"),
            json!(1e15),
            json!(1_000_000_000_000_000_u64),
            json!(u64::MAX),
        ] {
            let row = json!({"label": "07 AM", "00 AM": 1, "02 AM": bad});
            let err = parse_day(Endpoint::MostActiveVisitTimes, json!([good, row])).unwrap_err();
            assert!(
                err.starts_with(
                    "most-active-visit-times: unexpected shape: row 2: column \"02 AM\" of the \
                     \"07 AM\" row is not a count"
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn an_hour_row_needs_a_label_and_some_counts() {
        let err =
            parse_day(Endpoint::MostActiveVisitTimes, json!([{"label": "07 AM"}])).unwrap_err();
        assert!(
            err.contains("row 1: the \"07 AM\" row has no count columns"),
            "{err}"
        );
        let err = parse_day(Endpoint::MostActiveVisitTimes, json!([{"00 AM": 1}])).unwrap_err();
        assert!(
            err.contains("row 1: label is missing (renamed? the row has 00 AM)"),
            "{err}"
        );
        let err = parse_day(Endpoint::MostActiveVisitTimes, json!([{}])).unwrap_err();
        assert!(
            err.contains("row 1: label is missing (the row is empty)"),
            "{err}"
        );
        let err = parse_day(Endpoint::MostActiveVisitTimes, json!([[1, 2]])).unwrap_err();
        assert!(err.contains("row 1: not an object: [1,2]"), "{err}");
    }

    #[test]
    fn numeric_strings_and_whole_floats_are_counts() {
        let country = with(
            with(india(), "visitorCount", Some(json!("100"))),
            "chatCount",
            Some(json!(7.0)),
        );
        let country = with(country, "caseCount", Some(json!(" 9 ")));
        let day = parse_day(Endpoint::VisitorsByLocation, json!([country])).unwrap();
        let india = &day.countries[0];
        assert_eq!((india.visitors, india.chats, india.cases), (100, 7, 9));

        let hour =
            json!({"label": "07 AM", "00 AM": "3", "02 AM": 4.0, "04 AM": "1e3", "06 AM": 0});
        let day = parse_day(Endpoint::MostActiveVisitTimes, json!([hour])).unwrap();
        assert_eq!((day.hours[0].hour, day.hours[0].activity), (7, 1007));
        let largest = json!({"label": "07 AM", "00 AM": 999_999_999_999_999_u64});
        let day = parse_day(Endpoint::MostActiveVisitTimes, json!([largest])).unwrap();
        assert_eq!(day.hours[0].activity, 999_999_999_999_999);

        let page = json!([{"url": "/", "chats": "5", "percentage": 50}]);
        let day = parse_day(Endpoint::PagesWithMostChats, page).unwrap();
        assert_eq!(day.pages[0].chats, 5);
    }

    #[test]
    fn the_key_list_is_capped_and_escaped() {
        let mut row = json!({"url": "/"});
        for i in 0..30 {
            row = with(row, &format!("k{i}"), Some(json!(i)));
        }
        row = with(
            row,
            &format!("line\nbreak{}", "x".repeat(100)),
            Some(json!(0)),
        );
        let err = parse_day(Endpoint::PagesWithMostChats, json!([row])).unwrap_err();
        assert!(err.contains("the row has k0, k1, k10,"), "{err}");
        assert!(err.contains(", k26, … 12 more)"), "{err}");
        assert!(
            !err.contains("k27") && !err.contains("url") && !err.contains('\n'),
            "{err}"
        );

        let mut row = json!({"url": "/"});
        row = with(
            row,
            &format!("line\nbreak{}", "x".repeat(100)),
            Some(json!(0)),
        );
        let err = parse_day(Endpoint::PagesWithMostChats, json!([row])).unwrap_err();
        assert!(err.contains("line\\nbreakxxx"), "{err}");
        assert!(err.ends_with("xx…, url)"), "{err}");
        assert!(!err.contains(&"x".repeat(40)), "{err}");
    }

    #[test]
    fn hour_labels_read_as_a_clock_does() {
        assert_eq!(hour_of_label("12 AM"), Some(0));
        assert_eq!(hour_of_label("05 AM"), Some(5));
        assert_eq!(hour_of_label("12 PM"), Some(12));
        assert_eq!(hour_of_label("01 PM"), Some(13));
        assert_eq!(hour_of_label("11 PM"), Some(23));
        assert_eq!(hour_of_label("14 PM"), Some(14));
        assert_eq!(hour_of_label("13 AM"), None);
        assert_eq!(hour_of_label("noon"), None);
        assert_eq!(hour_of_label("5 pm"), Some(17));
        assert_eq!(hour_of_label("05PM"), Some(17));
        assert_eq!(hour_of_label(" 05:00 AM "), Some(5));
        assert_eq!(hour_of_label("17:00"), Some(17));
        assert_eq!(hour_of_label("0"), Some(0));
        assert_eq!(hour_of_label("24"), None);
        assert_eq!(hour_of_label("12am"), Some(0));
        assert_eq!(hour_of_label("3 Pm"), Some(15));
        assert_eq!(hour_of_label("PM"), None);
        assert_eq!(
            hour_of_label("12 ㏂"),
            None,
            "a character whose last bytes are no half"
        );
    }

    #[test]
    fn unsuccessful_and_malformed_envelopes_are_errors() {
        let unsuccessful =
            json!({"data": {"visitorReference": {"success": false, "message": "quota"}}});
        let err = rows_of(
            unsuccessful.to_string().as_bytes(),
            Endpoint::VisitorReference,
        )
        .unwrap_err();
        assert!(
            matches!(err, Problem::Unsuccessful(Some(ref m)) if m == "quota"),
            "{err}"
        );

        let missing = json!({"data": {}});
        let err = rows_of(missing.to_string().as_bytes(), Endpoint::VisitorReference).unwrap_err();
        assert!(err.to_string().contains("data.visitorReference"), "{err}");

        let html = b"<html><body>Down for maintenance</body></html>";
        let err = rows_of(html, Endpoint::VisitorReference).unwrap_err();
        assert!(err.to_string().contains("Down for maintenance"), "{err}");

        let truncated = &envelope(Endpoint::VisitorReference, json!([]))[..30];
        assert!(matches!(
            rows_of(truncated, Endpoint::VisitorReference),
            Err(Problem::NotJson { .. })
        ));

        let empty = envelope(Endpoint::VisitorReference, json!([]));
        assert_eq!(
            rows_of(&empty, Endpoint::VisitorReference).unwrap().len(),
            0
        );
    }
}
