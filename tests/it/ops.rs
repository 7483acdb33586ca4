//! Operating it: the daemon's HTTP endpoint (metrics, health, readiness, reload), JSON logs,
//! `check --online`, completions, `--version`, and the systemd unit.

use std::collections::HashMap;
use std::time::Duration;

use acquire_digest::simulator::{self, SimulatorOptions};
use serde_json::Value;

use crate::support::{
    Daemon, Reply, Scripted, Workspace, config, endpoint, report, run_beside, run_in, stderr,
    stdout, team, wait_until, zone_at,
};

const SECONDS: Duration = Duration::from_secs(20);

/// A config firing every second in a zone where it is noon, so exactly yesterday is due,
/// serving the endpoint on a free port and retrying failures only after an hour: one round.
fn ops_config(base_url: &str, teams: &[String]) -> String {
    let (noon, _) = zone_at(12);
    let teams: Vec<String> = teams
        .iter()
        .map(|t| {
            t.replace("0 9 * * *", "* * * * * *")
                .replace("Asia/Kolkata", &noon)
        })
        .collect();
    format!(
        "retry_every = \"1h\"\n{}\n[server]\nlisten = \"127.0.0.1:0\"\n",
        config(base_url, &teams)
    )
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn post(url: &str) -> (u16, String) {
    let response = reqwest::Client::new().post(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Each sample of the Prometheus text: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn deliveries(team: &str, webhook: &str, outcome: &str) -> String {
    format!(
        "acquire_digest_deliveries_total{{team=\"{team}\",webhook=\"{webhook}\",outcome=\"{outcome}\"}}"
    )
}

/// Webhooks that deliver, refuse (404) and fail (503 until the retry budget is spent).
async fn three_webhooks() -> (Scripted, Vec<(&'static str, String)>) {
    let hooks = Scripted::webhooks().await;
    hooks.script("/refused", vec![Reply::new(404, "no_service")]);
    hooks.script("/failing", vec![Reply::new(503, "down for maintenance")]);
    let urls = vec![
        ("slack", hooks.url("/good")),
        ("generic", hooks.url("/refused")),
        ("generic", hooks.url("/failing")),
    ];
    (hooks, urls)
}

fn named_hooks(name: &str, urls: &[(&str, String)]) -> String {
    let mut text = team(name, "acme", &[]);
    for ((kind, url), webhook) in urls.iter().zip(["good", "refused", "failing"]) {
        text.push_str(&format!(
            "\n[[teams.webhooks]]\nname = \"{webhook}\"\nkind = \"{kind}\"\nurl = \"{url}\"\n"
        ));
    }
    text
}

#[tokio::test]
async fn metrics_count_a_delivered_a_refused_and_a_failing_webhook() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let (hooks, urls) = three_webhooks().await;
    // Without comparisons: one request per report.
    let team = named_hooks("apac", &urls).replace("schedule =", "compare = []\nschedule =");
    let work = Workspace::new(&ops_config(&sim.base_url(), &[team]));
    let daemon = Daemon::start(&work);
    let base = endpoint(&daemon).await;
    daemon.wait_for_log("tries again at", SECONDS).await;
    daemon.wait_for_log("giving up", SECONDS).await;
    // The pending gauge is set by the reconcile pass after the round ends.
    let deadline = std::time::Instant::now() + SECONDS;
    let (text, metrics) = loop {
        let (status, text) = get(&format!("{base}/metrics")).await;
        assert_eq!(status, 200);
        let metrics = samples(&text);
        if metrics.get("acquire_digest_pending_deliveries") == Some(&1.0) {
            break (text, metrics);
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = daemon.log();
    assert_eq!(
        metrics.get(&deliveries("apac", "good", "delivered")),
        Some(&1.0),
        "{text}\n{log}"
    );
    assert_eq!(
        metrics.get(&deliveries("apac", "refused", "refused")),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        metrics.get(&deliveries("apac", "failing", "failed")),
        Some(&1.0),
        "{text}"
    );
    // Present from the start, at zero (issue 21).
    assert_eq!(
        metrics.get(&deliveries("apac", "good", "failed")),
        Some(&0.0)
    );
    // Four reports, one request each, all answered.
    for endpoint in [
        "visitors-by-location",
        "most-active-visit-times",
        "pages-with-most-chats",
        "visitor-reference",
    ] {
        let series =
            format!("acquire_digest_api_requests_total{{endpoint=\"{endpoint}\",status=\"200\"}}");
        assert_eq!(metrics.get(&series), Some(&1.0), "{text}");
    }
    assert_eq!(
        metrics.get("acquire_digest_api_request_duration_seconds_count"),
        Some(&4.0)
    );
    // One POST to Slack; the failing generic webhook was retried within its budget.
    assert_eq!(
        metrics.get("acquire_digest_webhook_request_duration_seconds_count{kind=\"slack\"}"),
        Some(&1.0)
    );
    let generic_posts = hooks.seen_at("/refused").len() + hooks.seen_at("/failing").len();
    assert!(generic_posts >= 3, "{generic_posts}");
    assert_eq!(
        metrics.get("acquire_digest_webhook_request_duration_seconds_count{kind=\"generic\"}"),
        Some(&(generic_posts as f64))
    );
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let delivered_at =
        metrics["acquire_digest_last_delivery_timestamp_seconds{team=\"apac\",webhook=\"good\"}"];
    assert!((now - 60.0..=now).contains(&delivered_at), "{delivered_at}");
    assert!(
        !text.contains("last_delivery_timestamp_seconds{team=\"apac\",webhook=\"refused\"}"),
        "{text}"
    );
    // Firing every second, it brings a new digest at the next local midnight: it is about
    // noon there.
    let next = metrics["acquire_digest_next_digest_timestamp_seconds{team=\"apac\"}"];
    assert!(
        (now + 9.0 * 3600.0..=now + 15.0 * 3600.0).contains(&next),
        "{next}"
    );
    assert_eq!(
        metrics.get("acquire_digest_config_last_reload_successful"),
        Some(&1.0)
    );
    assert!(metrics.contains_key("acquire_digest_config_last_reload_success_timestamp_seconds"));
    // Labels are names: no URL, host or key.
    for secret in [
        hooks.addr.to_string(),
        sim.addr().to_string(),
        "test-key-apac".into(),
        "127.0.0.1".into(),
    ] {
        assert!(!text.contains(&secret), "{secret} in\n{text}");
    }
}

#[tokio::test]
async fn ready_turns_503_while_the_ledger_is_unreachable() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&ops_config(
        &sim.base_url(),
        &[team("apac", "acme", &[("slack", &hooks.url("/apac"))])],
    ));
    let daemon = Daemon::start(&work);
    let base = endpoint(&daemon).await;
    wait_until("the delivery", SECONDS, || hooks.seen().len() == 1).await;
    assert_eq!(get(&format!("{base}/-/healthy")).await.0, 200);
    assert_eq!(get(&format!("{base}/-/ready")).await.0, 200);

    // Moved away, the file is no longer the ledger the daemon opened.
    std::fs::rename(work.path("ledger.db"), work.path("moved.db")).unwrap();
    let (status, body) = get(&format!("{base}/-/ready")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ledger"), "{body}");
    assert_eq!(
        get(&format!("{base}/-/healthy")).await.0,
        200,
        "still running"
    );

    std::fs::rename(work.path("moved.db"), work.path("ledger.db")).unwrap();
    // Ready again at once, or, if a pass failed while the file was away, at the daemon's
    // next try (a second later, then doubling).
    let started = std::time::Instant::now();
    loop {
        let (status, body) = get(&format!("{base}/-/ready")).await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reload_over_http_takes_a_good_config_and_answers_400_with_a_bad_ones_problems() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let apac = team("apac", "acme", &[("slack", &hooks.url("/apac"))]);
    let work = Workspace::new(&ops_config(&sim.base_url(), std::slice::from_ref(&apac)));
    let daemon = Daemon::start(&work);
    let base = endpoint(&daemon).await;
    wait_until("apac's delivery", SECONDS, || hooks.seen().len() == 1).await;

    let emea = team("emea", "globex", &[("generic", &hooks.url("/emea"))]);
    std::fs::write(
        work.config(),
        ops_config(&sim.base_url(), &[apac.clone(), emea]),
    )
    .unwrap();
    let reload = run_beside(work.dir.path(), &["reload", "--url", &base], &[]).await;
    assert!(reload.status.success(), "{}", stderr(&reload));
    assert_eq!(stdout(&reload), "config reloaded\n");
    // The new team is in force: it is caught up at once.
    wait_until("emea's delivery", SECONDS, || {
        hooks.seen_at("/emea").len() == 1
    })
    .await;

    // Broken past parsing, but `reload` still finds the daemon from `[server] listen`.
    let broken = format!(
        "[server]\nlisten = \"{}\"\n\n[[teams]]\nname = = \"x\"\n",
        base.trim_start_matches("http://")
    );
    std::fs::write(work.config(), broken).unwrap();
    let reload = run_beside(work.dir.path(), &["reload"], &[]).await;
    assert_eq!(reload.status.code(), Some(1), "{}", stderr(&reload));
    assert!(stderr(&reload).contains("syntax"), "{}", stderr(&reload));
    std::fs::write(
        work.config(),
        "[[teams]]\nname = \"broken\"\ntimezone = \"Nowhere/Land\"\nschedule = \"every day\"\n",
    )
    .unwrap();
    let (status, body) = post(&format!("{base}/-/reload")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Nowhere/Land"), "{body}");
    assert!(body.contains("schedule"), "{body}");
    // Issue 21: `reload`, as systemd's ExecReload runs it, fails with the problems.
    let reload = run_beside(work.dir.path(), &["reload", "--url", &base], &[]).await;
    assert_eq!(reload.status.code(), Some(1), "{}", stderr(&reload));
    assert!(
        stderr(&reload).contains("Nowhere/Land"),
        "{}",
        stderr(&reload)
    );
    assert!(
        daemon.log().contains("POST /-/reload: new config rejected"),
        "{}",
        daemon.log()
    );
    let metrics = samples(&get(&format!("{base}/metrics")).await.1);
    assert_eq!(
        metrics.get("acquire_digest_config_last_reload_successful"),
        Some(&0.0)
    );
    assert!(
        metrics.contains_key("acquire_digest_next_digest_timestamp_seconds{team=\"emea\"}"),
        "the old config still runs"
    );
    assert_eq!(get(&format!("{base}/-/ready")).await.0, 200);
    assert_eq!(
        get(&format!("{base}/-/reload")).await.0,
        405,
        "a reload is a POST"
    );
}

#[tokio::test]
async fn every_line_of_a_json_format_run_is_one_json_object() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let (_hooks, urls) = three_webhooks().await;
    let work = Workspace::new(&ops_config(&sim.base_url(), &[named_hooks("apac", &urls)]));
    let mut daemon = Daemon::start_with(&work, &[], &[("ACQUIRE_DIGEST_LOG_FORMAT", "json")]);
    daemon.wait_for_log("tries again at", SECONDS).await;
    daemon.wait_for_log("giving up", SECONDS).await;
    // A rejected reload's problems span lines in the config report: one record here.
    std::fs::write(
        work.config(),
        "[[teams]]\nname = \"broken\"\ntimezone = \"Nowhere/Land\"\nschedule = \"every day\"\n",
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("new config rejected", SECONDS).await;
    daemon.signal("TERM");
    assert!(daemon.wait_exit(SECONDS).await.unwrap().success());

    let log = daemon.log();
    let events: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?} in\n{log}"))
        })
        .collect();
    for event in &events {
        let at = event["timestamp"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.len() == 24,
            "milliseconds in UTC: {at}"
        );
        assert!(event["message"].is_string() && event["level"].is_string());
    }
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains("new config rejected")
        })
        .collect();
    assert_eq!(rejected.len(), 1);
    let message = rejected[0]["message"].as_str().unwrap();
    assert!(
        message.contains("Nowhere/Land") && message.contains("schedule"),
        "{message}"
    );
    // Each webhook's outcome once, with its team, date and webhook as fields; debug logging
    // (the test default) adds no second line for the same delivery.
    let yesterday = (chrono::Utc::now()
        .with_timezone(&zone_at(12).1)
        .date_naive()
        - chrono::Days::new(1))
    .to_string();
    for (webhook, said) in [
        ("good", "delivered"),
        ("refused", "rejected with HTTP 404"),
        ("failing", "tries again at"),
    ] {
        let about: Vec<&Value> = events
            .iter()
            .filter(|e| e["webhook"] == webhook && e["message"].as_str().unwrap().contains(said))
            .collect();
        assert_eq!(about.len(), 1, "{webhook}: {about:?}");
        assert_eq!(about[0]["team"], "apac");
        assert_eq!(about[0]["date"], yesterday.as_str());
    }

    // `once` in the JSON format: its summary is events too.
    let dir = work.dir.path().to_owned();
    let once = tokio::task::spawn_blocking(move || {
        run_in(
            &dir,
            &["once", "--force", "--config", "config.toml"],
            &[("ACQUIRE_DIGEST_LOG_FORMAT", "json")],
        )
    })
    .await
    .unwrap();
    let said = stderr(&once);
    assert!(!said.is_empty());
    for line in said.lines() {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event["message"].is_string());
    }
}

