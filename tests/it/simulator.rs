//! The simulator over real HTTP, as the client and an admin's curl see it, and the `simulate`
//! and `demo` commands of the real binary.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use acquire_digest::config;
use acquire_digest::fetch::Client;
use acquire_digest::fetch::DayReport;
use acquire_digest::http::RetryPolicy;
use acquire_digest::schedule::Window;
use acquire_digest::simulator::{self, RunningSimulator, SimulatorOptions};

use crate::support::{Workspace, stderr, stdout};

const REFERENCE: [(&str, &str); 4] = [
    (
        "visitors-by-location",
        include_str!("../../src/simulator/reference/visitors-by-location.json"),
    ),
    (
        "most-active-visit-times",
        include_str!("../../src/simulator/reference/most-active-visit-times.json"),
    ),
    (
        "pages-with-most-chats",
        include_str!("../../src/simulator/reference/pages-with-most-chats.json"),
    ),
    (
        "visitor-reference",
        include_str!("../../src/simulator/reference/visitor-reference.json"),
    ),
];

const DAY: [(&str, &str); 3] = [
    ("start_date", "2026-07-15 00:00:00"),
    ("end_date", "2026-07-15 23:59:59"),
    ("offset", "+05:30"),
];

async fn get(
    sim: &RunningSimulator,
    path: &str,
    query: &[(&str, &str)],
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("http://{}{path}", sim.addr()))
        .query(query);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_reference_day_is_served_byte_for_byte_at_any_prefix() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    for (prefix, (endpoint, body)) in ["/acme/api", "/api", "/deeply/nested/prefix", "/x/api"]
        .iter()
        .zip(REFERENCE)
    {
        let query = [
            ("start_date", "2021-03-18 05:50:55"),
            ("end_date", "2021-03-19 05:50:54"),
            ("output", "json"),
            ("offset", "+00:00"),
        ];
        let path = format!("{prefix}/v1/analytics/chat/{endpoint}");
        let response = get(&sim, &path, &query, Some("k")).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.unwrap(), body, "{path}");
    }
}

