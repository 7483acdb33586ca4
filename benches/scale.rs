//! Issue 22's targets for many teams, each printed beside the figure main had before the work
//! ("before": d825613 for what the issue measured, 8d1da16's reconciler for the pass). Run
//! `cargo bench --bench scale`; `SCALE_TEAMS=10000` picks another size, `IDLE_SECS` how long
//! the daemon idles, and `BASELINE_BIN=path/to/an/older/acquire-digest` runs that binary's
//! check, start-up and idle memory side by side with this one's.
//!
//! 1. The reconciler: a SQLite ledger holding a week of every team's digests; the first pass
//!    after a restart, then a simulated day of passes, one a minute and one after each
//!    minute's deliveries (written as a delivery writes them).
//! 2. `check`, `run`'s start-up (until /-/ready answers) on a new ledger and on one holding
//!    `LEDGER_DAYS` (7) days of every team's digests, and its idle RSS above a one-team
//!    daemon's; then, with this build's code, forgetting the oldest of those days, as the
//!    daemon does once a day has gone past `[state] keep_days`.
//!
//! Under `cargo test` (no `--bench`) it runs at 300 teams, so CI keeps it working. Linux only:
//! it reads rusage and /proc.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use acquire_digest::clock::WallClock;
use acquire_digest::config;
use acquire_digest::daemon::Reconciler;
use chrono::{DateTime, Utc};
use sqlx::Connection;

#[path = "support/proc.rs"]
mod proc;
use proc::{cpu_used, proc_cpu, proc_status_kib};

const BINARY: &str = env!("CARGO_BIN_EXE_acquire-digest");
const ZONES: [&str; 4] = [
    "Asia/Kolkata",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
];

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let number = |name: &str, default: usize| {
        (std::env::var(name).ok()).map_or(default, |n| n.parse().expect("a number"))
    };
    let teams = number("SCALE_TEAMS", if full { 100_000 } else { 300 });
    let idle = Duration::from_secs(number("IDLE_SECS", if full { 10 } else { 1 }) as u64);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("{teams} teams, 4 zones, 60 distinct schedules, one webhook each");
        reconciler(teams).await;
        let mut binaries = vec![("this build", BINARY.to_owned())];
        binaries.extend(
            std::env::var("BASELINE_BIN")
                .ok()
                .map(|bin| ("BASELINE_BIN", bin)),
        );
        for (which, binary) in binaries {
            operations(&binary, which, teams, idle).await;
        }
    });
}

/// `catch_up` long enough that a pass a minute sees each firing; a week of history.
fn config_text(teams: usize, catch_up: &str, listen: &str) -> String {
    let mut text = format!(
        "catch_up = \"{catch_up}\"\n\n[acquire]\nbase_url = \"http://127.0.0.1:9/{{account_id}}/api\"\n\n\
         [state]\npath = \"ledger.db\"\n\n[server]\nlisten = \"{listen}\"\n"
    );
    for i in 0..teams {
        text.push_str(&format!(
            "\n[[teams]]\nname = \"team-{i}\"\naccount_id = \"account-{i}\"\napi_key = \"bench-key-{i:08}\"\n\
             timezone = \"{}\"\nschedule = \"{} 9 * * *\"\n\n[[teams.webhooks]]\nkind = \"generic\"\n\
             url = \"http://127.0.0.1:9/hooks/{i}\"\n",
            ZONES[i % ZONES.len()],
            i % 60
        ));
    }
    text
}