#[test]
fn a_daemon_that_cannot_start_says_why_in_one_event() {
    let work = Workspace::new(
        "[[teams]]\nname = \"broken\"\ntimezone = \"Nowhere/Land\"\nschedule = \"every day\"\n",
    );
    for format in ["json", "text"] {
        let output = work.run(&["run", "--log-format", format], &[]);
        assert!(!output.status.success());
        let said = stderr(&output);
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines.len(), 1, "{format}: {said}");
        assert!(
            lines[0].contains("Nowhere/Land") && lines[0].contains("schedule"),
            "{said}"
        );
        if format == "json" {
            let event: Value = serde_json::from_str(lines[0]).unwrap();
            assert_eq!(event["level"], "ERROR");
        }
    }
}

#[tokio::test]
async fn check_online_names_rejected_keys_and_asks_once_per_account_and_key() {
    let sim = simulator::spawn(SimulatorOptions {
        api_key: Some("test-key-apac".into()),
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[
            team("apac", "acme", &[("slack", "http://127.0.0.1:9/a")]),
            team("emea", "globex", &[("slack", "http://127.0.0.1:9/b")]),
        ],
    ));
    let output = tokio::task::spawn_blocking(move || {
        let output = work.run(&["check", "--online"], &[]);
        (work, output)
    })
    .await
    .unwrap();
    let (work, output) = output;
    let out = stdout(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains("account acme (team apac): API key accepted"),
        "{out}"
    );
    assert!(
        out.contains("account globex (team emea): API key REJECTED (HTTP 401)"),
        "{out}"
    );
    assert!(out.contains("opened and written"), "{out}");
    assert!(!out.contains("test-key-"), "keys are never shown: {out}");
    // Plain `check` asks nothing and passes.
    let offline = work.run(&["check"], &[]);
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert!(!stdout(&offline).contains("API key"));

    // Teams sharing an account and key cost one request; a ledger that cannot be opened fails.
    let acquire = Scripted::start(Reply::new(
        200,
        report("visitorsByLocation", serde_json::json!([])),
    ))
    .await;
    let base = format!("http://{}/{{account_id}}/api", acquire.addr);
    let shared = Workspace::new(
        &config(
            &base,
            &[
                team("apac", "acme", &[("slack", "http://127.0.0.1:9/a")]),
                team("apac-2", "acme", &[("slack", "http://127.0.0.1:9/b")]),
            ],
        )
        .replace("test-key-apac-2", "test-key-apac")
        .replace("path = \"ledger.db\"", "path = \"not-a-folder/ledger.db\""),
    );
    std::fs::write(shared.path("not-a-folder"), "a file").unwrap();
    let (shared, output) = tokio::task::spawn_blocking(move || {
        let output = shared.run(&["check", "--online"], &[]);
        (shared, output)
    })
    .await
    .unwrap();
    let out = stdout(&output);
    assert_eq!(acquire.seen().len(), 1, "{out}");
    assert!(
        out.contains("account acme (team apac, apac-2): API key accepted"),
        "{out}"
    );
    assert!(out.contains("ledger: FAILED"), "{out}");
    assert!(!output.status.success());

    std::fs::remove_file(shared.path("not-a-folder")).unwrap();
    let output = tokio::task::spawn_blocking(move || shared.run(&["check", "--online"], &[]))
        .await
        .unwrap();
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert!(out.contains("ledger.db: opened and written"), "{out}");
    assert_eq!(acquire.seen().len(), 2);
}

