//! The unusual-day rule over a simulated year, read through the real client from the
//! simulator, as the daemon reads its baseline days: is it quiet on normal days at every volume,
//! and does it speak on the days that went wrong on purpose?

use std::path::Path;
use std::time::Duration;

use acquire_digest::config::{self, Team};
use acquire_digest::fetch::{Client, DayReport};
use acquire_digest::http::RetryPolicy;
use acquire_digest::insight::{self, BASELINE_DAYS, Direction, Metric, Unusual};
use acquire_digest::schedule::Window;
use acquire_digest::simulator::{self, EventKind, SimulatedEvent, SimulatorOptions};
use chrono::{Days, NaiveDate};
use futures::StreamExt;

use serde_json::json;

use crate::support::{InProcess, Scripted, Workspace, config, minutes_until, team, with_insights};

/// The first of `acct-0`..`acct-9999` whose usual weekday is within 10% of `visitors`.
fn account_near(visitors: f64) -> String {
    (0..10_000)
        .map(|i| format!("acct-{i}"))
        .find(|account| (simulator::usual_visitors(account) / visitors - 1.0).abs() < 0.1)
        .unwrap_or_else(|| panic!("no account near {visitors} visitors a day"))
}

/// The year's injected days, the same dates for every account: an outage and a spike every 23
/// days, so each weekday gets both and the eight weeks before a day hold two or three of them,
/// as a history with a bad day in it does.
fn event_on(day_of_year: u64) -> Option<EventKind> {
    match day_of_year % 23 {
        5 => Some(EventKind::Outage),
        16 => Some(EventKind::Spike),
        _ => None,
    }
}

struct Tally {
    account: String,
    usual: f64,
    normal_days: usize,
    false_alarms: usize,
    outages_to_catch: usize,
    outages_caught: usize,
    spikes: usize,
    spikes_caught: usize,
    /// Normal days a "±50% against the same day last week" rule on visitors would flag, when
    /// last week's day was normal too.
    percentage_alarms: usize,
}

