//! Several `run` replicas on one PostgreSQL ledger: the real binary, a real server, the
//! simulator and a loopback receiver.

use std::time::Duration;

use acquire_digest::simulator::{self, SimulatorOptions};

use crate::support::{
    Daemon, Reply, Scripted, Workspace, config, on_postgres, team, test_database_url, wait_until,
    zone_at,
};

const EVERY_SECOND: &str = "* * * * * *";
const SECONDS: Duration = Duration::from_secs(30);

/// Three replicas with seconds-level schedules; one is killed with SIGKILL at a random moment
/// and restarted. Every due digest is delivered, and a second copy goes only to what was on
/// the wire at the kill: at most one duplicate per kill, none without one.
#[tokio::test]
async fn three_replicas_one_killed_deliver_everything_once_and_resend_only_what_was_on_the_wire() {
    let Some(server) = test_database_url() else {
        return;
    };
    const TEAMS: usize = 12;
    let trials: usize = std::env::var("KILL_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let (noon, _) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    for trial in 0..trials {
        let database = acquire_digest::db::testing::scratch_database(&server)
            .await
            .unwrap();
        let env = [
            ("ACQUIRE_DIGEST_DATABASE_URL", database.as_str()),
            ("ACQUIRE_DIGEST_LEASE_SECS", "3"),
        ];
        let teams: Vec<String> = (0..TEAMS)
            .map(|i| {
                let path = format!("/{trial}/{i}");
                let delay = Duration::from_millis(fastrand::u64(0..600));
                hooks.script(&path, vec![Reply::new(200, "ok").delay(delay)]);
                team(&format!("t{i}"), "acme", &[("generic", &hooks.url(&path))])
                    .replace("0 9 * * *", EVERY_SECOND)
                    .replace("Asia/Kolkata", &noon)
            })
            .collect();
        let work = Workspace::new(&on_postgres(config(&sim.base_url(), &teams)));
        let mut replicas: Vec<Daemon> = (0..3)
            .map(|_| Daemon::start_with(&work, &[], &env))
            .collect();
        // Killed while deliveries are under way: once the first POST of this trial arrived.
        let prefix = format!("/{trial}/");
        wait_until("the first POST", SECONDS, || {
            hooks.seen().iter().any(|s| s.path.starts_with(&prefix))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..500))).await;
        let victim = fastrand::usize(0..3);
        replicas[victim].signal("KILL");
        replicas[victim].wait_exit(SECONDS).await.unwrap();
        let killed = std::time::Instant::now();
        let on_wire = hooks.on_the_wire_at(&prefix, killed);
        replicas[victim] = Daemon::start_with(&work, &[], &env);
        let logs = |replicas: &[Daemon]| {
            replicas
                .iter()
                .map(Daemon::log)
                .collect::<Vec<_>>()
                .join("\n----\n")
        };
        wait_until("every digest", SECONDS, || {
            (0..TEAMS).all(|i| !hooks.seen_at(&format!("/{trial}/{i}")).is_empty())
        })
        .await;
        // Long enough for a lease the kill left to expire and its resend to go out.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let paths: Vec<String> = (0..TEAMS).map(|i| format!("/{trial}/{i}")).collect();
        let duplicates =
            hooks.assert_resent_only_what_was_on_the_wire(&paths, &on_wire, &|| logs(&replicas));
        eprintln!(
            "trial {trial}: replica {victim} killed, {} POSTs on the wire, {duplicates} duplicates",
            on_wire.len()
        );
    }
}

