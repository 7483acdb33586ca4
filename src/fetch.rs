//! Fetch: one day of a team's Visitor Analytics, all four reports, concurrently.
//!
//! The API is loose (numbers arrive as numbers or strings, error pages arrive as HTML), so every
//! body is parsed here into [`DayReport`] or rejected with an error that names the report and
//! the account. A report that can't be fetched fails the whole day: never a digest of zeros.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::config::{AccountId, Secret, Team};
use crate::http::{self, Attempt, RetryPolicy};
use crate::schedule::Window;

/// The largest report body we accept; a real day is a few hundred KiB at most.
const BODY_CAP: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    VisitorsByLocation,
    MostActiveVisitTimes,
    PagesWithMostChats,
    VisitorReference,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::VisitorsByLocation,
        Endpoint::MostActiveVisitTimes,
        Endpoint::PagesWithMostChats,
        Endpoint::VisitorReference,
    ];

    /// The last segment of the endpoint's path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::VisitorsByLocation => "visitors-by-location",
            Endpoint::MostActiveVisitTimes => "most-active-visit-times",
            Endpoint::PagesWithMostChats => "pages-with-most-chats",
            Endpoint::VisitorReference => "visitor-reference",
        }
    }

    /// The key under `data` that holds the report.
    pub fn key(self) -> &'static str {
        match self {
            Endpoint::VisitorsByLocation => "visitorsByLocation",
            Endpoint::MostActiveVisitTimes => "mostActiveVisitTimes",
            Endpoint::PagesWithMostChats => "pagesWithMostChats",
            Endpoint::VisitorReference => "visitorReference",
        }
    }

    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

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
            countries: parse_report(Endpoint::VisitorsByLocation, countries, parse_country)?,
            hours: parse_report(Endpoint::MostActiveVisitTimes, hours, parse_hour)?,
            pages: parse_report(Endpoint::PagesWithMostChats, pages, |r| {
                parse_source(r, "url")
            })?,
            referrers: parse_report(Endpoint::VisitorReference, referrers, |r| {
                parse_source(r, "source")
            })?,
        })
    }
}

fn parse_report<T>(
    endpoint: Endpoint,
    body: &[u8],
    parse: impl Fn(&Map<String, Value>) -> Result<T, String>,
) -> Result<Vec<T>, (Endpoint, Problem)> {
    rows_of(body, endpoint)
        .and_then(|rows| parse_rows(&rows, parse))
        .map_err(|problem| (endpoint, problem))
}

#[derive(Debug, thiserror::Error)]
#[error("{endpoint} report for account {account}: {problem}")]
pub struct FetchError {
    pub endpoint: Endpoint,
    pub account: AccountId,
    pub problem: Problem,
}

impl FetchError {
    /// The error for a team's report, with the team's API key scrubbed from anything the
    /// server said: an error page may echo the request's headers.
    fn new(team: &Team, endpoint: Endpoint, problem: Problem) -> FetchError {
        let key = [team.api_key.expose()];
        let scrub = |text: String| http::redact(&text, &key);
        let problem = match problem {
            Problem::Status { status, excerpt } => Problem::Status {
                status,
                excerpt: scrub(excerpt),
            },
            Problem::NotJson { reason, excerpt } => Problem::NotJson {
                reason: scrub(reason),
                excerpt: scrub(excerpt),
            },
            Problem::Unsuccessful(message) => Problem::Unsuccessful(message.map(scrub)),
            Problem::Shape(text) => Problem::Shape(scrub(text)),
            Problem::Network { host, cause } => Problem::Network {
                host: scrub(host),
                cause: scrub(cause),
            },
            other => other,
        };
        FetchError {
            endpoint,
            account: team.account_id.clone(),
            problem,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("API key rejected (HTTP {0}): check the team's api_key / api_key_env for this account")]
    Unauthorized(u16),
    #[error(
        "not found (HTTP 404): check account_id and acquire.base_url; the endpoint path may have changed"
    )]
    NotFound,
    #[error("HTTP {status}: {excerpt}")]
    Status { status: u16, excerpt: String },
    #[error("rate limited (HTTP 429) until the retry budget ran out")]
    RateLimited,
    #[error("could not reach the API at {host}: {cause}")]
    Network { host: String, cause: String },
    #[error("{0}")]
    Body(#[from] http::BodyError),
    #[error("the response is not JSON ({reason}); it began: {excerpt}")]
    NotJson { reason: String, excerpt: String },
    #[error("the API answered success: false{}", .0.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Unsuccessful(Option<String>),
    #[error("unexpected shape: {0}")]
    Shape(String),
}

