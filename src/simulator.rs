//! A local stand-in for Acquire's Visitor Analytics API, beside [`fetch`](crate::fetch): the
//! same four endpoints, paths, query, Bearer check and JSON (or CSV) shapes, serving
//! deterministic, plausible answers for any window so `demo`, the tests and the benchmarks need
//! no account.
//!
//! - It answers at any path prefix ending in `/v1/analytics/chat/<endpoint>`; the first segment
//!   of the prefix (`/acme/api/...`), or else the host's first label, is the account id, which
//!   with a date seeds that date's generated day. The same (account, window) always gets the
//!   same bytes, unless an event makes the day late.
//! - `start_date` and `end_date` are read as clock times in the one `offset`, both ends
//!   included. The window's days are the dates from the start's to the end's, except that an
//!   end in the first 2 hours of a date doesn't count that date: a DST change day sent as one
//!   offset ends up to an hour into the next date (25 hours), and that is still one day.
//! - Countries, pages and referrers: a window within one day is that day's generated rows; a
//!   longer one is the sum over its days (counts added per country, chats per page or
//!   referrer, percentages recomputed from the summed chats).
//! - Hour rows start at the hour of `start_date`, as the real API's do, one per hour of the
//!   window, labelled in its offset: 23 on a spring-forward day, 25 on a fall-back day (with
//!   "12 AM" first and last), 24 otherwise. A window over 25 hours gets 24 rows, one per hour
//!   of the day from the start hour, each the sum of that hour over the window.
//! - 2021-03-18 is the API reference's example day, served byte for byte for a window of up
//!   to 25 hours starting that date, and counted as that day's rows in longer windows.
//! - Counts are sometimes numeric strings and percentages always are, because the real API
//!   is that loose and the client must cope.
//!
//! The generated days are those of an account that stays itself:
//!
//! - Its size is its id's: a typical weekday brings [`usual_visitors`] visitors, from about 3
//!   to 5,000 across accounts (log-uniform, so small accounts are as common as big ones), give
//!   or take 10% with the season over a year.
//! - Saturday and Sunday bring 55-70% of a weekday's visitors, the share the account's own.
//! - A day's visitors are a negative binomial (gamma–Poisson) draw around that expectation
//!   with size 50: a 1,000-a-day account swings by about 15% from day to day, a 3-a-day one as
//!   chance has it, so a quiet account has days with no one and a big one never does.
//! - Each account draws from its own few countries, pages and referrers with Zipf-like weights
//!   that drift on slow sinusoids (periods of 8 to 52 weeks), so its top country is the same
//!   on most days and yesterday's rows are mostly today's, while the order below the top
//!   changes over weeks. Visitors are split over the countries and over the hours (by a
//!   daylight profile, shifted up to an hour per account); chats are the account's share of
//!   visitors (8-35%), split over the countries by their visitors and over the pages and
//!   referrers by the account's mix, so each list's chats add up to the day's.
//!
//! Events make a day go wrong on purpose ([`SimulatedEvent`], `simulate --event
//! ACCOUNT:DATE:KIND`): an `outage` is a day of zeros, a `spike` three times the day's counts,
//! and a `late` day is empty on its first read, half there (each count halved, rounded down,
//! rows with nothing left dropped) on the second and whole from the third. Reads are counted
//! per (account, date, endpoint), so one digest's four requests are each the first read; a
//! window counts a read of each event day among its days, and an hour row spilling into the
//! next date shows that date as its next read would, without counting one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, NaiveDateTime, TimeDelta, Timelike};
use rand::RngExt;
use serde_json::{Value, json};

use crate::fetch::Endpoint;
use crate::schedule::parse_fixed_offset;

mod event;
mod model;
mod rows;

pub use event::{EventKind, SimulatedEvent};
use model::{Account, COUNTRIES, Day, DayHours, PAGES, REFERRERS, Scale, SourceChats};
use rows::{Count, CountryRow, HourRow, Rows, SourceRow};

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

/// The longest window still answered hour by hour: a fall-back day read in one offset.
const MAX_HOUR_ROWS: u64 = 25;

/// An end this many hours or fewer into a date is a DST day's spill-over, not another day.
const SPILL_HOURS: u32 = 2;

const MAINTENANCE_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Acquire is down for maintenance</title></head>\n<body><h1>We'll be back shortly</h1><p>Acquire is undergoing scheduled maintenance.</p></body></html>\n";

/// A typical weekday's expected visitors for `account` (as the simulator reads account ids:
/// lower case), before the season (±10% over a year) and the day's noise: from about 3 to
/// 5,000, fixed by the id. Weekends are lower; a year of weekdays averages about this. Tests
/// pick an account of the size they need by scanning names such as `acct-0`..`acct-9999`.
pub fn usual_visitors(account: &str) -> f64 {
    Account::new(account).usual()
}

#[derive(Debug, Clone, Default)]
pub struct SimulatorOptions {
    /// Added before every answer.
    pub latency: Duration,
    /// The fraction of requests (0-1) answered with a 503 HTML maintenance page.
    pub fail_rate: f64,
    /// Accept only this bearer token; `None` accepts any non-empty one.
    pub api_key: Option<String>,
    /// Days made an outage, a spike or late.
    pub events: Vec<SimulatedEvent>,
}

/// A running simulator's state: its options, and how often each event day has been read.
struct Simulator {
    options: SimulatorOptions,
    /// The events by account, for a lookup that costs nothing when an account has none.
    events: HashMap<String, Vec<(NaiveDate, EventKind)>>,
    reads: Mutex<HashMap<(String, NaiveDate, Endpoint), u32>>,
}