async fn reconciler(teams: usize) {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(teams, "2h", "127.0.0.1:0");
    let config = config::parse(&text, dir.path(), &|_| None).unwrap();
    let now: DateTime<Utc> = "2026-07-15T12:00:00Z".parse().unwrap();
    let clock = WallClock::starting_at(now);
    let mut reconciler = Reconciler::open(config.clone(), clock).await.unwrap();
    let path = dir.path().join("ledger.db");
    let mut ledger = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let names: Vec<String> = config.teams.iter().map(|t| t.name.clone()).collect();
    let week: Vec<(String, String, String)> = (1..=7)
        .flat_map(|days| {
            let day = (now.date_naive() - chrono::Days::new(days)).to_string();
            (names.iter()).map(move |team| (team.clone(), day.clone(), day.clone()))
        })
        .collect();
    deliver(&mut ledger, &week, now).await;
    // As after a day of running: each team's watermark at its window's start.
    let since = (now - chrono::Duration::hours(2)).timestamp_millis();
    sqlx::query(
        "INSERT INTO watermarks (team, planned_until) SELECT DISTINCT team, $1 FROM digests",
    )
    .bind(since)
    .execute(&mut ledger)
    .await
    .unwrap();

    let started = cpu_used(libc::RUSAGE_SELF);
    let (due, _) = reconciler.pass(now).await.unwrap();
    let first = cpu_used(libc::RUSAGE_SELF) - started;
    assert!(due.is_empty(), "a week delivered leaves nothing due");
    let mut passes = Vec::new();
    let mut delivered = 0;
    for minute in 1..=24 * 60 {
        let at = now + chrono::Duration::minutes(minute);
        let started = cpu_used(libc::RUSAGE_SELF);
        let (due, _) = reconciler.pass(at).await.unwrap();
        passes.push(cpu_used(libc::RUSAGE_SELF) - started);
        if due.is_empty() {
            continue;
        }
        let rows: Vec<_> = (due.iter())
            .map(|d| {
                (
                    d.team.clone(),
                    d.span.first.to_string(),
                    d.span.last.to_string(),
                )
            })
            .collect();
        deliver(&mut ledger, &rows, at).await;
        delivered += due.len();
        for d in &due {
            reconciler.ended(&d.team);
        }
        let started = cpu_used(libc::RUSAGE_SELF);
        let (again, _) = reconciler.pass(at).await.unwrap();
        passes.push(cpu_used(libc::RUSAGE_SELF) - started);
        assert!(again.is_empty(), "a delivered digest is not due again");
    }
    // Each team fires once in the day, but a week's rows already hold the day before's.
    assert!(
        delivered >= teams * 3 / 4,
        "{delivered} of {teams} delivered in a day"
    );
    passes.sort();
    let busy: Vec<&Duration> = passes
        .iter()
        .filter(|p| **p > Duration::from_micros(100))
        .collect();
    let busy_median = busy.get(busy.len() / 2).map_or(0.0, |p| ms(**p));
    println!(
        "\nreconciler, a week of {} digests in the ledger",
        7 * teams
    );
    println!("  first pass after a restart: {:>10.1} ms CPU", ms(first));
    println!(
        "  a day, {} passes, {delivered} digests: median {:.3} ms, slowest {:.1} ms, all {:.2} s CPU; {} passes did work, median {busy_median:.1} ms",
        passes.len(),
        ms(passes[passes.len() / 2]),
        ms(passes[passes.len() - 1]),
        passes.iter().sum::<Duration>().as_secs_f64(),
        busy.len(),
    );
    println!(
        "  before: every pass read the ledger's last nine days and walked every team; at 100,000 teams one pass took 271 s of CPU (target: 100 ms)"
    );
}