/// The Acquire API client: one connection pool, one cap on concurrent requests shared by every
/// team, and a retry policy.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The connect timeout and the whole request's, for errors to say which ran out.
    timeouts: (Duration, Duration),
    in_flight: Arc<Semaphore>,
    retry: RetryPolicy,
}

impl Client {
    pub fn with_retry(timeout: Duration, concurrency: usize, retry: RetryPolicy) -> Client {
        let connect_timeout = timeout.min(Duration::from_secs(10));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            .user_agent(concat!("acquire-digest/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend is compiled in");
        Client {
            http,
            timeouts: (connect_timeout, timeout),
            in_flight: Arc::new(Semaphore::new(concurrency.max(1))),
            retry,
        }
    }

    /// All four reports of the window's day for one team.
    pub async fn fetch_day(&self, team: &Team, window: &Window) -> Result<DayReport, FetchError> {
        let request = |endpoint| self.fetch_report(team, window, endpoint);
        let (countries, hours, pages, referrers) = tokio::try_join!(
            request(Endpoint::VisitorsByLocation),
            request(Endpoint::MostActiveVisitTimes),
            request(Endpoint::PagesWithMostChats),
            request(Endpoint::VisitorReference),
        )?;
        DayReport::parse([&countries, &hours, &pages, &referrers])
            .map_err(|(endpoint, problem)| FetchError::new(team, endpoint, problem))
    }

    /// The window's country rows alone: they hold both headline totals, so a day needed only
    /// for its totals costs one request, not four.
    pub async fn fetch_countries(
        &self,
        team: &Team,
        window: &Window,
    ) -> Result<Vec<CountryRow>, FetchError> {
        let body = self
            .fetch_report(team, window, Endpoint::VisitorsByLocation)
            .await?;
        parse_report(Endpoint::VisitorsByLocation, &body, parse_country)
            .map_err(|(endpoint, problem)| FetchError::new(team, endpoint, problem))
    }

    /// One request with the team's key, for yesterday's smallest report and without retries:
    /// whether the account's API accepts the key (`check --online`).
    pub async fn check_key(&self, team: &Team) -> Result<(), FetchError> {
        let window = Window::yesterday(team.zone, chrono::Utc::now());
        self.fetch_report(team, &window, Endpoint::VisitorsByLocation)
            .await
            .map(drop)
    }

    /// The rows of one report, as JSON values still to be parsed.
    async fn fetch_report(
        &self,
        team: &Team,
        window: &Window,
        endpoint: Endpoint,
    ) -> Result<Vec<u8>, FetchError> {
        let url = endpoint_url(&team.api_base, endpoint);
        let query = [
            ("start_date", window.start_date()),
            ("end_date", window.end_date()),
            ("offset", window.offset_text()),
            ("output", "json".to_owned()),
        ];
        let attempt = || async {
            let _permit = self.in_flight.acquire().await.expect("never closed");
            let started = std::time::Instant::now();
            let sent = self
                .http
                .get(url.clone())
                .query(&query)
                .header(AUTHORIZATION, bearer(&team.api_key))
                .send()
                .await;
            let status = sent.as_ref().ok().map(|r| r.status().as_u16());
            crate::telemetry::api_request(endpoint.path(), status, started.elapsed());
            classify(sent, endpoint, &url, self.timeouts).await
        };
        self.retry
            .run(attempt)
            .await
            .map_err(|problem| FetchError::new(team, endpoint, problem))
    }
}

fn bearer(key: &Secret) -> String {
    format!("Bearer {}", key.expose())
}

fn endpoint_url(base: &url::Url, endpoint: Endpoint) -> url::Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("http(s) URLs have paths")
        .pop_if_empty()
        .extend(["v1", "analytics", "chat", endpoint.path()]);
    url
}

