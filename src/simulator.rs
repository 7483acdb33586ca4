//! A local stand-in for Acquire's Visitor Analytics API, beside [`fetch`](crate::fetch): the
//! same four endpoints, paths, query, Bearer check and JSON (or CSV) shapes, serving
//! deterministic, plausible days so `demo`, the tests and the benchmarks need no account.
//!
//! - It answers at any path prefix ending in `/v1/analytics/chat/<endpoint>`; the first segment
//!   of the prefix (`/acme/api/...`), or else the host's first label, is the account id, which
//!   with the date seeds the day's data.
//! - 2021-03-18 is the API reference's example day, served byte for byte.
//! - Hour rows start at the hour of `start_date`, as the real API's do; about one day in ten
//!   is empty (empty lists, all-zero hours), as quiet accounts are.
//! - Counts are sometimes numeric strings and percentages always are, because the real API
//!   is that loose and the client must cope.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, NaiveDateTime, Timelike};
use serde_json::{Map, Value, json};

use crate::fetch::Endpoint;
use crate::schedule::parse_fixed_offset;

/// The API reference's example day.
pub const REFERENCE_DATE: NaiveDate = NaiveDate::from_ymd_opt(2021, 3, 18).expect("a real date");

const REFERENCE: [(Endpoint, &str); 4] = [
    (
        Endpoint::VisitorsByLocation,
        include_str!("simulator/reference/visitors-by-location.json"),
    ),
    (
        Endpoint::MostActiveVisitTimes,
        include_str!("simulator/reference/most-active-visit-times.json"),
    ),
    (
        Endpoint::PagesWithMostChats,
        include_str!("simulator/reference/pages-with-most-chats.json"),
    ),
    (
        Endpoint::VisitorReference,
        include_str!("simulator/reference/visitor-reference.json"),
    ),
];

const MAINTENANCE_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Acquire is down for maintenance</title></head>\n<body><h1>We'll be back shortly</h1><p>Acquire is undergoing scheduled maintenance.</p></body></html>\n";

#[derive(Debug, Clone, Default)]
pub struct SimulatorOptions {
    /// Added before every answer.
    pub latency: Duration,
    /// The fraction of requests (0-1) answered with a 503 HTML maintenance page.
    pub fail_rate: f64,
    /// Accept only this bearer token; `None` accepts any non-empty one.
    pub api_key: Option<String>,
}

/// Serves the simulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: SimulatorOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new().fallback(answer).with_state(Arc::new(options));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A simulator running in this process; it stops when dropped.
pub struct RunningSimulator {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningSimulator {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `[acquire] base_url` that points a team at this simulator.
    pub fn base_url(&self) -> String {
        format!("http://{}/{{account_id}}/api", self.addr)
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the simulator on 127.0.0.1 at a free port.
pub async fn spawn(options: SimulatorOptions) -> std::io::Result<RunningSimulator> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, options, std::future::pending()));
    Ok(RunningSimulator { addr, task })
}

async fn answer(
    State(options): State<Arc<SimulatorOptions>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !options.latency.is_zero() {
        tokio::time::sleep(options.latency).await;
    }
    if options.fail_rate > 0.0 && fastrand::f64() < options.fail_rate {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            MAINTENANCE_PAGE,
        )
            .into_response();
    }
    let Some((prefix, endpoint)) = uri.path().rsplit_once("/v1/analytics/chat/") else {
        return error(StatusCode::NOT_FOUND, "Not found");
    };
    let Some(endpoint) = Endpoint::from_path(endpoint) else {
        return error(StatusCode::NOT_FOUND, "Not found");
    };
    if !authorized(&headers, options.api_key.as_deref()) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized: invalid API key");
    }
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let request = match Request::parse(&query) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let account = account_of(prefix, &headers);
    let rows = rows(endpoint, &account, &request);
    if request.csv {
        return (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            to_csv(&rows),
        )
            .into_response();
    }
    let body = match reference_body(endpoint, &request) {
        Some(exact) => exact.to_owned(),
        None => envelope(endpoint, rows).to_string(),
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"success": false, "message": message})),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    match expected {
        Some(key) => token == key,
        None => !token.is_empty(),
    }
}

