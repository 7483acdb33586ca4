//! How the cost grows with the work. `cargo bench --bench fanout` runs:
//!
//! 1. Fan-out: N teams (100, 1,000, 10,000) through fetch → rank → render → deliver, as the
//!    real `acquire-digest once` in a child process, against the simulator with 50 ms of
//!    latency and a loopback webhook receiver (both in this process, so the child's CPU and
//!    memory are the product's own). Prints the wall time, the latency-bound ideal
//!    ceil(4N / concurrency) × latency, their ratio, CPU per digest and peak RSS.
//!    Beside each, the simulator alone: a bare HTTP client making the same four GETs per team
//!    at the same concurrency, so a ratio above the bound is known to be ours, not its.
//! 2. CPU per digest at 0 ms latency: `once --dry-run` for 2,000 teams, comparisons off,
//!    beside its floor: the bare client's CPU for the same GETs (one thread, measured alone).
//! 3. Idle: `acquire-digest run` with 1,000 teams configured, idling for a minute: RSS and
//!    CPU used.
//! 4. Replicas: 1,000 teams due at the same second, delivered by 1, 2 and 3 `run` replicas
//!    sharing one PostgreSQL ledger (`ACQUIRE_DIGEST_TEST_DATABASE_URL`, as
//!    `scripts/with-postgres` provides): the time from the firing to the last delivery, and
//!    the statements (round trips) and transactions the database ran per digest, and who used
//!    the CPU: the replicas, the database server (when it runs on this host) and this process.
//!
//! Under `cargo test` (no `--bench` argument) both run at a small size so the benchmark is
//! built and exercised in CI without costing minutes. Linux only: it reads rusage and /proc.
//! `FANOUT_TEAMS=100,1000`, `CPU_TEAMS=500`, `IDLE_SECS=10` and `REPLICA_TEAMS=300` override
//! the sizes; `FANOUT_CONCURRENCY=256` the concurrency.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use acquire_digest::simulator::{self, SimulatorOptions};

#[path = "support/proc.rs"]
mod proc;
use proc::{cpu_of, cpu_used, proc_cpu, proc_status_kib, stat};

const BINARY: &str = env!("CARGO_BIN_EXE_acquire-digest");
/// `[acquire] concurrency`; `FANOUT_CONCURRENCY=256` for issue 22's 10,000 and 100,000 teams.
fn concurrency() -> usize {
    std::env::var("FANOUT_CONCURRENCY")
        .map_or(32, |n| n.parse().expect("FANOUT_CONCURRENCY: a number"))
}
const ZONES: [&str; 4] = [
    "Asia/Kolkata",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
];

struct Sizes {
    teams: Vec<usize>,
    latency: Duration,
    cpu_teams: usize,
    idle_teams: usize,
    idle: Duration,
    replica_teams: usize,
}

fn sizes() -> Sizes {
    let full = std::env::args().any(|a| a == "--bench");
    let from_env = |name: &str| std::env::var(name).ok();
    let teams = from_env("FANOUT_TEAMS")
        .map(|list| {
            list.split(',')
                .map(|n| n.trim().parse().expect("FANOUT_TEAMS: numbers"))
                .collect()
        })
        .unwrap_or_else(|| {
            if full {
                vec![100, 1_000, 10_000]
            } else {
                vec![20]
            }
        });
    let idle_secs = from_env("IDLE_SECS")
        .map(|s| s.parse().expect("IDLE_SECS: a number"))
        .unwrap_or(if full { 60 } else { 1 });
    Sizes {
        teams,
        latency: Duration::from_millis(if full { 50 } else { 5 }),
        cpu_teams: from_env("CPU_TEAMS")
            .map(|s| s.parse().expect("CPU_TEAMS: a number"))
            .unwrap_or(if full { 2_000 } else { 20 }),
        idle_teams: if full { 1_000 } else { 20 },
        idle: Duration::from_secs(idle_secs),
        replica_teams: from_env("REPLICA_TEAMS")
            .map(|s| s.parse().expect("REPLICA_TEAMS: a number"))
            .unwrap_or(if full { 1_000 } else { 20 }),
    }
}