impl Simulator {
    fn new(options: SimulatorOptions) -> Simulator {
        let mut events: HashMap<String, Vec<(NaiveDate, EventKind)>> = HashMap::new();
        for event in &options.events {
            events
                .entry(event.account.clone())
                .or_default()
                .push((event.date, event.kind));
        }
        Simulator {
            options,
            events,
            reads: Mutex::new(HashMap::new()),
        }
    }

    /// How each event day `request` covers is served to this read of `endpoint`, counting it
    /// as a read of each of those among the window's days.
    fn scales(&self, account: &str, endpoint: Endpoint, request: &Request) -> Scales {
        let Some(events) = self.events.get(account) else {
            return Scales::default();
        };
        let touched = request.dates_touched(endpoint);
        let days = request.first_day()..=request.last_day();
        let mut dates: Vec<NaiveDate> = events
            .iter()
            .map(|(date, _)| *date)
            .filter(|date| touched.contains(date))
            .collect();
        dates.sort_unstable();
        dates.dedup();
        if dates.is_empty() {
            return Scales::default();
        }
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        let scales = dates
            .into_iter()
            .map(|date| {
                let key = (account.to_owned(), date, endpoint);
                let read = if days.contains(&date) {
                    let reads = reads.entry(key).or_default();
                    *reads += 1;
                    *reads
                } else {
                    reads.get(&key).copied().unwrap_or_default() + 1
                };
                let scale = events
                    .iter()
                    .filter(|(on, _)| *on == date)
                    .fold(Scale::AS_IS, |scale, (_, kind)| {
                        scale.then(kind.scale(read))
                    });
                (date, scale)
            })
            .collect();
        Scales(scales)
    }
}

/// The event days of one answer and how each is served; every other day is served as is.
#[derive(Default)]
struct Scales(Vec<(NaiveDate, Scale)>);

impl Scales {
    fn on(&self, date: NaiveDate) -> Scale {
        self.0
            .iter()
            .find(|(on, _)| *on == date)
            .map_or(Scale::AS_IS, |(_, scale)| *scale)
    }
}

/// Serves the simulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: SimulatorOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The daemon's readiness path too, so `acquire-digest health` can probe a simulator
    // container as it does a daemon.
    let router = Router::new()
        .route(
            "/-/ready",
            axum::routing::get(|| async { "simulator ready\n" }),
        )
        .fallback(answer)
        .with_state(Arc::new(Simulator::new(options)));
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

async fn answer(State(simulator): State<Arc<Simulator>>, uri: Uri, headers: HeaderMap) -> Response {
    let options = &simulator.options;
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
    let scales = simulator.scales(&account, endpoint, &request);
    let (content_type, body) = body(endpoint, &account, &request, &scales);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The content type and body of a successful answer.
fn body(
    endpoint: Endpoint,
    account: &str,
    request: &Request,
    scales: &Scales,
) -> (&'static str, String) {
    if request.csv {
        return (
            "text/csv; charset=utf-8",
            to_csv(&rows(endpoint, account, request, scales).fields()),
        );
    }
    let body = match reference_body(endpoint, request) {
        Some(exact) => exact.to_owned(),
        None => envelope(endpoint, &rows(endpoint, account, request, scales)),
    };
    ("application/json", body)
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
    /// Included, as in the reference's `... 23:59:59`.
    end: NaiveDateTime,
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
        Ok(Request { start, end, csv })
    }

    /// The window's length in hours, a part hour counting as one. Not the clock hours it
    /// touches: the reference's 05:50:55 to 05:50:54 next day has 24 rows, not 25.
    fn hours(&self) -> u64 {
        let seconds = (self.end - self.start).num_seconds().unsigned_abs() + 1;
        seconds.div_ceil(3600)
    }

    /// Rows are whole clock hours, so a start at 05:50 opens with the 05 AM row.
    fn first_hour(&self) -> NaiveDateTime {
        let start = self.start;
        start
            .date()
            .and_hms_opt(start.hour(), 0, 0)
            .expect("an hour of a real date")
    }

    fn first_day(&self) -> NaiveDate {
        self.start.date()
    }

    /// The last date whose generated day the window adds up.
    fn last_day(&self) -> NaiveDate {
        let end = self.end.date();
        let last = if self.end.hour() < SPILL_HOURS {
            end.pred_opt().unwrap_or(end)
        } else {
            end
        };
        last.max(self.first_day())
    }

    /// The dates whose generated days the window adds up, in order.
    fn days(&self) -> impl Iterator<Item = NaiveDate> {
        let last = self.last_day();
        self.first_day()
            .iter_days()
            .take_while(move |day| *day <= last)
    }

    /// The dates an answer of `endpoint` draws on: the window's days, and for hour rows the
    /// date an hour spills into.
    fn dates_touched(&self, endpoint: Endpoint) -> RangeInclusive<NaiveDate> {
        let last = match endpoint {
            Endpoint::MostActiveVisitTimes => {
                let last_hour = self.first_hour() + TimeDelta::hours(self.hours() as i64 - 1);
                self.last_day().max(last_hour.date())
            }
            _ => self.last_day(),
        };
        self.first_day()..=last
    }
}