async fn classify(
    sent: Result<reqwest::Response, reqwest::Error>,
    endpoint: Endpoint,
    url: &url::Url,
    (connect_timeout, timeout): (Duration, Duration),
) -> Attempt<Vec<u8>, Problem> {
    let host = || http::host_of(url);
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            let cause = http::NoAnswer::of(&e, connect_timeout, timeout).cause;
            let error = Problem::Network {
                host: host(),
                cause,
            };
            return match http::is_transient_error(&e) {
                true => Attempt::Retry { error, after: None },
                false => Attempt::Fail(error),
            };
        }
    };
    let status = response.status();
    let after = http::retry_after(response.headers(), SystemTime::now());
    if status.is_success() {
        return match http::read_capped(response, BODY_CAP).await {
            Ok(body) => Attempt::Done(body),
            Err(http::BodyError::Read(e)) => Attempt::Retry {
                error: Problem::Network {
                    host: host(),
                    cause: http::NoAnswer::of(&e, connect_timeout, timeout).cause,
                },
                after: None,
            },
            Err(e) => Attempt::Fail(e.into()),
        };
    }
    let body = http::read_capped(response, 64 * 1024)
        .await
        .unwrap_or_default();
    tracing::debug!(%endpoint, status = status.as_u16(), "Acquire answered with an error status");
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Attempt::Fail(Problem::Unauthorized(status.as_u16()))
        }
        StatusCode::NOT_FOUND => Attempt::Fail(Problem::NotFound),
        StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
            error: Problem::RateLimited,
            after,
        },
        _ => {
            let problem = Problem::Status {
                status: status.as_u16(),
                excerpt: http::excerpt(&body),
            };
            if http::is_transient(status) {
                Attempt::Retry {
                    error: problem,
                    after,
                }
            } else {
                Attempt::Fail(problem)
            }
        }
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
    rows: &[Value],
    parse: impl Fn(&Map<String, Value>) -> Result<T, String>,
) -> Result<Vec<T>, Problem> {
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let parsed = match row {
                Value::Object(fields) => parse(fields),
                other => Err(format!("not an object: {}", excerpt(other))),
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
/// listed because the usual cause is an upstream rename such as `visitor_count`.
fn missing(fields: &Map<String, Value>, key: &str) -> String {
    if fields.is_empty() {
        return format!("{key} is missing (the row is empty)");
    }
    let mut keys: Vec<String> = fields.keys().take(KEYS_SHOWN).map(|k| shorten(k)).collect();
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
fn count(fields: &Map<String, Value>, key: &str) -> Result<u64, String> {
    match fields.get(key) {
        None => Err(missing(fields, key)),
        Some(value) => {
            count_value(value).ok_or_else(|| format!("{key} is not a count: {}", excerpt(value)))
        }
    }
}

fn count_value(value: &Value) -> Option<u64> {
    let number = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (number.is_finite() && number >= 0.0 && number.fract() == 0.0 && number < 1e15)
        .then_some(number as u64)
}

fn text(fields: &Map<String, Value>, key: &str) -> Result<String, String> {
    match fields.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        None => Err(missing(fields, key)),
        Some(Value::Null) => Err(format!("{key} is null")),
        Some(other) => Err(format!("{key} is not text: {}", excerpt(other))),
    }
}

fn parse_country(fields: &Map<String, Value>) -> Result<CountryRow, String> {
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
fn parse_hour(fields: &Map<String, Value>) -> Result<HourRow, String> {
    let label = text(fields, "label")?;
    let hour = hour_of_label(&label).ok_or_else(|| {
        format!(
            "unrecognised hour label {}",
            http::excerpt(format!("{label:?}").as_bytes())
        )
    })?;
    let mut activity = 0u64;
    let mut columns = 0;
    for (key, value) in fields.iter().filter(|(key, _)| key.as_str() != "label") {
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
    let label = label.trim().to_ascii_uppercase();
    let (clock, half) = match label
        .strip_suffix("AM")
        .or_else(|| label.strip_suffix("PM"))
    {
        Some(clock) => (clock.trim(), &label[label.len() - 2..]),
        None => (label.as_str(), ""),
    };
    let hours = clock.split_once(':').map_or(clock, |(hours, _)| hours);
    let number: u8 = hours.parse().ok()?;
    match (number, half) {
        (0..=23, "") => Some(number),
        (12, "AM") => Some(0),
        (12, "PM") => Some(12),
        (1..=11, "AM") => Some(number),
        (1..=11, "PM") => Some(number + 12),
        (0, "AM") | (13..=23, "PM") => Some(number),
        _ => None,
    }
}

fn parse_source(fields: &Map<String, Value>, key: &str) -> Result<ChatSource, String> {
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
        let body = include_bytes!("simulator/reference/visitors-by-location.json");
        let rows = rows_of(body, Endpoint::VisitorsByLocation).unwrap();
        let countries = parse_rows(&rows, parse_country).unwrap();
        assert_eq!(countries.len(), 6);
        let india = countries.iter().find(|c| c.cca3 == "IND").unwrap();
        assert_eq!((india.visitors, india.chats, india.calls), (100, 158, 3));

        let body = include_bytes!("simulator/reference/most-active-visit-times.json");
        let rows = rows_of(body, Endpoint::MostActiveVisitTimes).unwrap();
        let hours = parse_rows(&rows, parse_hour).unwrap();
        assert_eq!(hours.len(), 24);
        assert_eq!((hours[0].hour, hours[0].label.as_str()), (5, "05 AM"));
        assert!(hours.iter().any(|h| h.hour == 0 && h.label == "12 AM"));

        let body = include_bytes!("simulator/reference/pages-with-most-chats.json");
        let rows = rows_of(body, Endpoint::PagesWithMostChats).unwrap();
        let pages = parse_rows(&rows, |r| parse_source(r, "url")).unwrap();
        assert_eq!(pages[0].percentage, 89.86);
    }

    #[test]
    fn the_reference_day_parses_whole() {
        let day = DayReport::parse([
            include_bytes!("simulator/reference/visitors-by-location.json"),
            include_bytes!("simulator/reference/most-active-visit-times.json"),
            include_bytes!("simulator/reference/pages-with-most-chats.json"),
            include_bytes!("simulator/reference/visitor-reference.json"),
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
                 the row has name, cca3, id,"
            ),
            "{err}"
        );
        assert!(err.contains(", visitor_count"), "{err}");
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
             has url, percentage)"
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
        assert!(err.contains("the row has url, k0, k1,"), "{err}");
        assert!(err.contains(", k18, … 12 more)"), "{err}");
        assert!(!err.contains("k19") && !err.contains('\n'), "{err}");

        let mut row = json!({"url": "/"});
        row = with(
            row,
            &format!("line\nbreak{}", "x".repeat(100)),
            Some(json!(0)),
        );
        let err = parse_day(Endpoint::PagesWithMostChats, json!([row])).unwrap_err();
        assert!(err.contains("url, line\\nbreakxxx"), "{err}");
        assert!(err.ends_with("xx…)"), "{err}");
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

    #[test]
    fn endpoint_urls_append_to_the_base_path() {
        let base = url::Url::parse("http://127.0.0.1:9/acme/api").unwrap();
        assert_eq!(
            endpoint_url(&base, Endpoint::VisitorReference).as_str(),
            "http://127.0.0.1:9/acme/api/v1/analytics/chat/visitor-reference"
        );
        let slash = url::Url::parse("https://acme.acquire.io/api/").unwrap();
        assert_eq!(
            endpoint_url(&slash, Endpoint::PagesWithMostChats).as_str(),
            "https://acme.acquire.io/api/v1/analytics/chat/pages-with-most-chats"
        );
    }
}