#[test]
fn a_listen_address_that_is_not_one_fails_check() {
    let mut text = config(
        "http://127.0.0.1:9/{account_id}/api",
        &[team("apac", "acme", &[("slack", "http://127.0.0.1:9/a")])],
    );
    text.push_str("\n[server]\nlisten = \"localhost:http\"\n");
    let work = Workspace::new(&text);
    let output = work.run(&["check"], &[]);
    let said = stderr(&output);
    assert!(!output.status.success());
    assert!(
        said.contains("server.listen: \"localhost:http\" is not an address"),
        "{said}"
    );
}

#[test]
fn check_into_a_closed_pipe_does_not_panic() {
    let work = Workspace::new(&config(
        "http://127.0.0.1:9/{account_id}/api",
        &[team("apac", "acme", &[("slack", "http://127.0.0.1:9/a")])],
    ));
    // `check | head -0`: the reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_acquire-digest"))
        .args(["check", "--config", "config.toml"])
        .current_dir(work.dir.path())
        .stdout(writer)
        .output()
        .unwrap();
    let said = stderr(&output);
    assert!(!said.contains("panicked"), "{said}");
    assert!(output.status.success(), "{said}");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _acquire__digest"),
        ("zsh", "#compdef acquire-digest"),
        ("fish", "complete -c acquire-digest"),
    ] {
        let output = run_in(dir.path(), &["completions", shell], &[]);
        let script = stdout(&output);
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["log-format", "listen", "online", "once"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
}

#[test]
fn the_version_names_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(dir.path(), &["--version"], &[]);
    let said = stdout(&output);
    assert!(
        said.starts_with(&format!("acquire-digest {}", env!("CARGO_PKG_VERSION"))),
        "{said}"
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(head) if head.status.success() => {
            let commit = String::from_utf8(head.stdout).unwrap();
            assert!(
                said.contains(&format!("(commit {})", commit.trim())),
                "{said}"
            );
        }
        _ => eprintln!("not in a git checkout: the version has no commit to show"),
    }
}