/// The reference example, exactly, for a window of up to a (DST) day starting its date, in any
/// offset: it was published for 05:50:55 to 05:50:54 the next day, so it answers any one day
/// from that date, not only the exact window it was taken for.
fn reference_body(endpoint: Endpoint, request: &Request) -> Option<&'static str> {
    (request.start.date() == REFERENCE_DATE && request.hours() <= MAX_HOUR_ROWS)
        .then(|| REFERENCE.iter().find(|(e, _)| *e == endpoint))
        .flatten()
        .map(|(_, body)| *body)
}

/// The reference's rows, parsed once: every answer of a window that starts or passes through
/// its date reads them.
static REFERENCE_ROWS: LazyLock<Vec<(Endpoint, Rows)>> = LazyLock::new(|| {
    let typed = |&(endpoint, body): &(Endpoint, &str)| {
        let json: Value = serde_json::from_str(body).expect("the reference examples are JSON");
        let pointer = format!("/data/{}/data/graphRow/data", endpoint.key());
        let rows = json.pointer(&pointer).and_then(Value::as_array);
        let rows = Rows::of_reference(endpoint, rows.map(Vec::as_slice).unwrap_or_default());
        (endpoint, rows)
    };
    REFERENCE.iter().map(typed).collect()
});

fn reference_rows(endpoint: Endpoint) -> &'static Rows {
    REFERENCE_ROWS
        .iter()
        .find(|(e, _)| *e == endpoint)
        .map(|(_, rows)| rows)
        .expect("every endpoint has a reference example")
}

/// The answer's JSON, written around the rows rather than built as a tree: see `rows.rs`.
fn envelope(endpoint: Endpoint, rows: &Rows) -> String {
    // A busy day's 24 country rows are about 7 KB.
    let mut body = Vec::with_capacity(8192);
    body.extend_from_slice(b"{\"data\":{\"");
    body.extend_from_slice(endpoint.key().as_bytes());
    body.extend_from_slice(b"\":{\"data\":{\"graphRow\":{\"data\":");
    serde_json::to_writer(&mut body, rows).expect("rows serialize to memory");
    body.extend_from_slice(b"}},\"success\":true,\"output\":\"json\"}}}");
    String::from_utf8(body).expect("JSON is UTF-8")
}

fn rows(endpoint: Endpoint, id: &str, request: &Request, scales: &Scales) -> Rows {
    if reference_body(endpoint, request).is_some() {
        return reference_rows(endpoint).clone();
    }
    let account = Account::new(id);
    if endpoint == Endpoint::MostActiveVisitTimes {
        return hour_rows(&account, request, scales);
    }
    let mut days = request.days();
    let first = days.next().expect("a window has at least its start date");
    let mut sum = day_rows(endpoint, &account, id, first, scales.on(first));
    let mut several = false;
    for day in days {
        several = true;
        sum.add_day(day_rows(endpoint, &account, id, day, scales.on(day)));
    }
    // One day is served as generated, so a day's own percentages (which, in the reference,
    // need not add up to 100) stay as they were.
    if several {
        sum.recompute_percentages();
    }
    sum
}

/// One date's rows of a list endpoint: the reference's on its date, else the generated day's.
fn day_rows(
    endpoint: Endpoint,
    account: &Account,
    id: &str,
    date: NaiveDate,
    scale: Scale,
) -> Rows {
    if date == REFERENCE_DATE {
        return reference_rows(endpoint).clone();
    }
    let day = Day::new(account, date, scale);
    match endpoint {
        Endpoint::VisitorsByLocation => Rows::Countries(country_rows(&day)),
        Endpoint::PagesWithMostChats => {
            let url = |page: usize| format!("https://www.{id}.example{}", PAGES[page]).into();
            Rows::Sources(source_rows(rows::PAGE, url, &day.pages()))
        }
        Endpoint::VisitorReference => {
            let referrer = |r: usize| REFERRERS[r].into();
            Rows::Sources(source_rows(rows::REFERRER, referrer, &day.referrers()))
        }
        Endpoint::MostActiveVisitTimes => unreachable!("hours are summed by hour, not by row"),
    }
}

fn country_rows(day: &Day) -> Vec<CountryRow> {
    let mut rng = day.looseness();
    day.countries()
        .into_iter()
        .map(|row| {
            let (name, cca3, lat, lng) = COUNTRIES[row.country];
            CountryRow {
                name: name.into(),
                cca3: cca3.into(),
                id: 300 + row.country as u64,
                country_key: (380 + row.country).to_string(),
                counts: [
                    loose(&mut rng, row.visitors),
                    loose(&mut rng, row.cases),
                    loose(&mut rng, row.chats),
                    Count::number(row.emails),
                    Count::number(row.cobrowses),
                    Count::number(0),
                    Count::number(row.video_calls),
                    Count::number(row.audio_calls),
                    Count::number(0),
                    Count::number(0),
                    Count::number(0),
                ],
                lat: lat.into(),
                lng: lng.into(),
            }
        })
        .collect()
}

/// Pages or referrers by chats, each with its share of the day's.
fn source_rows(
    key: &'static str,
    text: impl Fn(usize) -> Cow<'static, str>,
    sources: &[SourceChats],
) -> Vec<SourceRow> {
    let total: u64 = sources.iter().map(|(_, chats)| chats).sum();
    sources
        .iter()
        .map(|&(source, chats)| SourceRow {
            key,
            text: text(source),
            chats: Count::number(chats),
            percentage: rows::percentage(chats, total),
        })
        .collect()
}

