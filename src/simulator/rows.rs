//! An answer's rows, typed, so a body is written straight from them: building a `serde_json`
//! tree per answer (an ordered map per row, a string per key) and serializing it was about
//! two fifths of the simulator's CPU, CPU that a benchmark's simulator takes from the daemon
//! it measures.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::model;
use crate::fetch::Endpoint;

/// The counts of a country row, in the order the API sends them.
pub(super) const COUNTRY_COUNTS: [&str; 11] = [
    "visitorCount",
    "caseCount",
    "chatCount",
    "emailCount",
    "cobrowseCount",
    "screenShareCount",
    "videocall",
    "audiocall",
    "totalVoip",
    "voipCallCount",
    "voipSmsCount",
];

/// The count columns of a most-active-visit-times row, as the reference names them.
pub(super) const HOUR_COLUMNS: [&str; model::HOUR_COLUMNS] = [
    "00 AM", "02 AM", "04 AM", "06 AM", "08 AM", "10 AM", "12 PM", "14 PM", "16 PM", "18 PM",
    "20 PM", "22 PM",
];

/// The API's hour labels: "12 AM" is midnight, "12 PM" noon.
pub(super) fn clock_label(hour: u32) -> String {
    let twelve = match hour % 12 {
        0 => 12,
        h => h,
    };
    format!("{twelve:02} {}", if hour < 12 { "AM" } else { "PM" })
}

/// The rows of one answer, serialized as the JSON array the API sends under `graphRow.data`.
#[derive(Debug, Clone)]
pub(super) enum Rows {
    Countries(Vec<CountryRow>),
    Sources(Vec<SourceRow>),
    Hours(Vec<HourRow>),
}

#[derive(Debug, Clone)]
pub(super) struct CountryRow {
    pub name: Cow<'static, str>,
    pub cca3: Cow<'static, str>,
    pub id: u64,
    pub country_key: String,
    /// In [`COUNTRY_COUNTS`]' order.
    pub counts: [Count; COUNTRY_COUNTS.len()],
    pub lat: Cow<'static, str>,
    pub lng: Cow<'static, str>,
}

/// A page or a referrer with its chats and its share of them.
#[derive(Debug, Clone)]
pub(super) struct SourceRow {
    /// What the text is called: [`PAGE`] or [`REFERRER`].
    pub key: &'static str,
    pub text: Cow<'static, str>,
    pub chats: Count,
    pub percentage: String,
}

/// A most-active-visit-times row: the hour its label names, and its cells in
/// [`HOUR_COLUMNS`]' order.
#[derive(Debug, Clone)]
pub(super) struct HourRow {
    pub hour: u32,
    pub cells: [u64; HOUR_COLUMNS.len()],
}

pub(super) const PAGE: &str = "url";
pub(super) const REFERRER: &str = "source";

/// A count as the real API sends it: a number, or (`quoted`) a numeric string.
#[derive(Debug, Clone, Copy)]
pub(super) struct Count {
    pub n: u64,
    pub quoted: bool,
}

impl Count {
    pub fn number(n: u64) -> Count {
        Count { n, quoted: false }
    }

    /// A count the reference wrote, number or numeric string.
    fn of(value: Option<&Value>) -> Count {
        match value {
            Some(Value::String(s)) => Count {
                n: s.parse().unwrap_or_default(),
                quoted: true,
            },
            other => Count::number(other.and_then(Value::as_u64).unwrap_or_default()),
        }
    }

    /// Adds a later day's count, keeping this one's number-or-string, so a sum is as loose
    /// as a day.
    fn add_later(&mut self, later: Count) {
        self.n += later.n;
    }
}