/// `/acme/api` → `acme`; with no prefix, the host's first label (`acme.acquire.io`).
fn account_of(prefix: &str, headers: &HeaderMap) -> String {
    let from_path = prefix.split('/').find(|s| !s.is_empty());
    let from_host = || {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.split(['.', ':']).next())
    };
    from_path
        .or_else(from_host)
        .unwrap_or("account")
        .to_ascii_lowercase()
}

/// The query, checked as the real API checks it.
struct Request {
    start: NaiveDateTime,
    csv: bool,
}

impl Request {
    fn parse(query: &HashMap<String, String>) -> Result<Request, String> {
        let moment = |key: &str| {
            let text = query
                .get(key)
                .ok_or_else(|| format!("{key} is required (YYYY-MM-DD hh:mm:ss)"))?;
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").map_err(|_| {
                format!("{key} {text:?} is not a date in the format YYYY-MM-DD hh:mm:ss")
            })
        };
        let start = moment("start_date")?;
        let end = moment("end_date")?;
        if end < start {
            return Err("end_date is before start_date".into());
        }
        if let Some(offset) = query.get("offset")
            && parse_fixed_offset(offset).is_none()
        {
            return Err(format!("offset {offset:?} is not an offset such as +05:30"));
        }
        let csv = match query.get("output").map(String::as_str) {
            None | Some("json") => false,
            Some("csv") => true,
            Some(other) => return Err(format!("output {other:?} must be json or csv")),
        };
        Ok(Request { start, csv })
    }
}

/// The reference example, exactly, for its day in any offset: it was published without saying
/// which window it covers, so it is the day's answer whatever the window.
fn reference_body(endpoint: Endpoint, request: &Request) -> Option<&'static str> {
    (request.start.date() == REFERENCE_DATE)
        .then(|| REFERENCE.iter().find(|(e, _)| *e == endpoint))
        .flatten()
        .map(|(_, body)| *body)
}

fn envelope(endpoint: Endpoint, rows: Vec<Value>) -> Value {
    json!({"data": {endpoint.key(): {"data": {"graphRow": {"data": rows}}, "success": true, "output": "json"}}})
}

fn rows(endpoint: Endpoint, account: &str, request: &Request) -> Vec<Value> {
    if let Some(body) = reference_body(endpoint, request) {
        let json: Value = serde_json::from_str(body).expect("the reference examples are JSON");
        let pointer = format!("/data/{}/data/graphRow/data", endpoint.key());
        return json
            .pointer(&pointer)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
    }
    let day = Day::new(account, request.start.date());
    match endpoint {
        Endpoint::VisitorsByLocation => day.countries(),
        Endpoint::MostActiveVisitTimes => day.hours(request.start.hour()),
        Endpoint::PagesWithMostChats => day.pages(account),
        Endpoint::VisitorReference => day.referrers(),
    }
}

/// One CSV line per row, the first row's keys as the header.
fn to_csv(rows: &[Value]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let keys: Vec<&String> = rows
        .first()
        .and_then(Value::as_object)
        .map(|row| row.keys().collect())
        .unwrap_or_default();
    if !keys.is_empty() {
        writer.write_record(&keys).expect("writes to memory");
    }
    for row in rows {
        let cells = keys.iter().map(|key| match row.get(key.as_str()) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        });
        writer.write_record(cells).expect("writes to memory");
    }
    String::from_utf8(writer.into_inner().expect("writes to memory"))
        .expect("CSV of UTF-8 is UTF-8")
}