/// most-active-visit-times: one row per hour of the window up to a fall-back day's 25; past
/// that, one per hour of the day, as a week's answer cannot list 168 hours by label alone.
fn hour_rows(account: &Account, request: &Request, scales: &Scales) -> Rows {
    let first = request.first_hour();
    let hours = request.hours();
    let len = if hours > MAX_HOUR_ROWS { 24 } else { hours };
    let mut sums = vec![[0u64; model::HOUR_COLUMNS]; len as usize];
    let mut date = first.date();
    let mut cells = day_hours(account, date, scales.on(date));
    for i in 0..hours {
        let at = first + TimeDelta::hours(i as i64);
        if at.date() != date {
            date = at.date();
            cells = day_hours(account, date, scales.on(date));
        }
        let row = &mut sums[(i % len) as usize];
        for (sum, cell) in row.iter_mut().zip(cells[at.hour() as usize]) {
            *sum += cell;
        }
    }
    let rows = sums.into_iter().enumerate().map(|(i, cells)| HourRow {
        hour: (first.hour() + i as u32) % 24,
        cells,
    });
    Rows::Hours(rows.collect())
}

fn day_hours(account: &Account, date: NaiveDate, scale: Scale) -> DayHours {
    if date != REFERENCE_DATE {
        return Day::new(account, date, scale).hours();
    }
    let mut cells = [[0; model::HOUR_COLUMNS]; 24];
    if let Rows::Hours(rows) = reference_rows(Endpoint::MostActiveVisitTimes) {
        for row in rows {
            cells[row.hour as usize] = row.cells;
        }
    }
    cells
}

/// One CSV line per row, the first row's keys as the header.
fn to_csv(rows: &[Vec<(String, Value)>]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let keys: Vec<&str> = rows
        .first()
        .map(|row| row.iter().map(|(key, _)| key.as_str()).collect())
        .unwrap_or_default();
    if !keys.is_empty() {
        writer.write_record(&keys).expect("writes to memory");
    }
    for row in rows {
        let cells =
            keys.iter().map(
                |key| match row.iter().find(|(name, _)| name == key).map(|(_, v)| v) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                },
            );
        writer.write_record(cells).expect("writes to memory");
    }
    String::from_utf8(writer.into_inner().expect("writes to memory"))
        .expect("CSV of UTF-8 is UTF-8")
}

/// A count as the real API sends it: usually a number, sometimes a numeric string.
fn loose(rng: &mut impl RngExt, n: u64) -> Count {
    Count {
        n,
        quoted: rng.random_ratio(1, 5),
    }
}