#[tokio::test]
async fn the_bearer_token_is_checked() {
    let open = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let path = "/acme/api/v1/analytics/chat/visitor-reference";
    assert_eq!(get(&open, path, &DAY, None).await.status(), 401);
    assert_eq!(get(&open, path, &DAY, Some("")).await.status(), 401);
    assert_eq!(get(&open, path, &DAY, Some("anything")).await.status(), 200);

    let locked = simulator::spawn(SimulatorOptions {
        api_key: Some("right".into()),
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let wrong = get(&locked, path, &DAY, Some("wrong")).await;
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(get(&locked, path, &DAY, Some("right")).await.status(), 200);
}

#[tokio::test]
async fn malformed_dates_offsets_and_unknown_endpoints_are_refused() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let path = "/acme/api/v1/analytics/chat/pages-with-most-chats";
    for bad in [
        [DAY[0], ("end_date", "2026-07-15"), DAY[2]],
        [("start_date", "15/07/2026 00:00:00"), DAY[1], DAY[2]],
        [DAY[0], DAY[1], ("offset", "5:30")],
        [DAY[0], DAY[1], ("offset", "+05:30:00")],
    ] {
        let response = get(&sim, path, &bad, Some("k")).await;
        assert_eq!(response.status(), 400, "{bad:?}");
    }
    let unknown = get(&sim, "/acme/api/v1/analytics/chat/nope", &DAY, Some("k")).await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn csv_is_served_too() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let query = [
        ("start_date", "2021-03-18 00:00:00"),
        ("end_date", "2021-03-18 23:59:59"),
        ("output", "csv"),
    ];
    let response = get(
        &sim,
        "/acme/api/v1/analytics/chat/pages-with-most-chats",
        &query,
        Some("k"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(
        response.text().await.unwrap(),
        "url,chats,percentage\n\
         https://test1.acquire.io/simulate,195,89.86\n\
         https://test1.acquire.io/simulate?page=features,11,5.07\n"
    );
}

#[tokio::test]
async fn failures_and_latency_can_be_injected() {
    let failing = simulator::spawn(SimulatorOptions {
        fail_rate: 1.0,
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let path = "/acme/api/v1/analytics/chat/visitor-reference";
    let response = get(&failing, path, &DAY, Some("k")).await;
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("<html>"));

    let slow = simulator::spawn(SimulatorOptions {
        latency: Duration::from_millis(300),
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    assert_eq!(get(&slow, path, &DAY, Some("k")).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// The exact windows the digest sends: DST days in one offset and several whole days.
#[tokio::test]
async fn dst_days_and_longer_windows_are_answered_hour_by_hour() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hours = "/acme/api/v1/analytics/chat/most-active-visit-times";
    let labels = |body: &serde_json::Value| -> Vec<String> {
        body["data"]["mostActiveVisitTimes"]["data"]["graphRow"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["label"].as_str().unwrap().to_owned())
            .collect()
    };
    for (start, end, offset, rows, last) in [
        (
            "2026-03-08 00:00:00",
            "2026-03-08 22:59:59",
            "-05:00",
            23,
            "10 PM",
        ),
        (
            "2026-11-01 00:00:00",
            "2026-11-02 00:59:59",
            "-04:00",
            25,
            "12 AM",
        ),
        (
            "2026-11-20 00:00:00",
            "2026-11-22 23:59:59",
            "-05:00",
            24,
            "11 PM",
        ),
    ] {
        let query = [("start_date", start), ("end_date", end), ("offset", offset)];
        let first = get(&sim, hours, &query, Some("k"))
            .await
            .text()
            .await
            .unwrap();
        let again = get(&sim, hours, &query, Some("k"))
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(first, again, "{start}");
        let labels = labels(&serde_json::from_str(&first).unwrap());
        assert_eq!(labels.len(), rows, "{start}");
        assert_eq!(
            (labels[0].as_str(), labels[rows - 1].as_str()),
            ("12 AM", last)
        );
    }
}

/// The client against the simulator: every report parses, the data is seeded by account and
/// date, and the day has a row for every hour.
#[tokio::test]
async fn the_client_reads_seeded_days() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let text = crate::support::config(
        &sim.base_url(),
        &[
            crate::support::team("a", "acme", &[("generic", "http://127.0.0.1:9/")]),
            crate::support::team("b", "globex", &[("generic", "http://127.0.0.1:9/")]),
        ],
    );
    let teams = config::parse(&text, Path::new("."), &|_| None)
        .unwrap()
        .teams;
    let client = Client::with_retry(
        Duration::from_secs(5),
        4,
        RetryPolicy::within(Duration::from_secs(1)),
    );
    let mut busy_days = 0;
    for day in 1..=10 {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 7, day).unwrap();
        let window = Window::for_date(teams[0].zone, date);
        let acme = client.fetch_day(&teams[0], &window).await.unwrap();
        assert_eq!(acme, client.fetch_day(&teams[0], &window).await.unwrap());
        assert_ne!(acme, client.fetch_day(&teams[1], &window).await.unwrap());
        if !acme.countries.is_empty() {
            busy_days += 1;
            let mut hours: Vec<u8> = acme.hours.iter().map(|h| h.hour).collect();
            hours.sort();
            assert_eq!(hours, (0..24).collect::<Vec<u8>>());
        }
    }
    assert!(busy_days >= 5, "{busy_days} of 10 days had visitors");
}

#[tokio::test]
async fn the_simulate_command_serves_until_stopped() {
    /// Stops the simulator even when an assertion fails first.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_acquire-digest"))
            .args([
                "simulate",
                "--listen",
                "127.0.0.1:0",
                "--api-key",
                "sim-key",
                "--event",
                "Acme:2026-07-15:outage",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut banner = String::new();
    let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    stderr.read_line(&mut banner).unwrap();
    // Keep reading, as a terminal would: a closed pipe is not what an admin's simulator sees.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let addr = banner
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == ';').next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_owned();
    let url = format!("http://{addr}/acme/api/v1/analytics/chat/visitor-reference");
    let client = reqwest::Client::new();
    let denied = client
        .get(&url)
        .query(&DAY)
        .bearer_auth("other")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let allowed = client
        .get(&url)
        .query(&DAY)
        .bearer_auth("sim-key")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let body: serde_json::Value = allowed.json().await.unwrap();
    let rows = &body["data"]["visitorReference"]["data"]["graphRow"]["data"];
    assert_eq!(rows, &serde_json::json!([]), "the outage on acme's day");
    let other = client
        .get(url.replace("/acme/", "/globex/"))
        .query(&DAY)
        .bearer_auth("sim-key")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = other.json().await.unwrap();
    let rows = &body["data"]["visitorReference"]["data"]["graphRow"]["data"];
    assert!(!rows.as_array().unwrap().is_empty(), "{body}");
}

#[test]
fn a_bad_event_is_refused_naming_its_bad_part() {
    let empty = Workspace::new("");
    for (event, says) in [
        (
            "acme:2026-13-01:outage",
            "2026-13-01 is not a date (YYYY-MM-DD)",
        ),
        (
            "acme:2026-07-15:boom",
            "\"boom\" is not an event; use outage, spike or late",
        ),
        ("acme-2026-07-15-late", "ACCOUNT:DATE:KIND"),
    ] {
        let output = empty.run(
            &["simulate", "--listen", "127.0.0.1:0", "--event", event],
            &[],
        );
        assert!(!output.status.success(), "{event}");
        let said = stderr(&output);
        assert!(
            said.contains(event) && said.contains(says),
            "{event}: {said}"
        );
    }
}

/// The first of `acct-0`..`acct-9999` whose usual weekday is within 10% of `visitors`.
fn account_near(visitors: f64) -> String {
    (0..10_000)
        .map(|i| format!("acct-{i}"))
        .find(|account| (simulator::usual_visitors(account) / visitors - 1.0).abs() < 0.1)
        .unwrap()
}

/// One digest's fetch of `account`'s 15 July 2026 from `sim`, as the client makes it.
async fn fetch_day(sim: &RunningSimulator, account: &str) -> DayReport {
    let text = crate::support::config(
        &sim.base_url(),
        &[crate::support::team(
            "a",
            account,
            &[("generic", "http://127.0.0.1:9/")],
        )],
    );
    let team = config::parse(&text, Path::new("."), &|_| None)
        .unwrap()
        .teams
        .remove(0);
    let client = Client::with_retry(
        Duration::from_secs(5),
        4,
        RetryPolicy::within(Duration::from_secs(1)),
    );
    let date = chrono::NaiveDate::from_ymd_opt(2026, 7, 15).unwrap();
    client
        .fetch_day(&team, &Window::for_date(team.zone, date))
        .await
        .unwrap()
}

fn visitors(report: &DayReport) -> Vec<(String, u64)> {
    let rows = report
        .countries
        .iter()
        .map(|c| (c.name.clone(), c.visitors));
    rows.collect()
}

fn with_events(events: &[String]) -> SimulatorOptions {
    SimulatorOptions {
        events: events.iter().map(|e| e.parse().unwrap()).collect(),
        ..SimulatorOptions::default()
    }
}

#[tokio::test]
async fn outages_and_spikes_are_served_on_their_day() {
    let (quiet, busy) = (account_near(300.0), account_near(2_000.0));
    let plain = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let eventful = simulator::spawn(with_events(&[
        format!("{quiet}:2026-07-15:outage"),
        format!("{busy}:2026-07-15:spike"),
    ]))
    .await
    .unwrap();

    let normal = fetch_day(&plain, &quiet).await;
    assert!(!normal.countries.is_empty());
    let outage = fetch_day(&eventful, &quiet).await;
    assert!(outage.countries.is_empty() && outage.pages.is_empty());
    assert!(outage.referrers.is_empty());
    assert_eq!(outage.hours.len(), 24);
    assert!(outage.hours.iter().all(|h| h.activity == 0));

    let normal = fetch_day(&plain, &busy).await;
    let spike = fetch_day(&eventful, &busy).await;
    let tripled: Vec<(String, u64)> = visitors(&normal)
        .into_iter()
        .map(|(name, visitors)| (name, 3 * visitors))
        .collect();
    assert_eq!(visitors(&spike), tripled);
    let total = |r: &DayReport| r.countries.iter().map(|c| c.visitors).sum::<u64>();
    assert_eq!(total(&spike), 3 * total(&normal));
    let activity = |r: &DayReport| r.hours.iter().map(|h| h.activity).collect::<Vec<_>>();
    let tripled: Vec<u64> = activity(&normal).iter().map(|a| 3 * a).collect();
    assert_eq!(activity(&spike), tripled);
}

/// Each digest fetch is one read of every endpoint: the first finds nothing, the second half,
/// the third all of it.
#[tokio::test]
async fn a_late_day_fills_in_over_three_fetches() {
    let account = account_near(500.0);
    let plain = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let late = simulator::spawn(with_events(&[format!("{account}:2026-07-15:late")]))
        .await
        .unwrap();
    let whole = fetch_day(&plain, &account).await;

    let first = fetch_day(&late, &account).await;
    assert!(first.countries.is_empty() && first.pages.is_empty());
    assert!(first.referrers.is_empty());
    assert!(first.hours.iter().all(|h| h.activity == 0));

    let second = fetch_day(&late, &account).await;
    let halved: Vec<(String, u64)> = visitors(&whole)
        .into_iter()
        .map(|(name, visitors)| (name, visitors / 2))
        .filter(|(_, visitors)| *visitors > 0)
        .collect();
    assert_eq!(visitors(&second), halved);
    let chats = |r: &DayReport| r.referrers.iter().map(|s| s.chats).collect::<Vec<_>>();
    let halved: Vec<u64> = chats(&whole)
        .iter()
        .map(|c| c / 2)
        .filter(|&c| c > 0)
        .collect();
    assert_eq!(chats(&second), halved);
    for (half, whole) in second.hours.iter().zip(&whole.hours) {
        assert!(half.activity <= whole.activity / 2, "{half:?} {whole:?}");
    }

    assert_eq!(fetch_day(&late, &account).await, whole);
    assert_eq!(fetch_day(&late, &account).await, whole);
}

#[test]
fn demo_needs_no_config_network_or_keys() {
    let empty = Workspace::new("this is not a config and demo must not read it");
    let output = empty.run(&["demo"], &[]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    for team in ["support-apac", "sales-emea", "growth-americas"] {
        assert!(out.contains(team), "no {team} in:\n{out}");
    }
    for zone in ["Asia/Kolkata", "Europe/Berlin", "America/New_York"] {
        assert!(out.contains(zone), "no {zone} in:\n{out}");
    }
    assert!(
        out.matches("Top countries").count() + out.matches("No visitors").count() >= 3,
        "{out}"
    );
    assert!(!out.contains("hooks.slack.com/services"), "{out}");
}