const COUNTRIES: [(&str, &str, &str, &str); 24] = [
    ("United States", "USA", "38", "-97"),
    ("India", "IND", "20", "77"),
    ("United Kingdom", "GBR", "54", "-2"),
    ("Germany", "DEU", "51", "9"),
    ("Brazil", "BRA", "-10", "-55"),
    ("Canada", "CAN", "60", "-95"),
    ("Australia", "AUS", "-27", "133"),
    ("France", "FRA", "46", "2"),
    ("Japan", "JPN", "36", "138"),
    ("Mexico", "MEX", "23", "-102"),
    ("Netherlands", "NLD", "52.5", "5.75"),
    ("Spain", "ESP", "40", "-4"),
    ("Singapore", "SGP", "1.36666666", "103.8"),
    ("Nigeria", "NGA", "10", "8"),
    ("South Africa", "ZAF", "-29", "24"),
    ("Philippines", "PHL", "13", "122"),
    ("Indonesia", "IDN", "-5", "120"),
    ("Poland", "POL", "52", "20"),
    ("Sweden", "SWE", "62", "15"),
    ("United Arab Emirates", "ARE", "24", "54"),
    ("Pakistan", "PAK", "30", "70"),
    ("Côte d'Ivoire", "CIV", "8", "-5"),
    ("Türkiye", "TUR", "39", "35"),
    ("New Zealand", "NZL", "-41", "174"),
];

const PAGES: [&str; 12] = [
    "/",
    "/pricing",
    "/features",
    "/contact",
    "/blog/choosing-a-live-chat-tool",
    "/docs/getting-started",
    "/signup",
    "/checkout?step=payment",
    "/integrations/slack",
    "/support/faq",
    "/about",
    "/careers",
];

const REFERRERS: [&str; 9] = [
    "https://www.google.com/",
    "direct",
    "https://www.bing.com/",
    "https://www.linkedin.com/",
    "https://t.co/",
    "https://news.ycombinator.com/",
    "https://duckduckgo.com/",
    "https://www.facebook.com/",
    "android-app://com.slack",
];

/// The 12 count columns of a most-active-visit-times row, as the reference names them.
const HOUR_COLUMNS: [&str; 12] = [
    "00 AM", "02 AM", "04 AM", "06 AM", "08 AM", "10 AM", "12 PM", "14 PM", "16 PM", "18 PM",
    "20 PM", "22 PM",
];

/// How busy each local hour is, relative to the busiest.
const DAYLIGHT: [u64; 24] = [
    0, 0, 0, 0, 0, 1, 2, 4, 6, 8, 9, 10, 9, 10, 10, 9, 8, 6, 5, 4, 3, 2, 1, 0,
];

/// One account's generated day: the same (account, date) always gives the same numbers.
struct Day {
    seed: u64,
    /// How busy the account is; 0 for an empty day.
    scale: u64,
}

impl Day {
    fn new(account: &str, date: NaiveDate) -> Day {
        let seed = fnv1a(format!("{account}/{date}").as_bytes());
        let mut rng = fastrand::Rng::with_seed(seed);
        let scale = if rng.u8(..10) == 0 {
            0
        } else {
            // Accounts differ by size; days of one account by a little.
            let size = 20 + fnv1a(account.as_bytes()) % 400;
            size * rng.u64(70..130) / 100
        };
        Day { seed, scale }
    }