/// `systemd-analyze verify` on the shipped unit, its binary path pointed at the one built
/// (verify insists the executable exists). Unknown keys are only warnings to it, so any
/// output fails the test too.
#[test]
fn the_systemd_unit_verifies() {
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is required in CI"
        );
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/acquire-digest.service"),
    )
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/acquire-digest run"));
    for setting in [
        "DynamicUser=yes",
        "StateDirectory=acquire-digest",
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/usr/local/bin/acquire-digest reload",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(setting), "{setting}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acquire-digest.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/acquire-digest",
            env!("CARGO_BIN_EXE_acquire-digest"),
        ),
    )
    .unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "{said}");
    assert!(
        !said.contains("acquire-digest.service"),
        "warnings about the unit:\n{said}"
    );
}

/// Issue 21: `health` for a container's HEALTHCHECK and `reload` for scripts, against a live
/// daemon (its address read from `[server] listen` when no --url is given) and a dead one.
#[tokio::test]
async fn health_and_reload_answer_by_exit_code_for_a_live_and_a_dead_daemon() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let apac = team("apac", "acme", &[("generic", &hooks.url("/apac"))]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text =
        config(&sim.base_url(), &[apac]) + &format!("\n[server]\nlisten = \"0.0.0.0:{port}\"\n");
    let work = Workspace::new(&text);
    let mut daemon = Daemon::start(&work);
    endpoint(&daemon).await;
    daemon.wait_for_log("next digest", SECONDS).await;

    // No --url: `[server] listen` on every interface, reached on loopback.
    let health = run_beside(work.dir.path(), &["health"], &[]).await;
    assert_eq!(health.status.code(), Some(0), "{}", stdout(&health));
    assert!(stdout(&health).contains("ready"), "{}", stdout(&health));
    let reload = run_beside(work.dir.path(), &["reload"], &[]).await;
    assert_eq!(reload.status.code(), Some(0), "{}", stderr(&reload));
    daemon
        .wait_for_log("POST /-/reload: config reloaded", SECONDS)
        .await;

    daemon.signal("TERM");
    assert!(daemon.wait_exit(SECONDS).await.is_some());
    let health = run_beside(work.dir.path(), &["health"], &[]).await;
    assert_eq!(health.status.code(), Some(1), "{}", stdout(&health));
    assert!(
        stdout(&health).contains(&format!("no daemon answered at 127.0.0.1:{port}")),
        "{}",
        stdout(&health)
    );
    let reload = run_beside(work.dir.path(), &["reload"], &[]).await;
    assert_eq!(reload.status.code(), Some(2), "{}", stderr(&reload));
    assert!(
        stderr(&reload).contains("no daemon answered") && stderr(&reload).contains("refused"),
        "{}",
        stderr(&reload)
    );
    // Without [server] listen or --url there is nothing to ask.
    std::fs::write(work.config(), config(&sim.base_url(), &[])).unwrap();
    let reload = run_beside(work.dir.path(), &["reload"], &[]).await;
    assert_eq!(reload.status.code(), Some(2), "{}", stderr(&reload));
    assert!(
        stderr(&reload).contains("pass --url"),
        "{}",
        stderr(&reload)
    );
}

