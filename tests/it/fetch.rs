//! The API client against a scripted loopback Acquire: every failure mode names the report and
//! the account, retries only what may succeed later, and never yields a digest of zeros.

use std::path::Path;
use std::time::{Duration, Instant};

use acquire_digest::config::{self, Team};
use acquire_digest::fetch::{Client, DayReport, Endpoint, FetchError, Problem};
use acquire_digest::http::RetryPolicy;
use acquire_digest::schedule::Window;
use serde_json::json;

use crate::support::{Reply, Scripted, config, report, team};

const KEYS: [(&str, &str); 4] = [
    ("visitors-by-location", "visitorsByLocation"),
    ("most-active-visit-times", "mostActiveVisitTimes"),
    ("pages-with-most-chats", "pagesWithMostChats"),
    ("visitor-reference", "visitorReference"),
];

/// An Acquire stand-in whose four reports are valid and empty unless scripted otherwise.
async fn acquire() -> Scripted {
    let server = Scripted::start(Reply::new(500, "unscripted")).await;
    for (path, key) in KEYS {
        server.script(path, vec![Reply::new(200, report(key, json!([])))]);
    }
    server
}

fn team_for(server: &Scripted) -> Team {
    let text = config(
        &server.url("/{account_id}/api"),
        &[team("t", "acme", &[("generic", "http://127.0.0.1:9/")])],
    );
    config::parse(&text, Path::new("."), &|_| None)
        .unwrap()
        .teams
        .remove(0)
}

fn client(budget: Duration) -> Client {
    let policy = RetryPolicy {
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        budget,
    };
    Client::with_retry(Duration::from_millis(500), 8, policy)
}

fn window(team: &Team) -> Window {
    Window::for_date(team.zone, "2026-07-15".parse().unwrap())
}

async fn fetch(server: &Scripted) -> Result<DayReport, FetchError> {
    let team = team_for(server);
    client(Duration::from_secs(2))
        .fetch_day(&team, &window(&team))
        .await
}

async fn failure(server: &Scripted) -> String {
    let error = fetch(server).await.expect_err("the fetch should fail");
    error.to_string()
}

#[tokio::test]
async fn sends_the_window_the_key_and_json_to_all_four_endpoints() {
    let server = acquire().await;
    let day = fetch(&server).await.unwrap();
    assert_eq!(day, DayReport::default());
    let seen = server.seen();
    assert_eq!(seen.len(), 4);
    for (path, _) in KEYS {
        let request = seen
            .iter()
            .find(|s| s.path == format!("/acme/api/v1/analytics/chat/{path}"))
            .unwrap_or_else(|| panic!("no request for {path}: {seen:?}"));
        assert_eq!(request.headers["authorization"], "Bearer test-key-t");
        let query: Vec<(String, String)> = url::form_urlencoded::parse(request.query.as_bytes())
            .into_owned()
            .collect();
        assert!(query.contains(&("start_date".into(), "2026-07-15 00:00:00".into())));
        assert!(query.contains(&("end_date".into(), "2026-07-15 23:59:59".into())));
        assert!(query.contains(&("offset".into(), "+05:30".into())));
        assert!(query.contains(&("output".into(), "json".into())));
    }
}

#[tokio::test]
async fn success_false_names_the_report_and_account() {
    let server = acquire().await;
    let body = json!({"data": {"visitorReference": {"success": false, "message": "plan expired"}}});
    server.script("visitor-reference", vec![Reply::new(200, body.to_string())]);
    let error = failure(&server).await;
    assert!(
        error.contains("visitor-reference report for account acme"),
        "{error}"
    );
    assert!(error.contains("success: false (plan expired)"), "{error}");
}