    fn rng(&self, stream: u64) -> fastrand::Rng {
        fastrand::Rng::with_seed(self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn countries(&self) -> Vec<Value> {
        if self.scale == 0 {
            return Vec::new();
        }
        let mut rng = self.rng(1);
        let mut picked: Vec<_> = COUNTRIES.iter().collect();
        rng.shuffle(&mut picked);
        picked.truncate(rng.usize(3..COUNTRIES.len()));
        picked
            .iter()
            .enumerate()
            .map(|(i, (name, cca3, lat, lng))| {
                // Zipf-like: the first country brings most visitors.
                let visitors = (self.scale / (i as u64 + 1)).max(1);
                let chats = visitors * rng.u64(60..180) / 100;
                let cases = chats + rng.u64(0..=chats / 4 + 1);
                json!({
                    "name": name,
                    "cca3": cca3,
                    "id": 300 + i,
                    "countryKey": (380 + i).to_string(),
                    "visitorCount": loose(&mut rng, visitors),
                    "caseCount": loose(&mut rng, cases),
                    "chatCount": loose(&mut rng, chats),
                    "emailCount": rng.u64(0..=visitors / 6),
                    "cobrowseCount": rng.u64(0..=visitors / 10),
                    "screenShareCount": 0,
                    "videocall": rng.u64(0..=visitors / 30),
                    "audiocall": rng.u64(0..=visitors / 40),
                    "totalVoip": 0,
                    "voipCallCount": 0,
                    "voipSmsCount": 0,
                    "lat": lat,
                    "lng": lng,
                })
            })
            .collect()
    }

    /// 24 rows from the start hour on, busiest in the (local) afternoon.
    fn hours(&self, start_hour: u32) -> Vec<Value> {
        let mut rng = self.rng(2);
        (0..24)
            .map(|i| {
                let hour = (start_hour + i) % 24;
                let mut row = Map::new();
                row.insert("label".into(), json!(clock_label(hour)));
                for column in HOUR_COLUMNS {
                    let busy = self.scale * DAYLIGHT[hour as usize] / 60;
                    let value = if busy == 0 {
                        0
                    } else {
                        rng.u64(0..=busy / 4 + 1)
                    };
                    row.insert(column.into(), json!(value));
                }
                Value::Object(row)
            })
            .collect()
    }

    fn pages(&self, account: &str) -> Vec<Value> {
        let mut rng = self.rng(3);
        let sources: Vec<String> = PAGES
            .iter()
            .map(|path| format!("https://www.{account}.example{path}"))
            .collect();
        self.chat_sources(&mut rng, "url", &sources)
    }

    fn referrers(&self) -> Vec<Value> {
        let mut rng = self.rng(4);
        let sources: Vec<String> = REFERRERS.iter().map(|s| s.to_string()).collect();
        self.chat_sources(&mut rng, "source", &sources)
    }

    /// Some of `texts`, by chats, each with its share of the total as a "12.34" string.
    fn chat_sources(&self, rng: &mut fastrand::Rng, key: &str, texts: &[String]) -> Vec<Value> {
        if self.scale == 0 {
            return Vec::new();
        }
        let mut picked: Vec<&String> = texts.iter().collect();
        rng.shuffle(&mut picked);
        picked.truncate(rng.usize(2..=texts.len()));
        let chats: Vec<u64> = (0..picked.len())
            .map(|i| (self.scale / (i as u64 + 2)).max(1) * rng.u64(50..150) / 100 + 1)
            .collect();
        let total: u64 = chats.iter().sum();
        picked
            .into_iter()
            .zip(chats)
            .map(|(text, chats)| {
                json!({
                    key: text,
                    "chats": chats,
                    "percentage": format!("{:.2}", chats as f64 * 100.0 / total as f64),
                })
            })
            .collect()
    }
}

/// A count as the real API sends it: usually a number, sometimes a numeric string.
fn loose(rng: &mut fastrand::Rng, n: u64) -> Value {
    if rng.u8(..5) == 0 {
        json!(n.to_string())
    } else {
        json!(n)
    }
}

/// The API's hour labels: "12 AM" is midnight, "12 PM" noon.
fn clock_label(hour: u32) -> String {
    let twelve = match hour % 12 {
        0 => 12,
        h => h,
    };
    format!("{twelve:02} {}", if hour < 12 { "AM" } else { "PM" })
}

/// FNV-1a: a seed that stays the same across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::{DayReport, hour_of_label};

    fn request(start: &str) -> Request {
        let query = HashMap::from([
            ("start_date".to_owned(), start.to_owned()),
            ("end_date".to_owned(), start.replace("00:00:00", "23:59:59")),
        ]);
        Request::parse(&query).unwrap()
    }

    fn day(account: &str, date: &str, start_hour: u32) -> DayReport {
        let request = request(&format!("{date} {start_hour:02}:00:00"));
        let bodies: Vec<Vec<u8>> = Endpoint::ALL
            .iter()
            .map(|&e| {
                envelope(e, rows(e, account, &request))
                    .to_string()
                    .into_bytes()
            })
            .collect();
        DayReport::parse([&bodies[0], &bodies[1], &bodies[2], &bodies[3]]).unwrap()
    }

    #[test]
    fn days_are_deterministic_per_account_and_date() {
        assert_eq!(day("acme", "2026-07-15", 0), day("acme", "2026-07-15", 0));
        assert_ne!(day("acme", "2026-07-15", 0), day("acme", "2026-07-16", 0));
        assert_ne!(day("acme", "2026-07-15", 0), day("globex", "2026-07-15", 0));
    }

    #[test]
    fn generated_days_parse_and_some_are_empty() {
        let days: Vec<DayReport> = (1..=60)
            .map(|d| {
                let date = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(d);
                day("acme", &date.to_string(), 0)
            })
            .collect();
        let empty = days.iter().filter(|d| d.countries.is_empty()).count();
        assert!((1..=15).contains(&empty), "{empty} of 60 days empty");
        for d in days.iter().filter(|d| !d.countries.is_empty()) {
            assert_eq!(d.hours.len(), 24);
            assert!(!d.pages.is_empty() && !d.referrers.is_empty());
            let share: f64 = d.pages.iter().map(|p| p.percentage).sum();
            assert!((share - 100.0).abs() < 0.1, "{share}");
        }
    }

    #[test]
    fn hour_rows_start_at_the_start_hour() {
        let rows = rows(
            Endpoint::MostActiveVisitTimes,
            "acme",
            &request("2026-07-15 05:00:00"),
        );
        let labels: Vec<u8> = rows
            .iter()
            .map(|r| hour_of_label(r["label"].as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(labels[..3], [5, 6, 7]);
        assert_eq!(labels[19], 0);
        assert_eq!(labels.len(), 24);
    }

    #[test]
    fn the_reference_day_is_served_exactly() {
        let request = request("2021-03-18 00:00:00");
        for (endpoint, body) in REFERENCE {
            assert_eq!(reference_body(endpoint, &request), Some(body));
        }
        assert_eq!(
            rows(Endpoint::VisitorsByLocation, "anyone", &request).len(),
            6
        );
    }

    #[test]
    fn malformed_queries_are_refused() {
        let parse = |pairs: &[(&str, &str)]| {
            let query: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Request::parse(&query).err()
        };
        let good = [
            ("start_date", "2026-07-15 00:00:00"),
            ("end_date", "2026-07-15 23:59:59"),
        ];
        assert!(parse(&good).is_none());
        assert!(parse(&good[..1]).unwrap().contains("end_date is required"));
        let bad_date = [("start_date", "2026-07-15"), good[1]];
        assert!(parse(&bad_date).unwrap().contains("start_date"));
        let bad_offset = [good[0], good[1], ("offset", "5:30")];
        assert!(parse(&bad_offset).unwrap().contains("offset"));
        let bad_output = [good[0], good[1], ("output", "xml")];
        assert!(parse(&bad_output).unwrap().contains("json or csv"));
    }

    #[test]
    fn csv_has_a_header_and_quotes_what_needs_it() {
        let rows = vec![
            json!({"source": "https://a.example/?q=1,2", "chats": 3, "percentage": "37.50"}),
            json!({"source": "say \"hi\"", "chats": 1, "percentage": "12.50"}),
        ];
        assert_eq!(
            to_csv(&rows),
            "source,chats,percentage\n\"https://a.example/?q=1,2\",3,37.50\n\"say \"\"hi\"\"\",1,12.50\n"
        );
        assert_eq!(to_csv(&[]), "");
    }
}