/// Issue 21: under systemd (`Type=notify`, `WatchdogSec=`) the daemon says READY=1 once its
/// config is loaded and its ledger open, feeds the watchdog, and says STOPPING=1 on SIGTERM.
#[tokio::test]
async fn the_daemon_tells_systemd_it_is_ready_feeds_the_watchdog_and_says_it_stops() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let apac = team("apac", "acme", &[("generic", "http://127.0.0.1:9/")]);
    let work = Workspace::new(&config(&sim.base_url(), &[apac]));
    let socket_path = work.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut daemon = Daemon::start_with(
        &work,
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut said = Vec::new();
    let receive = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    while said
        .iter()
        .filter(|s: &&String| s.contains("WATCHDOG=1"))
        .count()
        < 3
    {
        said.push(receive());
    }
    assert!(
        said[0].contains("READY=1") && said[0].contains("STATUS=1 teams scheduled"),
        "{said:?}"
    );
    daemon.signal("TERM");
    while !said.last().unwrap().contains("STOPPING=1") {
        said.push(receive());
    }
    assert!(daemon.wait_exit(SECONDS).await.is_some());
}

/// Issue 21: every family has its series at the first scrape, at zero for each configured
/// team, webhook and outcome; the build and the process are there; and the last delivery is
/// read back from the ledger after a restart rather than starting empty.
#[tokio::test]
async fn every_metric_family_is_there_at_the_first_scrape_and_last_delivery_survives_a_restart() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let apac = team("apac", "acme", &[("slack", &hooks.url("/apac"))]);
    // A schedule that never fires today: nothing happens before the scrape.
    let quiet = team("quiet", "globex", &[("generic", &hooks.url("/quiet"))])
        .replace("0 9 * * *", "0 0 29 2 *");
    let work = Workspace::new(&ops_config(&sim.base_url(), &[apac, quiet.clone()]));
    let daemon = Daemon::start(&work);
    let base = endpoint(&daemon).await;
    wait_until("apac's delivery", SECONDS, || hooks.seen().len() == 1).await;
    let before = samples(&get(&format!("{base}/metrics")).await.1);
    let last = "acquire_digest_last_delivery_timestamp_seconds{team=\"apac\",webhook=\"slack\"}";
    let delivered_at = before[last];
    drop(daemon);

    // Nothing fires now: nothing will happen before the first scrape.
    let apac = team("apac", "acme", &[("slack", &hooks.url("/apac"))]);
    let text = ops_config(&sim.base_url(), &[apac, quiet]).replace("* * * * * *", "0 0 29 2 *");
    std::fs::write(work.config(), text).unwrap();
    let daemon = Daemon::start(&work);
    let base = endpoint(&daemon).await;
    daemon.wait_for_log("next digest", SECONDS).await;
    let text = get(&format!("{base}/metrics")).await.1;
    let first = samples(&text);
    // Read back from the ledger, to the second.
    assert_eq!(first.get(last), Some(&delivered_at.floor()), "{text}");
    for outcome in [
        "delivered",
        "failed",
        "refused",
        "unknown",
        "too_many_attempts",
        "skipped",
        "superseded",
        "missed",
    ] {
        assert_eq!(
            first.get(&deliveries("quiet", "generic", outcome)),
            Some(&0.0),
            "{outcome}"
        );
    }
    for series in [
        "acquire_digest_api_requests_total{endpoint=\"visitors-by-location\",status=\"200\"}",
        "acquire_digest_webhook_request_duration_seconds_count{kind=\"generic\"}",
        "acquire_digest_data_rechecks_total{team=\"quiet\"}",
        "acquire_digest_ledger_errors_total{op=\"record\"}",
        "acquire_digest_alerts_total{reason=\"refused\",outcome=\"sent\"}",
        "acquire_digest_alerts_total{reason=\"missed\",outcome=\"failed\"}",
        "acquire_digest_api_request_duration_seconds_count",
        "acquire_digest_pending_deliveries",
    ] {
        assert_eq!(first.get(series), Some(&0.0), "{series} in\n{text}");
    }
    assert!(first.contains_key("acquire_digest_next_digest_timestamp_seconds{team=\"quiet\"}"));
    assert_eq!(
        first.get("acquire_digest_config_last_reload_successful"),
        Some(&1.0)
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let commit = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let build = format!(
        "acquire_digest_build_info{{version=\"{}\",commit=\"{commit}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(first.get(&build), Some(&1.0), "{text}");
    assert!(first["process_resident_memory_bytes"] > 1e6, "{text}");
    assert!(first.contains_key("process_cpu_seconds_total"), "{text}");
    assert!(first["process_open_fds"] >= 3.0, "{text}");
    let started = first["process_start_time_seconds"];
    // In milliseconds, with a second's slack: the start time is in the kernel's ticks, whose
    // boot time is in whole seconds.
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!(
        (now - 120.0..=now + 1.0).contains(&started),
        "started at {started}, now {now}"
    );
}