impl Rows {
    /// The reference example's rows of `endpoint`, from its JSON.
    pub fn of_reference(endpoint: Endpoint, rows: &[Value]) -> Rows {
        let text = |row: &Value, key: &str| -> String {
            let text = row.get(key).and_then(Value::as_str).unwrap_or_default();
            text.to_owned()
        };
        let sources = |key: &'static str| {
            let rows = rows.iter().map(|row| SourceRow {
                key,
                text: text(row, key).into(),
                chats: Count::of(row.get("chats")),
                percentage: text(row, "percentage"),
            });
            Rows::Sources(rows.collect())
        };
        match endpoint {
            Endpoint::VisitorsByLocation => Rows::Countries(
                rows.iter()
                    .map(|row| CountryRow {
                        name: text(row, "name").into(),
                        cca3: text(row, "cca3").into(),
                        id: row.get("id").and_then(Value::as_u64).unwrap_or_default(),
                        country_key: text(row, "countryKey"),
                        counts: COUNTRY_COUNTS.map(|count| Count::of(row.get(count))),
                        lat: text(row, "lat").into(),
                        lng: text(row, "lng").into(),
                    })
                    .collect(),
            ),
            Endpoint::PagesWithMostChats => sources(PAGE),
            Endpoint::VisitorReference => sources(REFERRER),
            Endpoint::MostActiveVisitTimes => Rows::Hours(
                rows.iter()
                    .filter_map(|row| {
                        let label = row.get("label").and_then(Value::as_str)?;
                        let hour = (0..24).find(|&h| clock_label(h) == label)?;
                        let cells = HOUR_COLUMNS.map(|column| Count::of(row.get(column)).n);
                        Some(HourRow { hour, cells })
                    })
                    .collect(),
            ),
        }
    }

    /// Adds a day's rows of the same list endpoint, matching rows by country name, page URL
    /// or referrer; the rest of a row (names, ids, coordinates) is the first day's.
    pub fn add_day(&mut self, day: Rows) {
        match (self, day) {
            (Rows::Countries(sum), Rows::Countries(day)) => add_by(
                sum,
                day,
                |row| &row.name,
                |seen, row| {
                    for (seen, count) in seen.counts.iter_mut().zip(row.counts) {
                        seen.add_later(count);
                    }
                },
            ),
            (Rows::Sources(sum), Rows::Sources(day)) => add_by(
                sum,
                day,
                |row| &row.text,
                |seen, row| seen.chats.add_later(row.chats),
            ),
            _ => unreachable!("a window's days are one list endpoint's; hours are summed by hour"),
        }
    }

    /// Each page's or referrer's share of the summed chats; country rows have no share.
    pub fn recompute_percentages(&mut self) {
        let Rows::Sources(rows) = self else {
            return;
        };
        let total: u64 = rows.iter().map(|row| row.chats.n).sum();
        if total == 0 {
            return;
        }
        for row in rows {
            row.percentage = percentage(row.chats.n, total);
        }
    }

    /// The rows as JSON values, for tests.
    #[cfg(test)]
    pub fn values(&self) -> Vec<Value> {
        match serde_json::to_value(self) {
            Ok(Value::Array(rows)) => rows,
            other => unreachable!("rows serialize as an array, not {other:?}"),
        }
    }

    /// Each row's fields in the order the API sends them, for CSV's columns: a `Value` would
    /// sort them.
    pub fn fields(&self) -> Vec<Vec<(String, Value)>> {
        let text = serde_json::to_string(self).expect("rows serialize");
        let rows: Vec<Fields> = serde_json::from_str(&text).expect("rows read back");
        rows.into_iter().map(|row| row.0).collect()
    }
}

/// A row's fields in the order written.
pub(super) struct Fields(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a row")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Fields, M::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

/// `part` of `total` as the API's "12.34" string.
pub(super) fn percentage(part: u64, total: u64) -> String {
    format!("{:.2}", part as f64 * 100.0 / total as f64)
}

fn add_by<R>(sum: &mut Vec<R>, day: Vec<R>, key: impl Fn(&R) -> &str, merge: impl Fn(&mut R, R)) {
    for row in day {
        match sum.iter_mut().find(|seen| key(seen) == key(&row)) {
            Some(seen) => merge(seen, row),
            None => sum.push(row),
        }
    }
}

impl Serialize for Rows {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Rows::Countries(rows) => rows.serialize(serializer),
            Rows::Sources(rows) => rows.serialize(serializer),
            Rows::Hours(rows) => rows.serialize(serializer),
        }
    }
}

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.quoted {
            serializer.collect_str(&self.n)
        } else {
            serializer.serialize_u64(self.n)
        }
    }
}

impl Serialize for CountryRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(6 + COUNTRY_COUNTS.len()))?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("cca3", &self.cca3)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("countryKey", &self.country_key)?;
        for (name, count) in COUNTRY_COUNTS.iter().zip(&self.counts) {
            map.serialize_entry(name, count)?;
        }
        map.serialize_entry("lat", &self.lat)?;
        map.serialize_entry("lng", &self.lng)?;
        map.end()
    }
}

impl Serialize for SourceRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry(self.key, &self.text)?;
        map.serialize_entry("chats", &self.chats)?;
        map.serialize_entry("percentage", &self.percentage)?;
        map.end()
    }
}

impl Serialize for HourRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1 + HOUR_COLUMNS.len()))?;
        map.serialize_entry("label", &clock_label(self.hour))?;
        for (column, cell) in HOUR_COLUMNS.iter().zip(&self.cells) {
            map.serialize_entry(column, cell)?;
        }
        map.end()
    }
}
