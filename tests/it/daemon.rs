//! `acquire-digest run`: the real daemon with seconds-level schedules against the simulator and
//! a loopback webhook receiver.

use std::time::Duration;

use acquire_digest::simulator::{self, SimulatorOptions};
use chrono::{Timelike, Utc};
use serde_json::json;

use crate::support::{
    Daemon, InProcess, Reply, Scripted, Workspace, config, shown, team, wait_until, zone_at,
};

const EVERY_SECOND: &str = "* * * * * *";

fn with_schedule(team: String, schedule: &str, zone: &str) -> String {
    team.replace("0 9 * * *", schedule)
        .replace("Asia/Kolkata", zone)
}

/// A 6-field cron line that fires once a day, `seconds` from now, read in `offset`.
fn once_a_day_in(seconds: i64, offset: chrono::FixedOffset) -> String {
    let at = (Utc::now() + chrono::Duration::seconds(seconds)).with_timezone(&offset);
    format!("{} {} {} * * *", at.second(), at.minute(), at.hour())
}

const SECONDS: Duration = Duration::from_secs(20);

#[tokio::test]
async fn one_delivery_per_team_and_day_however_often_the_schedule_fires() {
    let (noon, noon_offset) = zone_at(12);
    let (afternoon, _) = zone_at(15);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[
            with_schedule(
                team(
                    "apac",
                    "acme",
                    &[
                        ("slack", &hooks.url("/apac")),
                        ("generic", &hooks.url("/apac-json")),
                    ],
                ),
                EVERY_SECOND,
                &noon,
            ),
            with_schedule(
                team("us", "initech", &[("slack", &hooks.url("/us"))]),
                "*/2 * * * * *",
                &afternoon,
            ),
        ],
    ));
    let daemon = Daemon::start(&work);
    wait_until("three deliveries", SECONDS, || hooks.seen().len() >= 3).await;
    // Let the schedules fire a few more times.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(hooks.seen_at("/apac").len(), 1, "{}", daemon.log());
    assert_eq!(hooks.seen_at("/apac-json").len(), 1);
    assert_eq!(hooks.seen_at("/us").len(), 1);
    let body = hooks.seen_at("/apac-json")[0].json();
    let yesterday =
        (Utc::now().with_timezone(&noon_offset).date_naive() - chrono::Days::new(1)).to_string();
    assert_eq!(body["date"], yesterday);
    assert!(daemon.log().contains("next digest"), "{}", daemon.log());
}

#[tokio::test]
async fn a_restart_does_not_post_again() {
    let (noon, _) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[with_schedule(
            team("apac", "acme", &[("slack", &hooks.url("/apac"))]),
            EVERY_SECOND,
            &noon,
        )],
    ));
    let mut first = Daemon::start(&work);
    wait_until("the first delivery", SECONDS, || hooks.seen().len() == 1).await;
    first.signal("TERM");
    assert!(first.wait_exit(SECONDS).await.unwrap().success());

    let second = Daemon::start(&work);
    second.wait_for_log("next digest", SECONDS).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hooks.seen().len(), 1, "{}", second.log());
}

/// Issue 9, defect 1: a container killed mid-POST and restarted runs the daemon as pid 1 in a
/// fresh pid namespace again. A claim judged by pid and namespace looked held forever; a lease
/// just expires, and the restarted daemon delivers within it.
#[tokio::test]
async fn a_container_killed_mid_post_delivers_after_restart_within_the_lease() {
    let (noon, _) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    hooks.script(
        "/slow",
        vec![Reply::new(200, "ok").delay(Duration::from_secs(60))],
    );
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[with_schedule(
            team("apac", "acme", &[("generic", &hooks.url("/slow"))]),
            EVERY_SECOND,
            &noon,
        )],
    ));
    let container = ["unshare", "--pid", "--fork", "--kill-child"];
    let mut first = Daemon::start_in(&work, &container);
    wait_until("the POST to start", SECONDS, || hooks.seen().len() == 1).await;
    first.signal("KILL");
    first.wait_exit(SECONDS).await.unwrap();

    hooks.script("/slow", vec![Reply::new(200, "ok")]);
    let second = Daemon::start_in(&work, &container);
    let lease = Duration::from_secs(120);
    wait_until("the resend", lease + SECONDS, || hooks.seen().len() == 2).await;
    second.wait_for_log("delivered", SECONDS).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The POST whose answer the kill lost, and one resend: never a loss, at most one copy more.
    let seen = hooks.seen();
    assert_eq!(seen.len(), 2, "{}", second.log());
    assert_eq!(
        seen[0].headers["webhook-id"], seen[1].headers["webhook-id"],
        "a receiver can drop the repeat"
    );
}

/// Team apac, posting to `hooks`' /apac, whose daily firing where it is about noon was 10
/// minutes ago: next in about 24 hours.
fn fired_ten_minutes_ago(hooks: &Scripted) -> String {
    let (noon, offset) = zone_at(12);
    with_schedule(
        team("apac", "acme", &[("generic", &hooks.url("/apac"))]),
        &once_a_day_in(-600, offset),
        &noon,
    )
}