/// Every day of 2026 judged against the 56 days before it, as served with the events in them.
async fn a_year_of(account: &str) -> Tally {
    let first = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let days: Vec<NaiveDate> = (0..365).map(|i| first + Days::new(i)).collect();
    let events = days
        .iter()
        .enumerate()
        .filter_map(|(i, &date)| {
            event_on(i as u64).map(|kind| SimulatedEvent {
                account: account.to_owned(),
                date,
                kind,
            })
        })
        .collect();
    let sim = simulator::spawn(SimulatorOptions {
        events,
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let text = config(
        &sim.base_url(),
        &[team("t", account, &[("generic", "http://127.0.0.1:9/")])],
    );
    let team: Team = config::parse(&text, Path::new("."), &|_| None)
        .unwrap()
        .teams
        .remove(0);
    let client = Client::with_retry(
        Duration::from_secs(10),
        8,
        RetryPolicy::within(Duration::from_secs(1)),
    );
    let read_from = first - Days::new(u64::from(BASELINE_DAYS));
    let totals: Vec<(NaiveDate, (u64, u64))> = futures::stream::iter(
        (0..365 + u64::from(BASELINE_DAYS)).map(|i| read_from + Days::new(i)),
    )
    .map(|date| {
        let (client, team) = (&client, &team);
        async move {
            let window = Window::for_date(team.zone, date);
            let countries = client.fetch_countries(team, &window).await.unwrap();
            let report = DayReport {
                countries,
                ..DayReport::default()
            };
            (date, insight::headline(&report))
        }
    })
    .buffered(8)
    .collect()
    .await;

    let mut tally = Tally {
        account: account.to_owned(),
        usual: simulator::usual_visitors(account),
        normal_days: 0,
        false_alarms: 0,
        outages_to_catch: 0,
        outages_caught: 0,
        spikes: 0,
        spikes_caught: 0,
        percentage_alarms: 0,
    };
    for (i, &(date, (visitors, chats))) in totals.iter().enumerate().skip(BASELINE_DAYS as usize) {
        let history = &totals[i - BASELINE_DAYS as usize..i];
        let judged = |metric: Metric| -> Option<Unusual> {
            let earlier: Vec<(NaiveDate, u64)> = history
                .iter()
                .map(|&(d, (v, c))| (d, metric.of(v, c)))
                .collect();
            insight::unusual_day(metric, date, metric.of(visitors, chats), &earlier)
        };
        let flags: Vec<Unusual> = Metric::BOTH.into_iter().filter_map(judged).collect();
        match event_on((i - BASELINE_DAYS as usize) as u64) {
            None => {
                tally.normal_days += 1;
                tally.false_alarms += usize::from(!flags.is_empty());
                let day_of_year = (i - BASELINE_DAYS as usize) as u64;
                if day_of_year < 7 || event_on(day_of_year - 7).is_none() {
                    let last_week = totals[i - 7].1.0 as f64;
                    tally.percentage_alarms +=
                        usize::from((visitors as f64 - last_week).abs() >= 0.5 * last_week);
                }
            }
            Some(EventKind::Outage) => {
                assert_eq!((visitors, chats), (0, 0), "{account} {date} is an outage");
                let mut same_weekday: Vec<u64> = history
                    .iter()
                    .filter(|(d, _)| (date - *d).num_days() % 7 == 0)
                    .map(|&(_, (v, _))| v)
                    .collect();
                same_weekday.sort();
                let median = (same_weekday[3] + same_weekday[4]) as f64 / 2.0;
                if median >= 10.0 {
                    tally.outages_to_catch += 1;
                    let caught = flags.iter().any(|f| {
                        f.metric == Metric::Visitors && f.direction == Direction::NoneRecorded
                    });
                    assert!(
                        caught,
                        "{account}'s outage on {date} went unflagged: {flags:?}"
                    );
                    tally.outages_caught += 1;
                }
            }
            Some(_) => {
                tally.spikes += 1;
                tally.spikes_caught +=
                    usize::from(flags.iter().any(|f| f.direction == Direction::High));
            }
        }
    }
    tally
}

/// The figures the README quotes: run with `--nocapture` to see them.
#[tokio::test]
async fn over_a_simulated_year_the_unusual_line_is_rare_on_normal_days_and_catches_what_went_wrong()
{
    let mut all_normal = 0;
    let mut all_false = 0;
    for size in [3.0, 12.0, 60.0, 1_000.0] {
        let tally = a_year_of(&account_near(size)).await;
        eprintln!(
            "{} (usually {:.0} a weekday): unusual on {} of {} normal days (a ±50% rule: {}); {} of {} outages to catch; {} of {} spikes",
            tally.account,
            tally.usual,
            tally.false_alarms,
            tally.normal_days,
            tally.percentage_alarms,
            tally.outages_caught,
            tally.outages_to_catch,
            tally.spikes_caught,
            tally.spikes
        );
        assert!(
            tally.false_alarms * 100 <= tally.normal_days,
            "{}: {} false alarms in {} normal days",
            tally.account,
            tally.false_alarms,
            tally.normal_days
        );
        if size >= 12.0 {
            assert!(
                tally.outages_to_catch * 2 >= 16,
                "{}: only {} outages where ten or more are usual",
                tally.account,
                tally.outages_to_catch
            );
        }
        if size >= 60.0 {
            assert!(
                tally.spikes_caught * 10 >= tally.spikes * 9,
                "{}: {} of {} spikes caught",
                tally.account,
                tally.spikes_caught,
                tally.spikes
            );
        }
        all_normal += tally.normal_days;
        all_false += tally.false_alarms;
    }
    eprintln!("all accounts: unusual on {all_false} of {all_normal} normal days");
}

/// Issue 20: the daemon against a day that is late to arrive (empty on the first read, half
/// there on the second, whole from the third) waits for it, though the half read no longer
/// looks low, and sends the whole day once two reads agree: one digest, not provisional.
#[tokio::test]
async fn the_daemon_waits_for_a_late_day_and_sends_it_whole_once() {
    // Wednesday 25 Nov 2026 at 09:00 in Kolkata covers Tuesday.
    // Small enough that its half day is not unusually low: only the wait for agreement holds
    // it back.
    let account = account_near(20.0);
    let day = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    let sim = simulator::spawn(SimulatorOptions {
        events: vec![SimulatedEvent {
            account: account.clone(),
            date: day,
            kind: EventKind::Late,
        }],
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let whole = {
        let undisturbed = simulator::spawn(SimulatorOptions::default()).await.unwrap();
        let text = config(
            &undisturbed.base_url(),
            &[team("t", &account, &[("generic", "http://127.0.0.1:9/")])],
        );
        let team = config::parse(&text, Path::new("."), &|_| None)
            .unwrap()
            .teams
            .remove(0);
        let client = Client::with_retry(
            Duration::from_secs(10),
            4,
            RetryPolicy::within(Duration::from_secs(1)),
        );
        let report = client
            .fetch_day(&team, &Window::for_date(team.zone, day))
            .await
            .unwrap();
        insight::headline(&report)
    };
    assert!(whole.0 >= 12, "{account} had {} visitors", whole.0);

    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[with_insights(team(
            "apac",
            &account,
            &[("generic", &hooks.url("/generic"))],
        ))],
    ));
    let (clock, daemon) = InProcess::start(&work, "2026-11-25T03:29:58Z".parse().unwrap());
    let minutes = minutes_until(&clock, || !hooks.seen_at("/generic").is_empty()).await;
    // Empty, half, whole, whole again: three waits of 15 minutes.
    assert!(minutes >= 45, "sent after {minutes} minutes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    clock.jump(chrono::Duration::hours(1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.finish().await;
    let sent = hooks.seen_at("/generic");
    assert_eq!(sent.len(), 1);
    let body = sent[0].json();
    assert_eq!(body["provisional"], false, "{body}");
    assert_eq!(
        (&body["totals"]["visitors"], &body["totals"]["chats"]),
        (&json!(whole.0), &json!(whole.1)),
        "{body}"
    );
    assert_eq!(body["unusual"], json!([]), "{body}");
    assert!(
        !body["text"]
            .as_str()
            .unwrap()
            .contains("may still be updating"),
        "{}",
        body["text"]
    );
}