/// The database goes away while a digest falls due: the replica posts nothing, says so once
/// (not once per team), and delivers everything once the database is back.
#[tokio::test]
async fn a_replica_without_its_database_posts_nothing_says_so_once_and_catches_up() {
    use chrono::Timelike;
    let Some(server) = test_database_url() else {
        return;
    };
    let database = acquire_digest::db::testing::scratch_database(&server)
        .await
        .unwrap();
    let name = database.rsplit('/').next().unwrap().to_owned();
    let (noon, offset) = zone_at(12);
    // Far enough ahead for start-up on a loaded machine: the database goes away before.
    let due = (chrono::Utc::now() + chrono::Duration::seconds(15)).with_timezone(&offset);
    let schedule = format!("{} {} {} * * *", due.second(), due.minute(), due.hour());
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let teams: Vec<String> = (0..4)
        .map(|i| {
            team(
                &format!("t{i}"),
                "acme",
                &[("generic", &hooks.url(&format!("/{i}")))],
            )
            .replace("0 9 * * *", &schedule)
            .replace("Asia/Kolkata", &noon)
        })
        .collect();
    let work = Workspace::new(&on_postgres(config(&sim.base_url(), &teams)));
    let env = [("ACQUIRE_DIGEST_DATABASE_URL", database.as_str())];
    let daemon = Daemon::start_with(&work, &[], &env);
    daemon.wait_for_log("next digest", SECONDS).await;
    let admin = |sql: String| {
        let server = server.clone();
        async move {
            acquire_digest::db::testing::execute_at(&server, &sql)
                .await
                .unwrap()
        }
    };
    // Committed before the sessions are ended: in one request the two are one transaction,
    // and a connection the pool opens again at once could get in before the commit.
    admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
    admin(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;
    daemon.wait_for_log("deliveries stopped", SECONDS).await;
    // "Stopped" is said at the firing; this outlasts the next look at the database.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(hooks.seen().is_empty(), "{}", daemon.log());
    assert_eq!(
        daemon.log().matches("deliveries stopped").count(),
        1,
        "{}",
        daemon.log()
    );
    admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
    wait_until("every digest after the outage", SECONDS, || {
        hooks.seen().len() >= 4
    })
    .await;
    daemon.wait_for_log("usable again", SECONDS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hooks.seen().len(), 4, "{}", daemon.log());
}

/// Issue 18: the database fails over to a read-only node while digests fall due. Reads work,
/// leases don't: the replica says so once, waits longer each time instead of spinning, is not
/// ready, and delivers everything once writes work again.
#[tokio::test]
async fn a_read_only_database_is_waited_out_in_a_few_lines_then_everything_is_delivered() {
    use chrono::Timelike;
    let Some(server) = test_database_url() else {
        return;
    };
    let database = acquire_digest::db::testing::scratch_database(&server)
        .await
        .unwrap();
    let name = database.rsplit('/').next().unwrap().to_owned();
    let (noon, offset) = zone_at(12);
    let due = (chrono::Utc::now() + chrono::Duration::seconds(12)).with_timezone(&offset);
    let schedule = format!("{} {} {} * * *", due.second(), due.minute(), due.hour());
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let teams: Vec<String> = (0..20)
        .map(|i| {
            team(
                &format!("t{i}"),
                "acme",
                &[("generic", &hooks.url(&format!("/{i}")))],
            )
            .replace("0 9 * * *", &schedule)
            .replace("Asia/Kolkata", &noon)
        })
        .collect();
    let text = format!(
        "retry_every = \"10s\"\n{}\n[server]\nlisten = \"127.0.0.1:0\"\n",
        on_postgres(config(&sim.base_url(), &teams))
    );
    let work = Workspace::new(&text);
    let env = [("ACQUIRE_DIGEST_DATABASE_URL", database.as_str())];
    let daemon = Daemon::start_with(&work, &[], &env);
    let base = crate::support::endpoint(&daemon).await;
    let ready = || {
        let url = format!("{base}/-/ready");
        async move {
            let answer = reqwest::get(url).await.unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    };
    // Ready once the ledger is open, a moment after the endpoint is up.
    let deadline = std::time::Instant::now() + SECONDS;
    while ready().await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "{:?}", ready().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A session takes the setting as it starts, so the ALTER is committed before the sessions
    // are ended: in one request the two are one transaction, and a connection the pool opens
    // again at once could start before the commit, writable, and end the outage early.
    let read_only = |on: &'static str| {
        let (server, name) = (server.clone(), name.clone());
        async move {
            let set = format!("ALTER DATABASE {name} SET default_transaction_read_only = {on}");
            let end = format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            );
            for sql in [set, end] {
                acquire_digest::db::testing::execute_at(&server, &sql)
                    .await
                    .unwrap();
            }
        }
    };
    read_only("on").await;
    daemon.wait_for_log("deliveries stopped", SECONDS).await;
    let stopped = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let log = daemon.log();
    assert!(hooks.seen().is_empty(), "{log}");
    assert_eq!(log.matches("deliveries stopped").count(), 1, "{log}");
    assert!(log.contains("read-only"), "the cause is named: {log}");
    // Twenty digests failing for 15 s: a spin logs thousands of lines; waiting, a handful.
    let loud = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert!(
        loud <= 25,
        "{loud} lines in {:?}:\n{log}",
        stopped.elapsed()
    );
    let (status, said) = ready().await;
    assert_eq!(status, 503, "{said}");
    assert!(said.contains("read-only"), "{said}");

    read_only("off").await;
    let delivered = || hooks.seen().len() >= 20;
    let log = || daemon.log();
    crate::support::wait_until_or_show("every digest once writes work", SECONDS, delivered, log)
        .await;
    daemon.wait_for_log("usable again", SECONDS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hooks.seen().len(), 20, "{}", daemon.log());
    assert_eq!(ready().await.0, 200);
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    // Counted as they failed: the leases, or the records of a round that got its lease in.
    assert!(
        metrics.contains("acquire_digest_ledger_errors_total{op=\"lease\"}")
            || metrics.contains("acquire_digest_ledger_errors_total{op=\"record\"}"),
        "{metrics}"
    );
}