/// Writes digests as delivered, as a delivery would, a few hundred rows a statement.
async fn deliver(
    ledger: &mut sqlx::SqliteConnection,
    rows: &[(String, String, String)],
    at: DateTime<Utc>,
) {
    let mut tx = ledger.begin().await.unwrap();
    for chunk in rows.chunks(200) {
        let values: Vec<String> = (chunk.iter())
            .map(|(team, first, last)| {
                format!(
                    "('{team}', '{first}', '{last}', 'generic', 'delivered', 1, 0, {})",
                    at.timestamp()
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO digests (team, first_day, last_day, webhook, state, attempts, unanswered, delivered_at) VALUES {}",
            values.join(", ")
        );
        sqlx::query(&sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn operations(binary: &str, which: &str, teams: usize, idle: Duration) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        config_text(teams, "0", "127.0.0.1:0"),
    )
    .unwrap();
    let started = Instant::now();
    let check = Command::new(binary)
        .args(["check", "--config", "config.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let check_wall = started.elapsed();
    assert!(check.success(), "{which}: check failed");
    let (ready, settled, spent, busy) = settle(binary, dir.path(), idle).await;
    let days =
        std::env::var("LEDGER_DAYS").map_or(7, |n| n.parse().expect("LEDGER_DAYS: a number"));
    let rows = fill(&dir.path().join("ledger.db"), teams, days).await;
    let (full_ready, full_settled, _, _) = settle(binary, dir.path(), Duration::ZERO).await;
    let one = tempfile::tempdir().unwrap();
    std::fs::write(
        one.path().join("config.toml"),
        config_text(1, "0", "127.0.0.1:0"),
    )
    .unwrap();
    let (_, _, _, empty) = settle(binary, one.path(), idle).await;
    let per_team = (busy.saturating_sub(empty)) as f64 / teams as f64;
    println!("\n{which}: {binary}");
    println!(
        "  check:               {:>8.2} s   (before: 3.8 s at 100,000; target 5 s)",
        check_wall.as_secs_f64()
    );
    println!(
        "  run, start-up:       {:>8.2} s   to ready, {:.2} s to the end of its first pass, {:.2} s CPU (before: about 19 s and 17.6 s CPU at 100,000; target 5 s)",
        ready.as_secs_f64(),
        settled.as_secs_f64(),
        spent.as_secs_f64()
    );
    println!(
        "  run, start-up:       {:>8.2} s   to ready, {:.2} s to the end of its first pass, with {days} days of every team's digests in the ledger ({rows} rows)",
        full_ready.as_secs_f64(),
        full_settled.as_secs_f64(),
    );
    println!(
        "  idle RSS:            {:>8} MiB ({:.2} KiB a team above a one-team daemon's {} MiB; before: 7 KiB a team at 10,000; target 2 KiB and 250 MiB at 100,000)",
        busy / 1024,
        per_team,
        empty / 1024
    );
    // This build's code, through the library: an older binary's ledger would be upgraded.
    if which == "this build" {
        let (rows, took) = forgetting(&dir.path().join("ledger.db"), days).await;
        let batches = rows.div_ceil(2000).max(1);
        println!(
            "  forgetting a day:    {:>8.1} ms for {rows} rows, {:.1} ms a batch of 2,000 on average (a delivery waits for one at most), keep_days two days less than the ledger holds and catch_up off",
            ms(took),
            ms(took) / batches as f64
        );
    }
}

/// What the daemon's hourly forgetting (`[state] keep_days`) costs when a day has gone past
/// it: rows forgotten, and the time taken.
async fn forgetting(path: &Path, days: usize) -> (u64, Duration) {
    let location = config::StateStore::Sqlite(path.to_owned());
    let ledger = acquire_digest::ledger::Ledger::open(&location, WallClock::new());
    let ledger = ledger.await.unwrap();
    ledger.checked().await.unwrap();
    let started = Instant::now();
    // With catch_up off, the ledger keeps a day more than keep_days (see `forget_all_but`).
    let keep = u32::try_from(days - 2).unwrap();
    let (rows, _) = ledger.forget_all_but(keep, Duration::ZERO).await.unwrap();
    (rows, started.elapsed())
}

/// Writes `days` days before today of every team's digests into the ledger at `path` (made
/// by the binary under test, at its own schema version), then marks them delivered as a
/// delivery does, with an update (which keeps each webhook's last delivery, where the schema
/// keeps it apart): the ledger of a daemon that has run that long. How many rows it then holds.
async fn fill(path: &Path, teams: usize, days: usize) -> i64 {
    let mut ledger = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let every = format!(
        "WITH RECURSIVE t(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM t WHERE i < {teams} - 1),
             d(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM d WHERE n < {days})
         INSERT OR IGNORE INTO digests (team, first_day, last_day, webhook, state)
         SELECT 'team-' || i, date('now', '-' || n || ' days'), date('now', '-' || n || ' days'),
             'generic', 'pending'
         FROM t, d ORDER BY 1, 2;
         UPDATE digests SET state = 'delivered', attempts = 1, posts = 1,
             delivered_at = CAST(strftime('%s', last_day, '+14 hours') AS INTEGER)
         WHERE state = 'pending';"
    );
    sqlx::raw_sql(&every).execute(&mut ledger).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM digests")
        .fetch_one(&mut ledger)
        .await
        .unwrap()
}

/// Starts `run`, waits until it says ready on the port it logs, lets it idle, and returns
/// (time to ready, time until its first pass is over, CPU by then, idle RSS in KiB).
async fn settle(binary: &str, dir: &Path, idle: Duration) -> (Duration, Duration, Duration, u64) {
    let started = Instant::now();
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let mut child = Command::new(binary)
        .args(["run", "--config", "config.toml"])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let ready = loop {
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        if let Some(address) = log.lines().find_map(listening) {
            let url = format!("http://{address}/-/ready");
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "run never got ready: {log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Then the first pass: until its CPU stops moving.
    let mut spent = proc_cpu(pid);
    let settled = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = proc_cpu(pid);
        if now == spent {
            break started.elapsed() - Duration::from_millis(250);
        }
        spent = now;
    };
    tokio::time::sleep(idle).await;
    let rss = proc_status_kib(pid, "VmRSS:");
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(
        child.wait().unwrap().success(),
        "the daemon did not stop cleanly"
    );
    (ready, settled, spent, rss)
}

/// The address in the line `run` logs when its endpoint serves.
fn listening(line: &str) -> Option<String> {
    let marker = "/-/reload on http://";
    let at = line.find(marker)? + marker.len();
    let address: String = (line[at..].chars())
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    Some(address)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