fn main() {
    let sizes = sizes();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        println!("{}", machine());
        let sim = simulator::spawn(SimulatorOptions {
            latency: sizes.latency,
            ..SimulatorOptions::default()
        })
        .await
        .unwrap();
        let (receiver, received) = receiver().await;
        let received_count = &received.count;

        println!(
            "\nfan-out: `once` for N teams, simulator latency {:?}, concurrency {}",
            sizes.latency,
            concurrency()
        );
        println!(
            "{:>7} {:>9} {:>6} {:>9} {:>6} {:>12} {:>9} │ {:>12} {:>9}",
            "teams",
            "ideal",
            "sim",
            "wall",
            "ratio",
            "CPU/digest",
            "peak RSS",
            "check: /team",
            "peak RSS"
        );
        for &n in &sizes.teams {
            let ideal = sizes.latency * (4 * n).div_ceil(concurrency()) as u32;
            let alone = bare_client(&sim.base_url(), n);
            let before = received_count.load(Ordering::SeqCst);
            let dir = tempfile::tempdir().unwrap();
            let text = config(n, &sim.base_url(), &receiver, "", "0 9 * * *");
            std::fs::write(dir.path().join("config.toml"), text).unwrap();
            let run = measure(dir.path(), &["once", "--date", "2026-07-15"]).await;
            let check = measure(dir.path(), &["check"]).await;
            let delivered = received_count.load(Ordering::SeqCst) - before;
            assert_eq!(delivered, n, "every team's digest reaches the receiver");
            println!(
                "{n:>7} {:>8.2}s {:>5.2}× {:>8.2}s {:>5.2}× {:>9.0} µs {:>5} MiB │ {:>9.0} µs {:>5} MiB",
                ideal.as_secs_f64(),
                alone.wall.as_secs_f64() / ideal.as_secs_f64(),
                run.wall.as_secs_f64(),
                run.wall.as_secs_f64() / ideal.as_secs_f64(),
                run.cpu.as_secs_f64() * 1e6 / n as f64,
                run.peak_rss_kib / 1024,
                check.cpu.as_secs_f64() * 1e6 / n as f64,
                check.peak_rss_kib / 1024,
            );
        }

        println!(
            "ideal: ceil(4N / concurrency) × latency; sim: the simulator alone (a bare client, same \
             GETs) against it. Before (d825613): 1.05× at 1,000 teams (concurrency 32), 1.10× at \
             10,000 (256); target 1.05× at 10,000 and 100,000, concurrency 256"
        );

        let n = sizes.cpu_teams;
        let fast = simulator::spawn(SimulatorOptions::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = config(n, &fast.base_url(), &receiver, "", "0 9 * * *");
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
        let run = measure(
            dir.path(),
            &["once", "--dry-run", "--date", "2026-07-15"],
        )
        .await;
        let floor = bare_client(&fast.base_url(), n);
        println!(
            "\nCPU per digest at 0 ms latency, {n} teams, concurrency {}: `once --dry-run` {:.0} µs \
             (before: 520 µs; target 300 µs); the floor, a bare client making the same four GETs: \
             {:.0} µs",
            concurrency(),
            run.cpu.as_secs_f64() * 1e6 / n as f64,
            floor.cpu.as_secs_f64() * 1e6 / n as f64,
        );

        let idle = idle(sizes.idle_teams, sizes.idle, &sim.base_url(), &receiver).await;
        println!(
            "\nidle: `run` with {} teams for {:?}: RSS {} MiB, CPU {:.1} ms ({:.4}% of a core)",
            sizes.idle_teams,
            sizes.idle,
            idle.rss_kib / 1024,
            idle.cpu.as_secs_f64() * 1e3,
            idle.cpu.as_secs_f64() * 100.0 / sizes.idle.as_secs_f64(),
        );

        let Some(server) = postgres_server() else {
            return;
        };
        let n = sizes.replica_teams;
        let ideal = sizes.latency * (4 * n).div_ceil(concurrency()) as u32;
        println!(
            "\nreplicas: {n} teams due at one second, `run` replicas on one PostgreSQL ledger"
        );
        println!(
            "{:>8} {:>9} {:>9} {:>6} {:>8} {:>16} {:>15} {:>9} {:>26} {:>9}",
            "replicas", "wall", "ideal", "ratio", "speed-up", "statements/digest", "xacts/digest",
            "peak RSS", "CPU/digest: ours db sim", "CPU-bound"
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut alone = None;
        for count in 1..=3 {
            let run = replicas(count, n, &server, &sim.base_url(), &receiver, &received).await;
            let Counts { statements, transactions } = run.counts;
            let share = ideal / count as u32;
            let wall = run.wall;
            let alone = *alone.get_or_insert(wall);
            let per_digest = |count: i64| format!("{:.1}", count as f64 / n as f64);
            let micros = |cpu: Duration| format!("{:.0}", cpu.as_secs_f64() * 1e6 / n as f64);
            let all_cpu = run.replicas_cpu + run.database_cpu.unwrap_or_default() + run.bench_cpu;
            println!(
                "{count:>8} {:>8.2}s {:>8.2}s {:>5.2}× {:>7.2}× {:>17} {:>15} {:>5} MiB {:>10} {:>7} {:>7} {:>8.2}s",
                wall.as_secs_f64(),
                share.as_secs_f64(),
                wall.as_secs_f64() / share.as_secs_f64(),
                alone.as_secs_f64() / wall.as_secs_f64(),
                statements.map_or("-".into(), per_digest),
                per_digest(transactions),
                run.peak_rss_kib / 1024,
                micros(run.replicas_cpu),
                run.database_cpu.map_or("-".into(), micros),
                micros(run.bench_cpu),
                all_cpu.as_secs_f64() / cores as f64,
            );
        }
        println!(
            "ideal: one replica's latency bound shared; statements: what the ledger's database \
             ran, each a round trip (pg_stat_statements; - without it); xacts: its \
             transactions (each statement outside one is its own); both with start-up and \
             shutdown; peak RSS: the largest replica's; CPU a digest in µs, start-up included: \
             the replicas', the database server's (- when it is not on this host) and this \
             process's (simulator and receiver); CPU-bound: all of that CPU spread over this \
             host's {cores} cores, the least wall time it allows; target 1.1× the bound"
        );
    });
}