/// FNV-1a: a seed that stays the same across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::rows::{HOUR_COLUMNS, clock_label};
    use super::*;
    use crate::fetch::{DayReport, hour_of_label};

    fn request(start: &str) -> Request {
        window(start, &start.replace("00:00:00", "23:59:59"), "+00:00")
    }

    fn window(start: &str, end: &str, offset: &str) -> Request {
        let query = HashMap::from([
            ("start_date".to_owned(), start.to_owned()),
            ("end_date".to_owned(), end.to_owned()),
            ("offset".to_owned(), offset.to_owned()),
        ]);
        Request::parse(&query).unwrap()
    }

    /// An answer as served when no event touches its days.
    fn served(endpoint: Endpoint, account: &str, request: &Request) -> (&'static str, String) {
        body(endpoint, account, request, &Scales::default())
    }

    fn served_rows(endpoint: Endpoint, account: &str, request: &Request) -> Vec<Value> {
        rows(endpoint, account, request, &Scales::default()).values()
    }

    /// The four answers as served, read by the client's parser.
    fn report(account: &str, request: &Request) -> DayReport {
        let bodies: Vec<String> = Endpoint::ALL
            .iter()
            .map(|&e| served(e, account, request).1)
            .collect();
        let bytes = |i: usize| bodies[i].as_bytes();
        DayReport::parse([bytes(0), bytes(1), bytes(2), bytes(3)]).unwrap()
    }

    fn simulator_with(events: &[&str]) -> Simulator {
        Simulator::new(SimulatorOptions {
            events: events.iter().map(|e| e.parse().unwrap()).collect(),
            ..SimulatorOptions::default()
        })
    }

    /// One read of each endpoint, as one fetch of a digest makes them.
    fn fetch(simulator: &Simulator, account: &str, request: &Request) -> DayReport {
        let bodies: Vec<String> = Endpoint::ALL
            .iter()
            .map(|&e| body(e, account, request, &simulator.scales(account, e, request)).1)
            .collect();
        let bytes = |i: usize| bodies[i].as_bytes();
        DayReport::parse([bytes(0), bytes(1), bytes(2), bytes(3)]).unwrap()
    }

    fn day(account: &str, date: &str, start_hour: u32) -> DayReport {
        let start = format!("{date} {start_hour:02}:00:00");
        let end = NaiveDateTime::parse_from_str(&start, "%Y-%m-%d %H:%M:%S").unwrap()
            + TimeDelta::seconds(86_399);
        report(account, &window(&start, &end.to_string(), "+00:00"))
    }

    fn labels(rows: &[Value]) -> Vec<&str> {
        rows.iter().map(|r| r["label"].as_str().unwrap()).collect()
    }

    fn visitors(report: &DayReport) -> u64 {
        report.countries.iter().map(|c| c.visitors).sum()
    }

    #[test]
    fn days_are_deterministic_per_account_and_date() {
        assert_eq!(day("acme", "2026-07-15", 0), day("acme", "2026-07-15", 0));
        assert_ne!(day("acme", "2026-07-15", 0), day("acme", "2026-07-16", 0));
        assert_ne!(day("acme", "2026-07-15", 0), day("globex", "2026-07-15", 0));
    }

    /// The first of `acct-0`..`acct-9999` whose usual weekday is within 10% of `visitors`.
    fn account_near(visitors: f64) -> String {
        (0..10_000)
            .map(|i| format!("acct-{i}"))
            .find(|account| (usual_visitors(account) / visitors - 1.0).abs() < 0.1)
            .unwrap_or_else(|| panic!("no account near {visitors} visitors a day"))
    }

    fn sixty_days(account: &str) -> Vec<DayReport> {
        let first = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        first
            .iter_days()
            .take(60)
            .map(|date| day(account, &date.to_string(), 0))
            .collect()
    }

    #[test]
    fn generated_days_parse_and_only_quiet_accounts_have_empty_ones() {
        let quiet = sixty_days(&account_near(3.3));
        let empty = quiet.iter().filter(|d| d.countries.is_empty()).count();
        assert!((1..=30).contains(&empty), "{empty} of 60 quiet days empty");
        let busy = sixty_days(&account_near(400.0));
        assert!(busy.iter().all(|d| !d.countries.is_empty()));
        for d in quiet.iter().chain(&busy) {
            assert_eq!(d.hours.len(), 24);
            let hours: u64 = d.hours.iter().map(|h| h.activity).sum();
            assert_eq!(hours, visitors(d));
            let chats: u64 = d.countries.iter().map(|c| c.chats).sum();
            for list in [&d.pages, &d.referrers] {
                assert_eq!(list.iter().map(|s| s.chats).sum::<u64>(), chats);
                if !list.is_empty() {
                    let share: f64 = list.iter().map(|s| s.percentage).sum();
                    assert!((share - 100.0).abs() < 0.1, "{share}");
                }
            }
        }
    }

    #[test]
    fn hour_rows_start_at_the_start_hour() {
        let rows = served_rows(
            Endpoint::MostActiveVisitTimes,
            "acme",
            &window("2026-07-15 05:00:00", "2026-07-16 04:59:59", "+05:30"),
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
    fn dst_and_ordinary_days_get_one_hour_row_per_hour() {
        let hours = |start: &str, end: &str, offset: &str| {
            served_rows(
                Endpoint::MostActiveVisitTimes,
                "acme",
                &window(start, end, offset),
            )
        };
        let spring = hours("2026-03-08 00:00:00", "2026-03-08 22:59:59", "-05:00");
        let spring = labels(&spring);
        assert_eq!(spring.len(), 23);
        assert_eq!((spring[0], spring[22]), ("12 AM", "10 PM"));

        let autumn = hours("2026-11-01 00:00:00", "2026-11-02 00:59:59", "-04:00");
        let autumn = labels(&autumn);
        assert_eq!(autumn.len(), 25);
        assert_eq!(
            (autumn[0], autumn[23], autumn[24]),
            ("12 AM", "11 PM", "12 AM")
        );
        assert_eq!(autumn.iter().filter(|l| **l == "12 AM").count(), 2);

        let ordinary = hours("2026-07-15 00:00:00", "2026-07-15 23:59:59", "+05:30");
        let ordinary = labels(&ordinary);
        assert_eq!(ordinary.len(), 24);
        let expected: Vec<String> = (0..24).map(clock_label).collect();
        assert_eq!(ordinary, expected);
    }

    #[test]
    fn a_window_within_one_date_is_that_dates_day() {
        let account = "acme";
        let november = day(account, "2026-11-01", 0);
        assert!(!november.countries.is_empty(), "pick a busy day");
        let long = report(
            account,
            &window("2026-11-01 00:00:00", "2026-11-02 00:59:59", "-04:00"),
        );
        assert_eq!(
            (&long.countries, &long.pages, &long.referrers),
            (&november.countries, &november.pages, &november.referrers)
        );
        assert_eq!(long.hours[..24], november.hours[..]);
        let short = report(
            account,
            &window("2026-03-08 00:00:00", "2026-03-08 22:59:59", "-05:00"),
        );
        let march = day(account, "2026-03-08", 0);
        assert_eq!(short.countries, march.countries);
        assert_eq!(short.hours[..], march.hours[..23]);
    }

    #[test]
    fn an_end_in_the_first_two_hours_does_not_count_that_date() {
        let days = |start: &str, end: &str| -> Vec<String> {
            let request = window(start, end, "+00:00");
            request.days().map(|d| d.to_string()).collect()
        };
        let one = ["2026-11-01"];
        assert_eq!(days("2026-11-01 00:00:00", "2026-11-02 00:59:59"), one);
        assert_eq!(days("2026-11-01 00:00:00", "2026-11-02 01:59:59"), one);
        assert_eq!(days("2026-11-01 00:00:00", "2026-11-01 00:30:00"), one);
        assert_eq!(days("2026-11-01 23:00:00", "2026-11-02 00:30:00"), one);
        assert_eq!(
            days("2026-11-01 00:00:00", "2026-11-02 02:00:00"),
            ["2026-11-01", "2026-11-02"]
        );
        assert_eq!(
            days("2026-11-20 00:00:00", "2026-11-22 23:59:59"),
            ["2026-11-20", "2026-11-21", "2026-11-22"]
        );
    }

    #[test]
    fn several_days_add_up_to_their_single_days() {
        let account = "acme";
        let dates = ["2026-11-20", "2026-11-21", "2026-11-22"];
        let singles: Vec<DayReport> = dates.iter().map(|d| day(account, d, 0)).collect();
        assert!(
            singles.iter().filter(|d| !d.countries.is_empty()).count() >= 2,
            "pick busy days"
        );
        let three = report(
            account,
            &window("2026-11-20 00:00:00", "2026-11-22 23:59:59", "-05:00"),
        );
        assert_eq!(visitors(&three), singles.iter().map(visitors).sum::<u64>());
        let chats = |d: &DayReport| d.countries.iter().map(|c| c.chats).sum::<u64>();
        assert_eq!(chats(&three), singles.iter().map(chats).sum::<u64>());
        let page_chats = |d: &DayReport| d.pages.iter().map(|p| p.chats).sum::<u64>();
        assert_eq!(
            page_chats(&three),
            singles.iter().map(page_chats).sum::<u64>()
        );
        let referrer_chats = |d: &DayReport| d.referrers.iter().map(|r| r.chats).sum::<u64>();
        assert_eq!(
            referrer_chats(&three),
            singles.iter().map(referrer_chats).sum::<u64>()
        );
        // Each country once, with its days added up.
        let country = singles[0].countries[0].name.clone();
        let visitors_from = |d: &DayReport| {
            d.countries
                .iter()
                .filter(|c| c.name == country)
                .map(|c| c.visitors)
                .sum::<u64>()
        };
        assert_eq!(
            three.countries.iter().filter(|c| c.name == country).count(),
            1
        );
        assert_eq!(
            visitors_from(&three),
            singles.iter().map(visitors_from).sum::<u64>()
        );
        for list in [&three.pages, &three.referrers] {
            let total: u64 = list.iter().map(|s| s.chats).sum();
            for source in list {
                let share = source.chats as f64 * 100.0 / total as f64;
                assert!((source.percentage - share).abs() < 0.006, "{source:?}");
            }
        }
    }

    #[test]
    fn a_week_gets_24_hour_rows_each_summed_over_its_days() {
        let account = "acme";
        let week = window("2026-11-16 00:00:00", "2026-11-22 23:59:59", "+01:00");
        let week_rows = served_rows(Endpoint::MostActiveVisitTimes, account, &week);
        let expected: Vec<String> = (0..24).map(clock_label).collect();
        assert_eq!(labels(&week_rows), expected);
        let week = report(account, &week);
        let singles: Vec<DayReport> = (16..=22)
            .map(|d| day(account, &format!("2026-11-{d}"), 0))
            .collect();
        for (hour, row) in week.hours.iter().enumerate() {
            let sum: u64 = singles.iter().map(|d| d.hours[hour].activity).sum();
            assert_eq!(row.activity, sum, "hour {hour}");
        }
        assert!(week.hours.iter().any(|h| h.activity > 0));

        // A week starting mid-morning still lists each hour of the day once, from the start.
        let from_nine = window("2026-11-16 09:00:00", "2026-11-23 08:59:59", "+01:00");
        let from_nine = served_rows(Endpoint::MostActiveVisitTimes, account, &from_nine);
        let from_nine = labels(&from_nine);
        assert_eq!(from_nine.len(), 24);
        assert_eq!((from_nine[0], from_nine[23]), ("09 AM", "08 AM"));
    }

    #[test]
    fn the_same_request_gets_the_same_bytes() {
        let windows = [
            ("2026-11-01 00:00:00", "2026-11-02 00:59:59", "-04:00"),
            ("2026-11-20 00:00:00", "2026-11-22 23:59:59", "-05:00"),
            ("2026-11-01 00:00:00", "2026-11-30 23:59:59", "+09:00"),
        ];
        for (start, end, offset) in windows {
            for csv in [false, true] {
                let mut request = window(start, end, offset);
                request.csv = csv;
                for endpoint in Endpoint::ALL {
                    let first = served(endpoint, "acme", &request);
                    assert_eq!(
                        first,
                        served(endpoint, "acme", &request),
                        "{start} {endpoint}"
                    );
                    assert_ne!(
                        first,
                        served(endpoint, "globex", &request),
                        "{start} {endpoint}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_reference_day_counts_in_longer_windows() {
        let india = |report: &DayReport| {
            report
                .countries
                .iter()
                .find(|c| c.name == "India")
                .map_or(0, |c| c.visitors)
        };
        let two = window("2021-03-17 00:00:00", "2021-03-18 23:59:59", "+00:00");
        let before = day("acme", "2021-03-17", 0);
        assert_eq!(india(&report("acme", &two)), 100 + india(&before));

        let week = window("2021-03-18 00:00:00", "2021-03-24 23:59:59", "+00:00");
        assert_eq!(reference_body(Endpoint::VisitorsByLocation, &week), None);
        assert!(india(&report("acme", &week)) >= 100);
    }

    #[test]
    fn the_reference_day_is_served_exactly() {
        let request = request("2021-03-18 00:00:00");
        for (endpoint, body) in REFERENCE {
            assert_eq!(reference_body(endpoint, &request), Some(body));
        }
        assert_eq!(
            served_rows(Endpoint::VisitorsByLocation, "anyone", &request).len(),
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
        let referrer = |text: &'static str, chats, percentage: &str| SourceRow {
            key: super::rows::REFERRER,
            text: text.into(),
            chats: Count::number(chats),
            percentage: percentage.into(),
        };
        let rows = Rows::Sources(vec![
            referrer("https://a.example/?q=1,2", 3, "37.50"),
            referrer("say \"hi\"", 1, "12.50"),
        ]);
        assert_eq!(
            to_csv(&rows.fields()),
            "source,chats,percentage\n\"https://a.example/?q=1,2\",3,37.50\n\"say \"\"hi\"\"\",1,12.50\n"
        );
        assert_eq!(to_csv(&[]), "");
    }

    fn countries_visitors(report: &DayReport) -> Vec<(String, u64)> {
        let rows = report
            .countries
            .iter()
            .map(|c| (c.name.clone(), c.visitors));
        rows.collect()
    }

    #[test]
    fn an_outage_is_a_day_of_zeros_and_only_that_day() {
        let account = account_near(400.0);
        let simulator = simulator_with(&[&format!("{account}:2026-07-15:outage")]);
        let outage = fetch(&simulator, &account, &request("2026-07-15 00:00:00"));
        assert!(outage.countries.is_empty() && outage.pages.is_empty());
        assert!(outage.referrers.is_empty());
        assert_eq!(outage.hours.len(), 24);
        assert!(outage.hours.iter().all(|h| h.activity == 0));
        assert!(visitors(&day(&account, "2026-07-15", 0)) > 0);

        let before = request("2026-07-14 00:00:00");
        assert_eq!(
            fetch(&simulator, &account, &before),
            report(&account, &before)
        );
        let three = window("2026-07-14 00:00:00", "2026-07-16 23:59:59", "+00:00");
        let around =
            visitors(&day(&account, "2026-07-14", 0)) + visitors(&day(&account, "2026-07-16", 0));
        assert_eq!(visitors(&fetch(&simulator, &account, &three)), around);
    }

    #[test]
    fn a_spike_is_three_times_the_day() {
        let account = account_near(400.0);
        let simulator = simulator_with(&[&format!("{account}:2026-07-15:spike")]);
        let date = request("2026-07-15 00:00:00");
        let normal = report(&account, &date);
        for _ in 0..2 {
            let spike = fetch(&simulator, &account, &date);
            assert_eq!(visitors(&spike), 3 * visitors(&normal));
            let tripled: Vec<(String, u64)> = countries_visitors(&normal)
                .into_iter()
                .map(|(name, visitors)| (name, 3 * visitors))
                .collect();
            assert_eq!(countries_visitors(&spike), tripled);
            for (spiked, normal) in spike.countries.iter().zip(&normal.countries) {
                assert_eq!(spiked.chats, 3 * normal.chats);
                assert_eq!(spiked.cases, 3 * normal.cases);
            }
            for (spiked, normal) in spike.hours.iter().zip(&normal.hours) {
                assert_eq!(spiked.activity, 3 * normal.activity);
            }
            for (spiked, normal) in spike.pages.iter().zip(&normal.pages) {
                assert_eq!(
                    (spiked.chats, spiked.percentage),
                    (3 * normal.chats, normal.percentage)
                );
            }
        }
    }

    #[test]
    fn a_late_day_is_empty_then_half_then_whole_on_each_endpoint() {
        let account = account_near(400.0);
        let simulator = simulator_with(&[&format!("{account}:2026-07-15:late")]);
        let date = request("2026-07-15 00:00:00");
        let whole = report(&account, &date);
        let whole_hours = served_rows(Endpoint::MostActiveVisitTimes, &account, &date);

        let first = fetch(&simulator, &account, &date);
        assert!(first.countries.is_empty() && first.pages.is_empty());
        assert!(first.referrers.is_empty());
        assert!(first.hours.iter().all(|h| h.activity == 0));

        let scales = simulator.scales(&account, Endpoint::MostActiveVisitTimes, &date);
        let half_hours = rows(Endpoint::MostActiveVisitTimes, &account, &date, &scales).values();
        for (half, whole) in half_hours.iter().zip(&whole_hours) {
            for column in HOUR_COLUMNS {
                assert_eq!(
                    half[column].as_u64().unwrap(),
                    whole[column].as_u64().unwrap() / 2
                );
            }
        }
        let second = fetch(&simulator, &account, &date);
        let halved: Vec<(String, u64)> = countries_visitors(&whole)
            .into_iter()
            .map(|(name, visitors)| (name, visitors / 2))
            .filter(|(_, visitors)| *visitors > 0)
            .collect();
        assert_eq!(countries_visitors(&second), halved);
        let page_chats = |r: &DayReport| r.pages.iter().map(|p| p.chats).collect::<Vec<_>>();
        let halved: Vec<u64> = page_chats(&whole)
            .iter()
            .map(|c| c / 2)
            .filter(|&c| c > 0)
            .collect();
        assert_eq!(page_chats(&second), halved);

        assert_eq!(fetch(&simulator, &account, &date), whole);
        assert_eq!(fetch(&simulator, &account, &date), whole);

        // Reads of one endpoint don't count as another's.
        let simulator = simulator_with(&[&format!("{account}:2026-07-15:late")]);
        for _ in 0..3 {
            simulator.scales(&account, Endpoint::VisitorsByLocation, &date);
        }
        let fetched = fetch(&simulator, &account, &date);
        assert_eq!(fetched.countries, whole.countries);
        assert!(fetched.pages.is_empty() && fetched.referrers.is_empty());
        assert!(fetched.hours.iter().all(|h| h.activity == 0));
    }

    #[test]
    fn a_window_over_a_late_day_counts_as_a_read_of_it() {
        let account = account_near(400.0);
        let simulator = simulator_with(&[&format!("{account}:2026-07-15:late")]);
        let three = window("2026-07-14 00:00:00", "2026-07-16 23:59:59", "+00:00");
        let around =
            visitors(&day(&account, "2026-07-14", 0)) + visitors(&day(&account, "2026-07-16", 0));
        assert_eq!(visitors(&fetch(&simulator, &account, &three)), around);

        let late = fetch(&simulator, &account, &request("2026-07-15 00:00:00"));
        let whole = day(&account, "2026-07-15", 0);
        assert!(visitors(&late) <= visitors(&whole) / 2 && visitors(&late) > 0);
    }

    #[test]
    fn an_hour_spilling_into_a_late_date_shows_its_next_read_without_counting_one() {
        let account = account_near(400.0);
        let simulator = simulator_with(&[&format!("{account}:2026-07-15:late")]);
        let fifteenth = NaiveDate::from_ymd_opt(2026, 7, 15).unwrap();
        let fall_back = window("2026-07-14 00:00:00", "2026-07-15 00:59:59", "+00:00");
        let spilled = || {
            simulator
                .scales(&account, Endpoint::MostActiveVisitTimes, &fall_back)
                .on(fifteenth)
        };
        assert_eq!(spilled(), Scale::NOTHING);
        assert_eq!(spilled(), Scale::NOTHING);
        let countries = simulator.scales(&account, Endpoint::VisitorsByLocation, &fall_back);
        assert_eq!(
            countries.on(fifteenth),
            Scale::AS_IS,
            "not a date of its rows"
        );

        let first = simulator.scales(
            &account,
            Endpoint::MostActiveVisitTimes,
            &request("2026-07-15 00:00:00"),
        );
        assert_eq!(first.on(fifteenth), Scale::NOTHING);
        assert_eq!(spilled(), Scale { times: 1, per: 2 });
    }

    #[test]
    fn reference_rows_serialize_as_the_reference_has_them() {
        for (endpoint, body) in REFERENCE {
            let json: Value = serde_json::from_str(body).unwrap();
            let pointer = format!("/data/{}/data/graphRow/data", endpoint.key());
            let published = json.pointer(&pointer).unwrap().as_array().unwrap();
            assert_eq!(&reference_rows(endpoint).values(), published, "{endpoint}");
        }
    }

    /// Each published row's keys, in the reference's order: a `Value` would sort them.
    fn published_keys(body: &str) -> Vec<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Envelope {
            data: HashMap<String, Report>,
        }
        #[derive(serde::Deserialize)]
        struct Report {
            data: Graph,
        }
        #[derive(serde::Deserialize)]
        struct Graph {
            #[serde(rename = "graphRow")]
            graph_row: Listed,
        }
        #[derive(serde::Deserialize)]
        struct Listed {
            data: Vec<rows::Fields>,
        }
        let envelope: Envelope = serde_json::from_str(body).unwrap();
        let report = envelope.data.into_values().next().unwrap();
        let rows = report.data.graph_row.data.into_iter();
        rows.map(|row| row.0.into_iter().map(|(key, _)| key).collect())
            .collect()
    }

    #[test]
    fn rows_are_written_with_the_references_keys_in_its_order() {
        let keys = |rows: &Rows| -> Vec<Vec<String>> {
            let fields = rows.fields().into_iter();
            fields
                .map(|row| row.into_iter().map(|(key, _)| key).collect())
                .collect()
        };
        let week = window("2026-11-20 00:00:00", "2026-11-26 23:59:59", "+00:00");
        for (endpoint, body) in REFERENCE {
            let published = published_keys(body);
            assert_eq!(keys(reference_rows(endpoint)), published, "{endpoint}");
            let generated = keys(&rows(endpoint, "acme", &week, &Scales::default()));
            assert!(!generated.is_empty(), "{endpoint}");
            for row in generated {
                assert_eq!(row, published[0], "{endpoint}");
            }
        }
    }

    #[test]
    fn a_body_is_the_apis_envelope_around_its_rows() {
        let week = window("2026-11-20 00:00:00", "2026-11-26 23:59:59", "+00:00");
        for endpoint in Endpoint::ALL {
            let rows = rows(endpoint, "acme", &week, &Scales::default()).values();
            let key = endpoint.key();
            let tree = json!({"data": {key: {"data": {"graphRow": {"data": rows}}, "success": true, "output": "json"}}});
            let body: Value = serde_json::from_str(&served(endpoint, "acme", &week).1).unwrap();
            assert_eq!(body, tree, "{endpoint}");
        }
    }

    #[test]
    fn a_sum_keeps_each_rows_first_number_or_string() {
        let account = account_near(400.0);
        let days = |end: &str| {
            let request = window("2026-07-15 00:00:00", end, "+00:00");
            served_rows(Endpoint::VisitorsByLocation, &account, &request)
        };
        let first = days("2026-07-15 23:59:59");
        let sum = days("2026-07-17 23:59:59");
        let quoted = |row: &Value| row["visitorCount"].is_string();
        assert!(
            first.iter().any(quoted) && !first.iter().all(quoted),
            "pick a mixed day"
        );
        for row in &first {
            let summed = sum.iter().find(|s| s["name"] == row["name"]).unwrap();
            assert_eq!(quoted(summed), quoted(row), "{}", row["name"]);
        }
    }
}
