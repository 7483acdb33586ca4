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
use serde_json::Value;
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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct HourRow {
    pub hour: u8,
    pub label: String,
    pub activity: u64,
}

/// A page (by `url`) or a referrer (by `source`) with its chats.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSource {
    pub text: String,
    pub chats: u64,
    pub percentage: f64,
}

/// A day of analytics as the API reported it, parsed and checked.
#[derive(Debug, Clone, PartialEq, Default)]
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
    parse: impl Fn(&Value) -> Result<T, String>,
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
            Problem::Network(text) => Problem::Network(scrub(text)),
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
    #[error("could not reach the API: {0}")]
    Network(String),
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
    in_flight: Arc<Semaphore>,
    retry: RetryPolicy,
}

impl Client {
    pub fn with_retry(timeout: Duration, concurrency: usize, retry: RetryPolicy) -> Client {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("acquire-digest/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend is compiled in");
        Client {
            http,
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
            let sent = self
                .http
                .get(url.clone())
                .query(&query)
                .header(AUTHORIZATION, bearer(&team.api_key))
                .send()
                .await;
            classify(sent, endpoint).await
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
) -> Attempt<Vec<u8>, Problem> {
    let response = match sent {
        Ok(response) => response,
        // `without_url`: the URL holds the account, and in tests a key-bearing base.
        Err(e) if http::is_transient_error(&e) => {
            return Attempt::Retry {
                error: Problem::Network(e.without_url().to_string()),
                after: None,
            };
        }
        Err(e) => return Attempt::Fail(Problem::Network(e.without_url().to_string())),
    };
    let status = response.status();
    let after = http::retry_after(response.headers(), SystemTime::now());
    if status.is_success() {
        return match http::read_capped(response, BODY_CAP).await {
            Ok(body) => Attempt::Done(body),
            Err(http::BodyError::Read(e)) => Attempt::Retry {
                error: Problem::Network(e.to_string()),
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
    let json: Value = serde_json::from_slice(body).map_err(|e| Problem::NotJson {
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
    match report.pointer("/data/graphRow/data") {
        Some(Value::Array(rows)) => Ok(rows.clone()),
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
    parse: impl Fn(&Value) -> Result<T, String>,
) -> Result<Vec<T>, Problem> {
    rows.iter()
        .enumerate()
        .map(|(i, row)| parse(row).map_err(|e| Problem::Shape(format!("row {}: {e}", i + 1))))
        .collect()
}

/// A count: a non-negative integer, given as a number or a numeric string. Absent or null is 0.
fn count(row: &Value, key: &str) -> Result<u64, String> {
    match row.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(value) => count_value(value).ok_or_else(|| format!("{key} is not a count: {value}")),
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

fn text(row: &Value, key: &str) -> Result<String, String> {
    match row.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Null) | None => Err(format!("{key} is missing")),
        Some(other) => Err(format!("{key} is not text: {other}")),
    }
}

fn parse_country(row: &Value) -> Result<CountryRow, String> {
    Ok(CountryRow {
        name: text(row, "name")?,
        cca3: text(row, "cca3").unwrap_or_default(),
        visitors: count(row, "visitorCount")?,
        chats: count(row, "chatCount")?,
        cases: count(row, "caseCount")?,
        emails: count(row, "emailCount")?,
        cobrowse: count(row, "cobrowseCount")?,
        calls: count(row, "videocall")? + count(row, "audiocall")? + count(row, "voipCallCount")?,
    })
}

fn parse_hour(row: &Value) -> Result<HourRow, String> {
    let label = text(row, "label")?;
    let hour = hour_of_label(&label).ok_or_else(|| format!("unrecognised hour label {label:?}"))?;
    let Value::Object(columns) = row else {
        return Err("not an object".into());
    };
    let activity = columns
        .iter()
        .filter(|(key, _)| key.as_str() != "label")
        .filter_map(|(_, value)| count_value(value))
        .fold(0u64, u64::saturating_add);
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

fn parse_source(row: &Value, key: &str) -> Result<ChatSource, String> {
    let percentage = match row.get("percentage") {
        None | Some(Value::Null) => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| format!("percentage is not a number: {s:?}"))?,
        Some(other) => return Err(format!("percentage is not a number: {other}")),
    };
    if !(percentage.is_finite() && (0.0..=100.0).contains(&percentage)) {
        return Err(format!("percentage {percentage} is outside 0-100"));
    }
    Ok(ChatSource {
        text: text(row, key)?,
        chats: count(row, "chats")?,
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
    fn counts_may_be_numbers_or_numeric_strings() {
        let row =
            json!({"name": "India", "visitorCount": "100", "chatCount": 7.0, "caseCount": null});
        let country = parse_country(&row).unwrap();
        assert_eq!(
            (country.visitors, country.chats, country.cases),
            (100, 7, 0)
        );
        let bad = json!({"name": "India", "visitorCount": "lots"});
        let err = parse_country(&bad).unwrap_err();
        assert!(err.contains("visitorCount"), "{err}");
        assert!(parse_country(&json!({"name": "X", "visitorCount": -3})).is_err());
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