#[tokio::test]
async fn a_digest_missed_while_down_is_caught_up_at_start() {
    let (noon, offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let missed = fired_ten_minutes_ago(&hooks);
    let disabled = with_schedule(
        team("off", "acme", &[("generic", &hooks.url("/off"))]),
        &once_a_day_in(-600, offset),
        &noon,
    )
    .replace("schedule =", "catch_up = \"0\"\nschedule =");
    let stale = with_schedule(
        team("stale", "acme", &[("generic", &hooks.url("/stale"))]),
        &once_a_day_in(-600, offset),
        &noon,
    )
    .replace("schedule =", "catch_up = \"5m\"\nschedule =");
    let work = Workspace::new(&config(&sim.base_url(), &[missed, disabled, stale]));
    let _daemon = Daemon::start(&work);
    wait_until("the catch-up", SECONDS, || {
        hooks.seen_at("/apac").len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        hooks.seen_at("/off").is_empty(),
        "catch_up = \"0\" disables it"
    );
    assert!(
        hooks.seen_at("/stale").is_empty(),
        "a firing older than catch_up is not caught up"
    );
    let body = hooks.seen_at("/apac")[0].json();
    let firing = (Utc::now() - chrono::Duration::seconds(600)).with_timezone(&offset);
    let expected = (firing.date_naive() - chrono::Days::new(1)).to_string();
    assert_eq!(
        body["date"], expected,
        "labelled with the missed firing's day"
    );
}

/// A ledger damaged in its middle, which only reading every page finds: the daemon checks it
/// before it does anything with it, sends nothing from it (not a digest, nor an alert a
/// process before it left unsent), and stops saying what to do; `check --online` says the
/// same.
#[tokio::test]
async fn a_ledger_damaged_in_its_middle_stops_the_daemon_before_anything_is_sent() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    // Due now: caught up as soon as its lease may be taken.
    let missed = fired_ten_minutes_ago(&hooks);
    let work = Workspace::new(&format!(
        "{}\n[alerts]\nwebhooks = [{{ kind = \"generic\", url = \"{}\" }}]\n",
        config(&sim.base_url(), &[missed]),
        hooks.url("/ops"),
    ));
    let unsent =
        "INSERT INTO alerts (team, first_day, last_day, webhook, reason, raised_at, detail)
        VALUES ('apac', '2026-07-15', '2026-07-15', 'generic', 'missed', 0, 'left unsent')";
    crate::support::ledger_with(&work, unsent).await;
    acquire_digest::db::testing::damage_a_middle_page(&work.path("ledger.db"))
        .await
        .unwrap();

    // As a large file's check takes seconds: nothing goes out meanwhile.
    let hold = acquire_digest::db::testing::hold_page_checks().await;
    let (_, in_process) = InProcess::start(&work, Utc::now());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hooks.seen().is_empty(), "sent during the check");
    drop(hold);
    let ended = tokio::time::timeout(SECONDS, in_process.ended()).await;
    let refused = ended
        .expect("still running on a damaged ledger")
        .unwrap_err();
    assert!(refused.to_string().contains("is damaged"), "{refused}");

    let mut daemon = Daemon::start(&work);
    let status = (daemon.wait_exit(SECONDS).await).expect("still running on a damaged ledger");
    let log = daemon.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("ledger.db: is damaged") && log.contains("restore it from a backup"),
        "{log}"
    );
    assert!(!log.contains("every page checked"), "{log}");
    let dir = work.dir.path().to_owned();
    let check = crate::support::run_beside(&dir, &["check", "--online"], &[]).await;
    let out = crate::support::stdout(&check);
    assert!(!check.status.success(), "{out}");
    assert!(
        out.contains("ledger: FAILED") && out.contains("is damaged"),
        "{out}"
    );
    assert!(hooks.seen().is_empty(), "{log}");
}