#[tokio::test]
async fn missing_data_is_an_error_not_an_empty_day() {
    let server = acquire().await;
    server.script(
        "pages-with-most-chats",
        vec![Reply::new(200, r#"{"data": {}}"#)],
    );
    let error = failure(&server).await;
    assert!(error.contains("pages-with-most-chats"), "{error}");
    assert!(error.contains("data.pagesWithMostChats"), "{error}");
}

#[tokio::test]
async fn an_html_maintenance_page_is_reported_with_its_text() {
    let server = acquire().await;
    let page = "<!doctype html><html><body><h1>Down for maintenance</h1></body></html>";
    server.script("visitors-by-location", vec![Reply::new(200, page)]);
    let error = failure(&server).await;
    assert!(
        error.contains("visitors-by-location report for account acme"),
        "{error}"
    );
    assert!(error.contains("not JSON"), "{error}");
    assert!(error.contains("Down for maintenance"), "{error}");
}

#[tokio::test]
async fn a_truncated_body_is_an_error() {
    let server = acquire().await;
    let whole = report(
        "mostActiveVisitTimes",
        json!([{"label": "05 AM", "00 AM": 1}]),
    );
    server.script(
        "most-active-visit-times",
        vec![Reply::new(200, &whole[..whole.len() / 2])],
    );
    let error = failure(&server).await;
    assert!(error.contains("most-active-visit-times"), "{error}");
    assert!(error.contains("not JSON"), "{error}");
}

/// A country row with every column the vendor's example has.
fn country(name: &str, visitors: serde_json::Value, chats: serde_json::Value) -> serde_json::Value {
    json!({
        "name": name, "cca3": "IND", "id": 1, "countryKey": "387",
        "visitorCount": visitors, "caseCount": 4, "chatCount": chats, "emailCount": 0,
        "cobrowseCount": 0, "screenShareCount": 0, "videocall": 0, "audiocall": 0,
        "totalVoip": 0, "voipCallCount": 0, "voipSmsCount": 0, "lat": "20", "lng": "77"
    })
}

#[tokio::test]
async fn strings_where_numbers_belong_parse_and_garbage_fails() {
    let server = acquire().await;
    let rows = json!([country("India", json!("12"), json!("3"))]);
    server.script(
        "visitors-by-location",
        vec![Reply::new(200, report("visitorsByLocation", rows))],
    );
    let day = fetch(&server).await.unwrap();
    assert_eq!((day.countries[0].visitors, day.countries[0].chats), (12, 3));

    let rows = json!([country("India", json!("twelve"), json!(3))]);
    server.script(
        "visitors-by-location",
        vec![Reply::new(200, report("visitorsByLocation", rows))],
    );
    let error = failure(&server).await;
    assert!(
        error.contains("row 1: visitorCount is not a count"),
        "{error}"
    );
}

#[tokio::test]
async fn a_renamed_count_fails_the_day_instead_of_reading_as_zero() {
    let server = acquire().await;
    let mut renamed = country("India", json!(12), json!(3));
    let fields = renamed.as_object_mut().unwrap();
    let visitors = fields.remove("visitorCount").unwrap();
    fields.insert("visitor_count".into(), visitors);
    let rows = json!([country("Benin", json!(1), json!(1)), renamed]);
    server.script(
        "visitors-by-location",
        vec![Reply::new(200, report("visitorsByLocation", rows))],
    );
    let error = fetch(&server)
        .await
        .expect_err("a renamed field must not read as zero visitors");
    assert_eq!(error.endpoint, Endpoint::VisitorsByLocation);
    assert!(matches!(error.problem, Problem::Shape(_)), "{error:?}");
    let error = error.to_string();
    assert!(
        error.starts_with(
            "visitors-by-location report for account acme: unexpected shape: row 2: \
             visitorCount is missing (renamed? the row has "
        ),
        "{error}"
    );
    assert!(error.contains("visitor_count"), "{error}");
    // A shape problem is not worth retrying: the same body will come back.
    assert_eq!(server.seen_at("visitors-by-location").len(), 1);
}

#[tokio::test]
async fn a_rejected_key_is_named_and_never_retried() {
    for status in [401, 403] {
        let server = acquire().await;
        server.script("visitor-reference", vec![Reply::new(status, "nope")]);
        let error = failure(&server).await;
        assert!(error.contains("API key rejected"), "{error}");
        assert!(error.contains("account acme"), "{error}");
        assert!(!error.contains("test-key"), "the key leaked: {error}");
        assert_eq!(server.seen_at("visitor-reference").len(), 1);
    }
}

#[tokio::test]
async fn an_error_page_that_echoes_the_key_is_scrubbed() {
    let server = acquire().await;
    server.script(
        "visitor-reference",
        vec![Reply::new(400, "Bad token 'Bearer test-key-t' for acme")],
    );
    let error = failure(&server).await;
    assert!(!error.contains("test-key-t"), "the key leaked: {error}");
    assert!(error.contains("Bad token 'Bearer [redacted]'"), "{error}");
}

#[tokio::test]
async fn a_key_echoed_in_another_form_withholds_the_excerpt() {
    // The key is "test-key-t": upper-cased, percent-encoded, JSON-escaped.
    for echoed in [
        "Bad token 'Bearer TEST-KEY-T'",
        "Bad token 'Bearer test%2Dkey%2Dt'",
        r#"{"error": "bad token test\u002dkey\u002dt"}"#,
    ] {
        let server = acquire().await;
        server.script("visitor-reference", vec![Reply::new(400, echoed)]);
        let error = failure(&server).await;
        assert!(
            error.contains("HTTP 400: (excerpt withheld: it echoed a secret)"),
            "{error}"
        );
        assert!(!error.to_lowercase().contains("key-t"), "{error}");
        assert!(
            !error.contains("2Dkey") && !error.contains("u002d"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn not_found_and_other_4xx_are_not_retried() {
    let server = acquire().await;
    server.script("visitor-reference", vec![Reply::new(404, "")]);
    let error = failure(&server).await;
    assert!(error.contains("not found (HTTP 404)"), "{error}");
    assert_eq!(server.seen_at("visitor-reference").len(), 1);

    let server = acquire().await;
    server.script("visitor-reference", vec![Reply::new(400, "bad offset")]);
    let error = failure(&server).await;
    assert!(error.contains("HTTP 400: bad offset"), "{error}");
    assert_eq!(server.seen_at("visitor-reference").len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_until_they_pass() {
    let server = acquire().await;
    let good = Reply::new(
        200,
        report(
            "visitorReference",
            json!([{"source": "x", "chats": 1, "percentage": "100.00"}]),
        ),
    );
    server.script(
        "visitor-reference",
        vec![
            Reply::new(502, "bad gateway"),
            Reply::new(503, "busy"),
            good,
        ],
    );
    let day = fetch(&server).await.unwrap();
    assert_eq!(day.referrers.len(), 1);
    assert_eq!(server.seen_at("visitor-reference").len(), 3);
}

#[tokio::test]
async fn retries_are_bounded_in_time() {
    let server = acquire().await;
    server.script("visitor-reference", vec![Reply::new(500, "down")]);
    let started = Instant::now();
    let error = failure(&server).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(error.contains("HTTP 500: down"), "{error}");
    assert!(server.seen_at("visitor-reference").len() >= 3);
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let server = acquire().await;
    server.script(
        "visitor-reference",
        vec![
            Reply::new(429, "slow down").header("retry-after", "1"),
            Reply::new(200, report("visitorReference", json!([]))),
        ],
    );
    let started = Instant::now();
    fetch(&server).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.seen_at("visitor-reference").len(), 2);
}

#[tokio::test]
async fn timeouts_are_retried() {
    let server = acquire().await;
    server.script(
        "visitor-reference",
        vec![
            Reply::new(200, report("visitorReference", json!([]))).delay(Duration::from_secs(2)),
            Reply::new(200, report("visitorReference", json!([]))),
        ],
    );
    fetch(&server).await.unwrap();
    assert_eq!(server.seen_at("visitor-reference").len(), 2);
}

#[tokio::test]
async fn connection_failures_are_retried_then_reported() {
    // A port nobody listens on: bind, note it, drop.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = config(
        &format!("http://127.0.0.1:{port}/{{account_id}}/api"),
        &[team("t", "acme", &[("generic", "http://127.0.0.1:9/")])],
    );
    let team = config::parse(&text, Path::new("."), &|_| None)
        .unwrap()
        .teams
        .remove(0);
    let started = Instant::now();
    let error = client(Duration::from_millis(600))
        .fetch_day(&team, &window(&team))
        .await
        .unwrap_err()
        .to_string();
    // Issue 21: the cause and the host, as webhook errors name theirs.
    assert!(
        error.contains(&format!(
            "could not reach the API at 127.0.0.1:{port}: could not connect"
        )) && error.to_lowercase().contains("connection refused"),
        "{error}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "no retry happened"
    );
}

/// Issue 21: an API that accepts the connection and never answers is a timeout, said with the
/// host and how long it waited.
#[tokio::test]
async fn an_api_that_never_answers_is_a_timeout_naming_the_host() {
    let server = Scripted::start(Reply::new(200, "{}").delay(Duration::from_secs(30))).await;
    let team = team_for(&server);
    let error = client(Duration::from_millis(300))
        .fetch_countries(&team, &window(&team))
        .await
        .unwrap_err()
        .to_string();
    let host = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert!(
        error.contains(&format!(
            "could not reach the API at {host}: timed out after 0.5 s without an answer"
        )),
        "{error}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = acquire().await;
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(9 * 1024 * 1024));
    server.script("visitor-reference", vec![Reply::new(200, huge)]);
    let error = failure(&server).await;
    assert!(error.contains("larger than"), "{error}");
}