/// The test PostgreSQL server; outside CI the replicas mode is skipped without one.
fn postgres_server() -> Option<String> {
    match std::env::var("ACQUIRE_DIGEST_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("ACQUIRE_DIGEST_TEST_DATABASE_URL is not set: run through scripts/with-postgres")
        }
        Err(_) => {
            println!("\nreplicas: skipped (run through scripts/with-postgres for a PostgreSQL)");
            None
        }
    }
}

struct ReplicaRun {
    /// From the firing to the last delivery.
    wall: Duration,
    peak_rss_kib: u64,
    counts: Counts,
    /// The replicas' CPU, start to exit.
    replicas_cpu: Duration,
    /// The database server's CPU meanwhile, when it runs on this host.
    database_cpu: Option<Duration>,
    /// This process's: the simulator and the receiver.
    bench_cpu: Duration,
}

/// `count` daemons on a fresh database, `n` teams all due at one second: the time from that
/// second to the last delivery, the statements the database saw and who used the CPU.
/// Every digest arrives once.
async fn replicas(
    count: usize,
    n: usize,
    server: &str,
    base_url: &str,
    receiver: &str,
    received: &Received,
) -> ReplicaRun {
    let database = acquire_digest::db::testing::scratch_database(server)
        .await
        .unwrap();
    count_statements(&database).await;
    let dir = tempfile::tempdir().unwrap();
    // Far enough ahead for every replica to have started and read its config.
    // On a whole second: the schedule can only name whole seconds, and a fraction left here
    // would be subtracted from every wall time.
    let lead = match n {
        0..=100 => 3,
        101..=10_000 => 6,
        _ => 20, // 100,000 teams' config takes a replica a few seconds to read
    };
    let firing = chrono::Utc::now() + chrono::Duration::seconds(lead);
    let firing = chrono::Timelike::with_nanosecond(&firing, 0).expect("0 ns is valid");
    let schedule = firing.format("%S %M %H * * *").to_string();
    let mut text = config(n, base_url, receiver, "", &schedule).replace(
        "[state]\npath = \"ledger.db\"",
        "[state]\nurl_env = \"ACQUIRE_DIGEST_DATABASE_URL\"",
    );
    for zone in ZONES {
        text = text.replace(&format!("\"{zone}\""), "\"+00:00\"");
    }
    std::fs::write(dir.path().join("config.toml"), text).unwrap();
    let before = received.count.load(Ordering::SeqCst);
    let postmaster = postmaster_of(&database).await;
    let database_before = postmaster.map(tree_cpu);
    let bench_before = cpu_used(libc::RUSAGE_SELF);
    let daemons: Vec<_> = (0..count)
        .map(|_| {
            Command::new(BINARY)
                .args(["run", "--config", "config.toml"])
                .current_dir(dir.path())
                .env("RUST_LOG", "warn")
                .env("ACQUIRE_DIGEST_DATABASE_URL", &database)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while received.count.load(Ordering::SeqCst) - before < n {
        assert!(
            Instant::now() < deadline,
            "replicas: not every digest arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = received.last.lock().unwrap().unwrap();
    // A duplicate would arrive after the last digest did.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        received.count.load(Ordering::SeqCst) - before,
        n,
        "each digest once"
    );
    let peak_rss_kib = (daemons.iter())
        .map(|daemon| proc_status_kib(daemon.id(), "VmHWM:"))
        .max()
        .unwrap_or_default();
    let mut replicas_cpu = Duration::ZERO;
    for daemon in &daemons {
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
        let pid = daemon.id();
        let (_, usage) = tokio::task::spawn_blocking(move || wait4(pid))
            .await
            .unwrap();
        replicas_cpu += cpu_of(&usage);
    }
    let bench_cpu = cpu_used(libc::RUSAGE_SELF) - bench_before;
    let database_cpu = postmaster
        .zip(database_before)
        .map(|(pid, before)| tree_cpu(pid) - before);
    let since_firing = (chrono::Utc::now() - firing).to_std().unwrap();
    ReplicaRun {
        wall: since_firing.saturating_sub(last.elapsed()),
        peak_rss_kib,
        counts: counts(&database).await,
        replicas_cpu,
        database_cpu,
        bench_cpu,
    }
}

/// The process id of the PostgreSQL server holding `database`, when it runs on this host: the
/// parent of a backend's.
async fn postmaster_of(database: &str) -> Option<u32> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(database).await.unwrap();
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let parent = stat(u32::try_from(backend).ok()?)?.parent;
    let named = std::fs::read_to_string(format!("/proc/{parent}/comm")).ok()?;
    (named.trim() == "postgres").then_some(parent)
}

/// A process's CPU with its children's: those it reaped and those still running (the
/// server's backends, which come and go with connections).
fn tree_cpu(pid: u32) -> Duration {
    let server = stat(pid).expect("the database server runs");
    let children = (std::fs::read_dir("/proc").unwrap().flatten())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(|child| child.parent == pid);
    server.cpu + server.reaped + children.map(|child| child.cpu).sum::<Duration>()
}

struct Counts {
    /// None when the server doesn't load pg_stat_statements (`scripts/with-postgres` does).
    statements: Option<i64>,
    transactions: i64,
}

/// Starts counting the statements run in `database`, where the server allows it.
async fn count_statements(database: &str) {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(database).await.unwrap();
    let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut connection)
        .await;
}

/// What `database` ran so far; the daemons have exited, so their backends' counts are in.
async fn counts(database: &str) -> Counts {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(database).await.unwrap();
    let (transactions,): (i64,) = sqlx::query_as(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    let statements: Option<(i64,)> = sqlx::query_as(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut connection)
    .await
    .ok();
    Counts {
        statements: statements.map(|(count,)| count),
        transactions,
    }
}

#[derive(Default)]
struct Received {
    count: AtomicUsize,
    last: std::sync::Mutex<Option<Instant>>,
}

/// A loopback webhook that answers like Slack and counts what it received, and when.
async fn receiver() -> (String, Arc<Received>) {
    let received = Arc::new(Received::default());
    let sink = received.clone();
    let router = axum::Router::new().fallback(move || {
        *sink.last.lock().unwrap() = Some(Instant::now());
        sink.count.fetch_add(1, Ordering::SeqCst);
        async { "ok" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}"), received)
}

/// N teams, each in one of a few zones with its own Slack webhook (Slack paces per webhook).
/// Without comparisons: they cost up to two more windows per digest until the ledger's
/// history holds them, and nothing once a daemon has run for a week; the README says so.
fn config(n: usize, base_url: &str, receiver: &str, extra: &str, schedule: &str) -> String {
    let mut text = format!(
        "{extra}\n[acquire]\nbase_url = \"{base_url}\"\nconcurrency = {}\n\n[state]\npath = \"ledger.db\"\n",
        concurrency()
    );
    for i in 0..n {
        text.push_str(&format!(
            "\n[[teams]]\nname = \"team-{i}\"\naccount_id = \"account-{i}\"\napi_key = \"bench-key\"\n\
             timezone = \"{}\"\nschedule = \"{schedule}\"\ncompare = []\ninsights = []\n\n[[teams.webhooks]]\nkind = \"slack\"\n\
             url = \"{receiver}/hooks/{i}\"\n",
            ZONES[i % ZONES.len()]
        ));
    }
    text
}

/// The four GETs `once` makes for each of `n` teams (same URLs, windows, key and
/// concurrency), with nothing else: no parsing, ranking, rendering or ledger. On a thread and
/// runtime of its own, so its CPU is the client's alone.
fn bare_client(base_url: &str, n: usize) -> Run {
    use futures::StreamExt;
    let base_url = base_url.to_owned();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::new();
        let date = "2026-07-15".parse().unwrap();
        let windows = ZONES.map(|zone| {
            let zone = acquire_digest::schedule::Zone::parse(zone).unwrap();
            let window = acquire_digest::schedule::Window::for_date(zone, date);
            [window.start_date(), window.end_date(), window.offset_text()]
        });
        let gets = (0..n).flat_map(|i| {
            acquire_digest::fetch::Endpoint::ALL.map(|endpoint| (i, endpoint.path()))
        });
        let started = Instant::now();
        let cpu_before = cpu_used(libc::RUSAGE_THREAD);
        runtime.block_on(
            futures::stream::iter(gets)
                .map(|(i, path)| {
                    let base = base_url.replace("{account_id}", &format!("account-{i}"));
                    let [start, end, offset] = &windows[i % ZONES.len()];
                    let sent = client
                        .get(format!("{base}/v1/analytics/chat/{path}"))
                        .query(&[
                            ("start_date", start.as_str()),
                            ("end_date", end),
                            ("offset", offset),
                            ("output", "json"),
                        ])
                        .bearer_auth("bench-key")
                        .send();
                    async move {
                        let answer = sent.await.unwrap();
                        assert!(answer.status().is_success(), "{}", answer.status());
                        answer.bytes().await.unwrap().len()
                    }
                })
                .buffer_unordered(concurrency())
                .for_each(|_| async {}),
        );
        Run {
            wall: started.elapsed(),
            cpu: cpu_used(libc::RUSAGE_THREAD) - cpu_before,
            peak_rss_kib: 0,
        }
    });
    worker.join().unwrap()
}

struct Run {
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
}

/// Runs the binary in `dir` to its end and measures it.
async fn measure(dir: &std::path::Path, args: &[&str]) -> Run {
    let started = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4, which std's wait can't replace: it also returns rusage"
    )]
    let child = Command::new(BINARY)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, usage) = tokio::task::spawn_blocking(move || wait4(child.id()))
        .await
        .unwrap();
    let wall = started.elapsed();
    assert!(status == 0, "{args:?} failed (wait status {status})");
    Run {
        wall,
        cpu: cpu_of(&usage),
        peak_rss_kib: usage.ru_maxrss as u64,
    }
}

struct Idle {
    rss_kib: u64,
    cpu: Duration,
}

async fn idle(n: usize, how_long: Duration, base_url: &str, receiver: &str) -> Idle {
    let dir = tempfile::tempdir().unwrap();
    // New Year's midnight, no catch-up: nothing fires while we watch.
    let text = config(n, base_url, receiver, "catch_up = \"0\"", "0 0 1 1 *");
    std::fs::write(dir.path().join("config.toml"), text).unwrap();
    let mut child = Command::new(BINARY)
        .args(["run", "--config", "config.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Let start-up (config, schedules) finish before measuring the idling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = proc_cpu(pid);
    tokio::time::sleep(how_long).await;
    let cpu = proc_cpu(pid) - cpu_before;
    let rss_kib = proc_status_kib(pid, "VmRSS:");
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the daemon did not stop cleanly: {status}"
    );
    Idle { rss_kib, cpu }
}

/// Waits for a child and returns its wait status and resource usage.
fn wait4(pid: u32) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own un-reaped child; both pointers are valid for the call.
    let reaped = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid as i32, "wait4 failed");
    (status, usage)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("machine: {cpu}, {cores} cores")
}