/// `[state] keep_days`: the daemon forgets the digests that ended before it, once it is
/// delivering, and keeps the rest.
#[tokio::test]
async fn the_daemon_forgets_digests_older_than_keep_days() {
    use sqlx::Connection;

    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    // Due now: caught up as soon as its lease may be taken.
    let missed = fired_ten_minutes_ago(&hooks);
    let text = config(&sim.base_url(), &[missed]);
    let work = Workspace::new(&text.replace(
        "path = \"ledger.db\"",
        "path = \"ledger.db\"\nkeep_days = 14",
    ));
    let today = Utc::now().date_naive();
    let old = |days: u64| (today - chrono::Days::new(days)).to_string();
    // A month-old digest, and another team's of each of the 20 days before today.
    let rows: Vec<String> = (std::iter::once(("apac", 30)))
        .chain((1..=20).map(|days| ("other", days)))
        .map(|(team, days)| {
            format!(
                "('{team}', '{0}', '{0}', 'generic', 'delivered')",
                old(days)
            )
        })
        .collect();
    let rows = format!(
        "INSERT INTO digests (team, first_day, last_day, webhook, state) VALUES {}",
        rows.join(", ")
    );
    let url = crate::support::ledger_with(&work, &rows).await;

    let _daemon = Daemon::start(&work);
    wait_until("the catch-up", SECONDS, || {
        hooks.seen_at("/apac").len() == 1
    })
    .await;
    sqlx::any::install_default_drivers();
    let mut reader = sqlx::AnyConnection::connect(&url).await.unwrap();
    let mut days: Vec<String> = Vec::new();
    for _ in 0..100 {
        days = sqlx::query_scalar("SELECT last_day FROM digests ORDER BY last_day")
            .fetch_all(&mut reader)
            .await
            .unwrap();
        if !days.contains(&old(30)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!days.contains(&old(30)), "{days:?}");
    // The last 14 days, and the two a clock ahead could have delivered within catch_up (12
    // hours): one more when the digest delivered now ends today, in a zone ahead of UTC.
    assert!((1..=14).all(|d| days.contains(&old(d))), "{days:?}");
    assert!([old(16), old(15)].contains(&days[0]), "{days:?}");
    let horizon: String = sqlx::query_scalar("SELECT before_day FROM forgotten")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(horizon, days[0], "recorded, for `once --date`");
}

/// `[state] keep_days` with a clock that jumps a month ahead: the daemon records the firings
/// it skipped as missed and delivers the one due now, then forgets. It must still remember
/// every day within `keep_days` of the real date, or the digests within `catch_up` of it
/// would go out again once the clock is back.
#[tokio::test]
async fn a_clock_a_month_ahead_forgets_nothing_the_daemon_needs_once_it_is_back() {
    use sqlx::Connection;

    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let text = config(&sim.base_url(), &[fired_ten_minutes_ago(&hooks)]);
    let work = Workspace::new(&text.replace(
        "path = \"ledger.db\"",
        "path = \"ledger.db\"\nkeep_days = 14",
    ));
    let today = Utc::now().date_naive();
    let old = |days: u64| (today - chrono::Days::new(days)).to_string();
    let rows: Vec<String> = (1..=20)
        .map(|days| format!("('other', '{0}', '{0}', 'generic', 'delivered')", old(days)))
        .collect();
    let rows = format!(
        "INSERT INTO digests (team, first_day, last_day, webhook, state) VALUES {}",
        rows.join(", ")
    );
    let url = crate::support::ledger_with(&work, &rows).await;

    sqlx::any::install_default_drivers();
    let mut reader = sqlx::AnyConnection::connect(&url).await.unwrap();
    // The day the ledger has forgotten before, once it differs from `was`.
    async fn forgotten_past(reader: &mut sqlx::AnyConnection, was: Option<&str>) -> String {
        for _ in 0..100 {
            let day: Option<String> = sqlx::query_scalar("SELECT before_day FROM forgotten")
                .fetch_optional(&mut *reader)
                .await
                .unwrap();
            if let Some(day) = day.filter(|day| Some(day.as_str()) != was) {
                return day;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the ledger forgot nothing past {was:?}");
    }

    let (clock, daemon) = InProcess::start(&work, Utc::now());
    wait_until("today's digest", SECONDS, || {
        hooks.seen_at("/apac").len() == 1
    })
    .await;
    let first = forgotten_past(&mut reader, None).await;
    clock.jump(chrono::Duration::days(30));
    wait_until("the digest due a month on", SECONDS, || {
        hooks.seen_at("/apac").len() == 2
    })
    .await;
    // A month on it holds one more day, so it forgets one more; had it counted the missed
    // firings, it would forget everything before the month it jumped.
    forgotten_past(&mut reader, Some(&first)).await;
    daemon.finish().await;
    let days: Vec<String> = sqlx::query_scalar(
        "SELECT last_day FROM digests WHERE state <> 'missed' ORDER BY last_day",
    )
    .fetch_all(&mut reader)
    .await
    .unwrap();
    assert!((1..=14).all(|d| days.contains(&old(d))), "{days:?}");
    let today_s = hooks.seen_at("/apac")[0].json()["date"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(days.contains(&today_s), "{today_s} in {days:?}");
    let missed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM digests WHERE team = 'apac' AND state = 'missed'")
            .fetch_one(&mut reader)
            .await
            .unwrap();
    assert!(missed >= 28, "the month's firings skipped: {missed}");
}

#[tokio::test]
async fn sigterm_exits_zero_promptly() {
    let (noon, offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[with_schedule(
            team("apac", "acme", &[("slack", &hooks.url("/apac"))]),
            &once_a_day_in(3600, offset),
            &noon,
        )],
    ));
    let mut daemon = Daemon::start(&work);
    daemon.wait_for_log("next digest", SECONDS).await;
    let asked = std::time::Instant::now();
    daemon.signal("TERM");
    let status = daemon
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("still running 5 s after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test]
async fn a_broken_config_on_sighup_keeps_the_old_one_running() {
    let (noon, offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    // Fires once, a few seconds after the broken reload.
    let old = with_schedule(
        team("apac", "acme", &[("generic", &hooks.url("/apac"))]),
        &once_a_day_in(10, offset),
        &noon,
    );
    let work = Workspace::new(&config(&sim.base_url(), std::slice::from_ref(&old)));
    let daemon = Daemon::start(&work);
    daemon.wait_for_log("next digest", SECONDS).await;

    std::fs::write(
        work.config(),
        "[[teams]]\nname = \"broken\"\ntimezone = \"Nowhere/Land\"\n",
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("new config rejected", SECONDS).await;
    assert!(daemon.log().contains("Nowhere/Land"), "{}", daemon.log());
    wait_until("the old schedule's delivery", SECONDS, || {
        hooks.seen_at("/apac").len() == 1
    })
    .await;

    // A valid config on the next SIGHUP takes over: a new team is caught up at once.
    let added = with_schedule(
        team("emea", "globex", &[("generic", &hooks.url("/emea"))]),
        &once_a_day_in(-60, offset),
        &noon,
    );
    std::fs::write(work.config(), config(&sim.base_url(), &[old, added])).unwrap();
    daemon.signal("HUP");
    wait_until("the new team's delivery", SECONDS, || {
        hooks.seen_at("/emea").len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        hooks.seen_at("/apac").len(),
        1,
        "the reload re-posted a delivered digest"
    );
}

/// Retries come every ten seconds in these tests (the least `check` allows), not every ten
/// minutes.
fn retrying_soon(config: String) -> String {
    format!("retry_every = \"10s\"\n{config}")
}

const RETRY_ROUND: Duration = Duration::from_secs(40);

#[tokio::test]
async fn a_webhook_that_refused_is_not_resent_while_another_is_retried() {
    let (noon, offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    hooks.script("/gone", vec![Reply::new(404, "no_service")]);
    hooks.script("/busy", vec![Reply::new(503, "busy")]);
    let missed = with_schedule(
        team(
            "apac",
            "acme",
            &[
                ("slack", &hooks.url("/gone")),
                ("generic", &hooks.url("/busy")),
            ],
        ),
        &once_a_day_in(-60, offset),
        &noon,
    );
    let work = Workspace::new(&retrying_soon(config(&sim.base_url(), &[missed])));
    let daemon = Daemon::start(&work);
    daemon.wait_for_log("tries again at", SECONDS).await;
    daemon.wait_for_log("giving up: apac", SECONDS).await;
    hooks.script("/busy", vec![Reply::new(200, "ok")]);
    wait_until("the busy webhook's delivery", RETRY_ROUND, || {
        daemon.log().contains(&format!(
            "generic ({}): delivered",
            shown(&hooks.url("/busy"))
        ))
    })
    .await;
    assert_eq!(
        hooks.seen_at("/gone").len(),
        1,
        "a permanent 404 was resent:\n{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("rejected with HTTP 404: no_service"),
        "{}",
        daemon.log()
    );
}

#[tokio::test]
async fn a_reload_reaches_a_day_that_is_being_retried() {
    let (noon, offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    hooks.script("/broken", vec![Reply::new(500, "down")]);
    let broken = with_schedule(
        team("apac", "acme", &[("generic", &hooks.url("/broken"))]),
        &once_a_day_in(-60, offset),
        &noon,
    );
    let work = Workspace::new(&config(&sim.base_url(), std::slice::from_ref(&broken)));
    let daemon = Daemon::start(&work);
    // The default retry_every is 10 minutes: only the reload can bring the fix in time.
    daemon.wait_for_log("tries again at", SECONDS).await;

    let fixed = broken.replace(&hooks.url("/broken"), &hooks.url("/fixed"));
    std::fs::write(work.config(), config(&sim.base_url(), &[fixed])).unwrap();
    daemon.signal("HUP");
    wait_until("the delivery to the fixed URL", SECONDS, || {
        hooks.seen_at("/fixed").len() == 1
    })
    .await;
    daemon
        .wait_for_log("failed digests are tried again now", SECONDS)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hooks.seen_at("/fixed").len(), 1, "{}", daemon.log());
}

#[tokio::test]
async fn a_day_another_process_holds_is_delivered_when_that_process_fails() {
    let (noon, offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    // The admin's `once` gets a slow 503, then 503s until it gives up.
    hooks.script(
        "/apac",
        vec![
            Reply::new(503, "busy").delay(Duration::from_secs(3)),
            Reply::new(503, "busy"),
        ],
    );
    let missed = with_schedule(
        team("apac", "acme", &[("slack", &hooks.url("/apac"))]),
        &once_a_day_in(-60, offset),
        &noon,
    );
    let work = Workspace::new(&retrying_soon(config(&sim.base_url(), &[missed])));
    let date = (Utc::now() - chrono::Duration::seconds(60))
        .with_timezone(&offset)
        .date_naive()
        - chrono::Days::new(1);
    let dir = work.dir.path().to_owned();
    // A holder that fails mid-write leaves its lease to expire: short ones, so that path fits
    // the wait below too. (The disk I/O errors, 522, once seen here when the other process
    // exited were this process's lock on the file dropped by `db::open_sqlite`'s probe.)
    let lease = [("ACQUIRE_DIGEST_LEASE_SECS", "10")];
    let admin = tokio::task::spawn_blocking(move || {
        let date = date.to_string();
        crate::support::run_in(&dir, &["once", "--date", &date], &lease)
    });
    wait_until("the admin's POST", SECONDS, || hooks.seen().len() == 1).await;

    let daemon = Daemon::start_with(&work, &[], &lease);
    let admin = admin.await.unwrap();
    assert!(
        !admin.status.success(),
        "the admin's once should have failed"
    );
    // The admin's budget allows one POST (its answer takes longer than the budget); a second
    // POST here would be the daemon's while the admin held the lease.
    assert_eq!(hooks.seen().len(), 1, "{}", daemon.log());
    hooks.script("/apac", vec![Reply::new(200, "ok")]);
    daemon
        .wait_for_log(
            &format!("slack ({}): delivered", shown(&hooks.url("/apac"))),
            RETRY_ROUND,
        )
        .await;
    // While the admin held it, the daemon posted nothing; then one POST delivered it.
    assert_eq!(hooks.seen().len(), 2, "{}", daemon.log());
}

/// Issue 9, defects 3 and 8, on the real daemon with a clock that jumps: a weekday schedule
/// reports Friday to Sunday on Monday as one digest, and waking from three days of suspend
/// delivers the day due now, not the oldest missed one.
#[tokio::test]
async fn a_weekday_team_gets_the_weekend_on_monday_and_the_right_day_after_a_suspend() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let work = berlin(&sim.base_url(), &hooks, "30 8 * * 1-5");
    // Monday 23 Nov 2026, 08:29:58 in Berlin.
    let (clock, stop) = InProcess::start(&work, "2026-11-23T07:29:58Z".parse().unwrap());
    wait_until("Monday's digest", SECONDS, || hooks.seen().len() == 1).await;
    let monday = hooks.seen()[0].json();
    assert_eq!(
        (&monday["date"], &monday["end_date"], &monday["days"]),
        (&json!("2026-11-20"), &json!("2026-11-22"), &json!(3))
    );
    assert!(
        monday["text"]
            .as_str()
            .unwrap()
            .contains("Fri 20 – Sun 22 Nov 2026"),
        "{}",
        monday["text"]
    );
    // Asleep from Monday morning until Thursday 10:00.
    clock.jump(chrono::Duration::hours(3 * 24 + 1) + chrono::Duration::minutes(30));
    wait_until("the digest due after waking", SECONDS, || {
        hooks.seen().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = hooks.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].json()["date"], json!("2026-11-25"));
    assert_eq!(seen[1].json()["days"], json!(1));
    stop.finish().await;
}

/// Issue 9, section 7: kill -9 at a random moment, restart, and check every digest: none lost,
/// none more than twice, and a second copy only of what was on the wire at the kill. At smoke
/// size by default; `KILL_TRIALS=50 cargo test --test it kill_9` runs the full measurement.
#[tokio::test]
async fn kill_9_at_random_points_loses_nothing_and_resends_only_what_was_on_the_wire() {
    let trials: usize = std::env::var("KILL_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    const TEAMS: usize = 8;
    let lease = [("ACQUIRE_DIGEST_LEASE_SECS", "3")];
    let (noon, _) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let (mut duplicates, mut on_wire_total) = (0, 0);
    for trial in 0..trials {
        let teams: Vec<String> = (0..TEAMS)
            .map(|i| {
                let path = format!("/{trial}/{i}");
                let delay = Duration::from_millis(fastrand::u64(0..600));
                hooks.script(&path, vec![Reply::new(200, "ok").delay(delay)]);
                with_schedule(
                    team(&format!("t{i}"), "acme", &[("generic", &hooks.url(&path))]),
                    EVERY_SECOND,
                    &noon,
                )
            })
            .collect();
        let work = Workspace::new(&config(&sim.base_url(), &teams));
        let mut first = Daemon::start_with(&work, &[], &lease);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..1800))).await;
        first.signal("KILL");
        first.wait_exit(SECONDS).await.unwrap();
        let killed = std::time::Instant::now();
        let prefix = format!("/{trial}/");
        let on_wire = hooks.on_the_wire_at(&prefix, killed);
        on_wire_total += on_wire.len();

        let second = Daemon::start_with(&work, &[], &lease);
        wait_until("every digest", SECONDS, || {
            (0..TEAMS).all(|i| !hooks.seen_at(&format!("/{trial}/{i}")).is_empty())
        })
        .await;
        // Long enough for a lease left by the kill to expire and its resend to go out.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let paths: Vec<String> = (0..TEAMS).map(|i| format!("/{trial}/{i}")).collect();
        duplicates +=
            hooks.assert_resent_only_what_was_on_the_wire(&paths, &on_wire, &|| second.log());
    }
    eprintln!(
        "{trials} kill -9 trials: 0 lost, {duplicates} duplicates, {on_wire_total} POSTs on the wire at the kills"
    );
}

/// The config's text with its ledger in a scratch PostgreSQL database, if `postgres`, and the
/// URL `ACQUIRE_DIGEST_DATABASE_URL` names it by (empty for SQLite). None when a test on
/// PostgreSQL has none (outside CI).
async fn with_ledger(postgres: bool, text: String) -> Option<(String, String)> {
    if !postgres {
        return Some((text, String::new()));
    }
    let server = crate::support::test_database_url()?;
    let database = acquire_digest::db::testing::scratch_database(&server)
        .await
        .unwrap();
    Some((crate::support::on_postgres(text), database))
}

/// A POST that outlasts the lease: the holder renews it, so another process (an admin's
/// `once`) stays off the digest the whole time instead of posting it again.
#[tokio::test]
async fn a_lease_is_renewed_while_a_slow_post_runs() {
    lease_renewed_while_a_slow_post_runs(false).await;
}

#[tokio::test]
async fn on_postgres_a_lease_is_renewed_while_a_slow_post_runs() {
    lease_renewed_while_a_slow_post_runs(true).await;
}

async fn lease_renewed_while_a_slow_post_runs(postgres: bool) {
    let (noon, offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    hooks.script(
        "/slow",
        vec![Reply::new(200, "ok").delay(Duration::from_secs(8))],
    );
    let text = config(
        &sim.base_url(),
        &[with_schedule(
            team("apac", "acme", &[("generic", &hooks.url("/slow"))]),
            EVERY_SECOND,
            &noon,
        )],
    )
    .replace("[delivery]\n", "[delivery]\ntimeout_secs = 20\n");
    let Some((text, database)) = with_ledger(postgres, text).await else {
        return;
    };
    let work = Workspace::new(&text);
    let lease = [
        ("ACQUIRE_DIGEST_LEASE_SECS", "2"),
        ("ACQUIRE_DIGEST_DATABASE_URL", database.as_str()),
    ];
    let daemon = Daemon::start_with(&work, &[], &lease);
    wait_until("the daemon's POST", SECONDS, || hooks.seen().len() == 1).await;
    // Twice the lease's length later, it is still held.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let yesterday =
        (Utc::now().with_timezone(&offset).date_naive() - chrono::Days::new(1)).to_string();
    let dir = work.dir.path().to_owned();
    let env = lease.map(|(name, value)| (name, value.to_owned()));
    let admin = tokio::task::spawn_blocking(move || {
        let env = env.each_ref().map(|(name, value)| (*name, value.as_str()));
        crate::support::run_in(&dir, &["once", "--date", &yesterday], &env)
    })
    .await
    .unwrap();
    let said = crate::support::stderr(&admin);
    assert!(!admin.status.success());
    assert!(
        said.contains("being delivered by another acquire-digest process"),
        "{said}"
    );
    daemon
        .wait_for_log(
            &format!("generic ({}): delivered", shown(&hooks.url("/slow"))),
            SECONDS,
        )
        .await;
    assert_eq!(hooks.seen().len(), 1, "{}", daemon.log());
}

/// SIGTERM cancels a POST still running after the grace period. Its lease is not released
/// (it may have arrived; the ledger counts it unanswered): an admin's `once` right after is
/// told another process holds it, and delivers it once the lease has expired.
#[tokio::test]
async fn sigterm_mid_post_leaves_a_lease_that_expires() {
    sigterm_mid_post_leaves_a_lease(false).await;
}

#[tokio::test]
async fn on_postgres_sigterm_mid_post_leaves_a_lease_that_expires() {
    sigterm_mid_post_leaves_a_lease(true).await;
}

async fn sigterm_mid_post_leaves_a_lease(postgres: bool) {
    let (noon, offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    hooks.script(
        "/slow",
        vec![Reply::new(200, "ok").delay(Duration::from_secs(60))],
    );
    let text = config(
        &sim.base_url(),
        &[with_schedule(
            team("apac", "acme", &[("generic", &hooks.url("/slow"))]),
            EVERY_SECOND,
            &noon,
        )],
    )
    .replace("[delivery]\n", "[delivery]\ntimeout_secs = 120\n");
    let Some((text, database)) = with_ledger(postgres, text).await else {
        return;
    };
    let work = Workspace::new(&text);
    let env = [
        ("ACQUIRE_DIGEST_DATABASE_URL", database.clone()),
        ("ACQUIRE_DIGEST_LEASE_SECS", "3".to_owned()),
    ];
    let daemon_env = env.each_ref().map(|(name, value)| (*name, value.as_str()));
    let mut daemon = Daemon::start_with(&work, &[], &daemon_env);
    wait_until("the daemon's POST", SECONDS, || hooks.seen().len() == 1).await;
    daemon.signal("TERM");
    let stopped = daemon
        .wait_exit(SECONDS)
        .await
        .expect("stops within the grace");
    assert!(stopped.success(), "{}", daemon.log());
    assert!(
        daemon.log().contains("their leases expire within"),
        "{}",
        daemon.log()
    );

    hooks.script("/slow", vec![Reply::new(200, "ok")]);
    let yesterday =
        (Utc::now().with_timezone(&offset).date_naive() - chrono::Days::new(1)).to_string();
    let once = || {
        let (dir, env, date) = (work.dir.path().to_owned(), env.clone(), yesterday.clone());
        tokio::task::spawn_blocking(move || {
            let env = env.each_ref().map(|(name, value)| (*name, value.as_str()));
            crate::support::run_in(&dir, &["once", "--date", &date], &env)
        })
    };
    let held = once().await.unwrap();
    let said = crate::support::stderr(&held);
    assert!(!held.status.success(), "{said}");
    assert!(said.contains("being delivered by another"), "{said}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let admin = once().await.unwrap();
    let said = crate::support::stderr(&admin);
    assert!(admin.status.success(), "{said}");
    assert!(said.contains(": delivered"), "{said}");
    assert_eq!(hooks.seen().len(), 2);
}

#[tokio::test]
async fn a_row_a_newer_version_wrote_leaves_every_other_digest_delivered() {
    use acquire_digest::{clock::WallClock, config::StateStore, db::testing, ledger::Ledger};

    let (noon, noon_offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let every_second = |name: &str, account: &str| {
        let url = hooks.url(&format!("/{name}"));
        with_schedule(team(name, account, &[("slack", &url)]), EVERY_SECOND, &noon)
    };
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[every_second("apac", "acme"), every_second("us", "initech")],
    ));
    // A newer version recorded apac's yesterday in a state this one doesn't know.
    let path = work.path("ledger.db");
    drop(
        Ledger::open(&StateStore::Sqlite(path.clone()), WallClock::new())
            .await
            .unwrap(),
    );
    let yesterday =
        (Utc::now().with_timezone(&noon_offset).date_naive() - chrono::Days::new(1)).to_string();
    let insert = format!(
        "INSERT INTO digests (team, first_day, last_day, webhook, state)
         VALUES ('apac', '{yesterday}', '{yesterday}', 'slack', 'archived')"
    );
    testing::execute_at(&testing::sqlite_file_url(&path), &insert)
        .await
        .unwrap();

    let daemon = Daemon::start(&work);
    wait_until("us's digest", SECONDS, || !hooks.seen_at("/us").is_empty()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(hooks.seen_at("/apac").is_empty(), "{}", daemon.log());
    assert_eq!(hooks.seen_at("/us").len(), 1);
    let log = daemon.log();
    assert_eq!(
        log.matches("\"archived\" is not one this version knows")
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("deliveries stopped"), "{log}");
}

/// Issue 18: a firing the daemon never saw (down from before it until past its catch_up) is
/// reported missed once, whichever process and however many starts see it; a team seen for
/// the first time reports nothing of its past.
#[tokio::test]
async fn a_firing_missed_while_down_is_reported_once() {
    missed_while_down_is_reported_once(false).await;
}

#[tokio::test]
async fn on_postgres_a_firing_missed_by_two_replicas_is_reported_once() {
    missed_while_down_is_reported_once(true).await;
}

async fn missed_while_down_is_reported_once(postgres: bool) {
    use acquire_digest::{clock::WallClock, config, db::testing, ledger::Ledger};

    let (noon, offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    // Fired 10 minutes ago, and yesterday: both past a 5-minute catch_up.
    let stale = |name: &str| {
        with_schedule(
            team(
                name,
                "acme",
                &[("generic", &hooks.url(&format!("/{name}")))],
            ),
            &once_a_day_in(-600, offset),
            &noon,
        )
        .replace("schedule =", "catch_up = \"5m\"\nschedule =")
    };
    let text = format!(
        "{}\n[alerts]\nwebhooks = [{{ kind = \"generic\", url = \"{}\" }}]\n",
        config(&sim.base_url(), &[stale("apac"), stale("newcomer")]),
        hooks.url("/ops"),
    );
    let Some((text, database)) = with_ledger(postgres, text).await else {
        return;
    };
    let work = Workspace::new(&text);
    // The ledger as a daemon that last looked two days ago left it.
    let (location, url) = if postgres {
        let location = config::StateStore::Postgres(config::DatabaseUrl::parse(&database).unwrap());
        (location, database.clone())
    } else {
        let path = work.path("ledger.db");
        (
            config::StateStore::Sqlite(path.clone()),
            testing::sqlite_file_url(&path),
        )
    };
    drop(Ledger::open(&location, WallClock::new()).await.unwrap());
    let two_days_ago = (Utc::now() - chrono::Duration::days(2)).timestamp_millis();
    let mark =
        format!("INSERT INTO watermarks (team, planned_until) VALUES ('apac', {two_days_ago})");
    testing::execute_at(&url, &mark).await.unwrap();

    let env = [("ACQUIRE_DIGEST_DATABASE_URL", database.as_str())];
    let replicas: Vec<Daemon> = (0..if postgres { 2 } else { 1 })
        .map(|_| Daemon::start_with(&work, &[], &env))
        .collect();
    wait_until("two alerts", SECONDS, || hooks.seen_at("/ops").len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log: String = replicas.iter().map(Daemon::log).collect();
    let alerts: Vec<serde_json::Value> = hooks.seen_at("/ops").iter().map(|s| s.json()).collect();
    assert_eq!(alerts.len(), 2, "one per span: {alerts:?}\n{log}");
    let today = Utc::now().with_timezone(&offset).date_naive();
    let mut days: Vec<String> = alerts
        .iter()
        .map(|a| a["date"].as_str().unwrap().to_owned())
        .collect();
    days.sort();
    let day = |back: u64| (today - chrono::Days::new(back)).to_string();
    assert_eq!(days, [day(2), day(1)], "{alerts:?}");
    assert!(
        alerts
            .iter()
            .all(|a| a["team"] == "apac" && a["reason"] == "missed")
    );
    assert_eq!(log.matches("MISSED").count(), 2, "{log}");
    assert!(log.contains("giving up: apac"), "{log}");
    assert!(hooks.seen_at("/apac").is_empty() && hooks.seen_at("/newcomer").is_empty());

    let status = crate::support::run_beside(work.dir.path(), &["status"], &env).await;
    assert_eq!(
        status.status.code(),
        Some(1),
        "{}",
        crate::support::stdout(&status)
    );
    assert_eq!(crate::support::stdout(&status).matches("MISSED").count(), 2);

    for mut replica in replicas {
        replica.signal("TERM");
        replica.wait_exit(SECONDS).await.unwrap();
    }
    let again = Daemon::start_with(&work, &[], &env);
    again.wait_for_log("next digest", SECONDS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hooks.seen_at("/ops").len(), 2, "{}", again.log());
    assert!(!again.log().contains("MISSED"), "{}", again.log());
}

/// Issue 18: a SQLite ledger that reads but won't take a write (another process holds its
/// write lock, as a full disk refuses writes): the daemon waits in a few lines, is not ready,
/// and delivers everything once writes work again.
#[tokio::test]
async fn a_sqlite_ledger_that_reads_but_cannot_write_is_waited_out() {
    use sqlx::{Connection, Executor};

    let (noon, offset) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let teams: Vec<String> = (0..5)
        .map(|i| {
            let url = hooks.url(&format!("/{i}"));
            with_schedule(
                team(&format!("t{i}"), "acme", &[("generic", &url)]),
                &once_a_day_in(8, offset),
                &noon,
            )
        })
        .collect();
    let text = format!(
        "retry_every = \"10s\"\n{}\n[server]\nlisten = \"127.0.0.1:0\"\n",
        config(&sim.base_url(), &teams)
    );
    let work = Workspace::new(&text);
    let daemon = Daemon::start(&work);
    let base = crate::support::endpoint(&daemon).await;
    daemon.wait_for_log("next digest", SECONDS).await;
    let ready = || {
        let url = format!("{base}/-/ready");
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };

    sqlx::any::install_default_drivers();
    let url = acquire_digest::db::testing::sqlite_file_url(&work.path("ledger.db"));
    let mut writer = sqlx::AnyConnection::connect(&url).await.unwrap();
    writer.execute("BEGIN IMMEDIATE").await.unwrap();
    daemon
        .wait_for_log("deliveries stopped", Duration::from_secs(40))
        .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let log = daemon.log();
    assert!(hooks.seen().is_empty(), "{log}");
    assert_eq!(log.matches("deliveries stopped").count(), 1, "{log}");
    let loud = (log.lines())
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert!(loud <= 8, "{loud} lines:\n{log}");
    assert_eq!(ready().await, 503);

    writer.execute("ROLLBACK").await.unwrap();
    drop(writer);
    // Retries are 10 s apart at most, but a loaded CI machine stretches each pass.
    wait_until(
        "every digest once writes work",
        Duration::from_secs(60),
        || hooks.seen().len() >= 5,
    )
    .await;
    daemon.wait_for_log("usable again", SECONDS).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hooks.seen().len(), 5, "{}", daemon.log());
    assert_eq!(ready().await, 200);
}

/// Issue 18: a receiver that answers 503 for an hour, then 200, still gets its digest from the
/// daemon: rounds after a 5xx are spaced `retry_every`, then twice that, so the ten POSTs
/// a digest may spend are not gone in the first minutes.
#[tokio::test]
async fn a_receiver_down_for_an_hour_still_gets_its_digest_within_ten_posts() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let mut replies = vec![Reply::new(503, "maintenance"); 9];
    replies.push(Reply::new(200, "ok"));
    hooks.script("/berlin", replies);
    let work = berlin(&sim.base_url(), &hooks, "0 9 * * *");
    // Wednesday 25 Nov 2026, 08:59:58 in Berlin; retry_every is its default, 10 minutes.
    let start: chrono::DateTime<Utc> = "2026-11-25T07:59:58Z".parse().unwrap();
    let (clock, stop) = InProcess::start(&work, start);
    let posts = || hooks.seen_at("/berlin").len();
    wait_until("the first round", SECONDS, || posts() == 3).await;
    // A blip gets two quick retries, then the round ends: nothing more for now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(posts(), 3);
    // Five minutes on, nothing; each further step of five minutes may start a round.
    let mut minutes = 0;
    while !hooks
        .seen_at("/berlin")
        .iter()
        .any(|s| s.answered.is_some() && posts() == 10)
    {
        clock.jump(chrono::Duration::minutes(5));
        minutes += 5;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            minutes <= 180,
            "not delivered after 3 hours: {} POSTs",
            posts()
        );
    }
    // The receiver came back after an hour (nine 503s); the digest arrived on the tenth POST.
    assert!(
        minutes >= 60,
        "all ten POSTs went out within {minutes} minutes"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(posts(), 10);
    clock.jump(chrono::Duration::hours(2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(posts(), 10, "delivered: nothing more");
    stop.finish().await;
}

/// Issue 18: `once` for a day of a weekday team's weekend sends the daemon's digest, Friday to
/// Sunday, under the daemon's own key: the daemon's Monday firing then has nothing to send.
#[tokio::test]
async fn once_sends_the_weekend_as_the_daemon_would_and_the_daemon_sends_nothing_more() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let work = berlin(&sim.base_url(), &hooks, "30 8 * * 1-5");
    let once =
        crate::support::run_beside(work.dir.path(), &["once", "--date", "2026-11-21"], &[]).await;
    assert!(once.status.success(), "{}", crate::support::stderr(&once));
    let sent = hooks.seen_at("/berlin");
    assert_eq!(sent.len(), 1);
    let body = sent[0].json();
    assert_eq!(
        (&body["date"], &body["end_date"]),
        (&json!("2026-11-20"), &json!("2026-11-22"))
    );

    // Monday 23 Nov 2026, 08:29:58 in Berlin: the firing that covers Friday to Sunday.
    let (_clock, stop) = InProcess::start(&work, "2026-11-23T07:29:58Z".parse().unwrap());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        hooks.seen_at("/berlin").len(),
        1,
        "the weekend went out twice"
    );
    stop.finish().await;
}

/// A team in Berlin on `schedule`, posting to `/berlin` on `hooks`.
fn berlin(api: &str, hooks: &Scripted, schedule: &str) -> Workspace {
    let url = hooks.url("/berlin");
    let berlin = team("berlin", "acme", &[("generic", &url)]);
    Workspace::new(&config(
        api,
        &[with_schedule(berlin, schedule, "Europe/Berlin")],
    ))
}

/// Issue 21: a webhook's later rounds send the digest built for its first: no report is
/// fetched again while the span's rounds go on.
#[tokio::test]
async fn a_failing_webhooks_retries_fetch_nothing_again() {
    let api = crate::once::acquire_serving(
        json!([{"name": "India", "cca3": "IND", "visitorCount": 40, "chatCount": 4, "caseCount": 0,
                "emailCount": 0, "cobrowseCount": 0, "videocall": 0, "audiocall": 0, "voipCallCount": 0}]),
        json!([]),
        json!([]),
        json!([]),
    )
    .await;
    let hooks = Scripted::webhooks().await;
    let mut replies = vec![Reply::new(503, "maintenance"); 6];
    replies.push(Reply::new(200, "ok"));
    hooks.script("/berlin", replies);
    let work = berlin(&crate::once::acquire_base(&api), &hooks, "0 9 * * *");
    let start: chrono::DateTime<Utc> = "2026-11-25T07:59:58Z".parse().unwrap();
    let (clock, stop) = InProcess::start(&work, start);
    let posts = || hooks.seen_at("/berlin").len();
    wait_until("the first round", SECONDS, || posts() == 3).await;
    let fetched = api.seen().len();
    assert!(fetched >= 4, "{fetched} requests");
    let mut minutes = 0;
    while posts() < 7 {
        clock.jump(chrono::Duration::minutes(5));
        minutes += 5;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            minutes <= 180,
            "not delivered after 3 hours: {} POSTs",
            posts()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = hooks.seen_at("/berlin");
    assert!(sent.last().unwrap().answered.is_some());
    // Every round posted the same body, and the API was asked nothing more.
    assert!(sent.windows(2).all(|w| w[0].body == w[1].body));
    assert_eq!(api.seen().len(), fetched);
    stop.finish().await;
}
