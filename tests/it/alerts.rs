//! `[alerts]`: one message per given-up digest, to every alerts webhook, never repeated by a
//! restart.

use std::time::Duration;

use acquire_digest::simulator::{self, SimulatorOptions};

use crate::support::{Daemon, Reply, Scripted, Workspace, config, team, wait_until, zone_at};

const SECONDS: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_refused_webhook_raises_exactly_one_alert_across_a_restart() {
    let (noon, _) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    hooks.script("/T0SECRET/refuses", vec![Reply::new(404, "no_service")]);
    let teams = [team(
        "apac",
        "acme",
        &[("slack", &hooks.url("/T0SECRET/refuses"))],
    )
    .replace("0 9 * * *", "* * * * * *")
    .replace("Asia/Kolkata", &noon)];
    let text = format!(
        "{}\n[alerts]\nwebhooks = [{{ kind = \"slack\", url = \"{}\" }}, {{ kind = \"generic\", url = \"{}\" }}]\n",
        config(&sim.base_url(), &teams),
        hooks.url("/ops"),
        hooks.url("/ops-json"),
    );
    let work = Workspace::new(&text);
    let alerts = || hooks.seen_at("/ops").len() + hooks.seen_at("/ops-json").len();

    let mut daemon = Daemon::start(&work);
    wait_until("the alerts", SECONDS, || alerts() >= 2).await;
    daemon.signal("TERM");
    daemon.wait_exit(SECONDS).await.unwrap();
    // Restarted with the webhook's URL changed: the daemon tries the digest again, and it is
    // refused again, the same give-up the ledger already alerted about.
    hooks.script("/T0SECRET/refuses-too", vec![Reply::new(404, "no_service")]);
    let moved = text.replace("/T0SECRET/refuses\"", "/T0SECRET/refuses-too\"");
    assert_ne!(moved, text);
    std::fs::write(work.config(), moved).unwrap();
    let restarted = Daemon::start(&work);
    wait_until("the retry", SECONDS, || {
        !hooks.seen_at("/T0SECRET/refuses-too").is_empty()
    })
    .await;
    // Firings every second: plenty of passes over the refused digest.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(hooks.seen_at("/ops").len(), 1, "{}", restarted.log());
    assert_eq!(hooks.seen_at("/ops-json").len(), 1);
    assert_eq!(
        hooks.seen_at("/T0SECRET/refuses").len(),
        1,
        "a refusal is not resent"
    );
    assert_eq!(hooks.seen_at("/T0SECRET/refuses-too").len(), 1);

    let slack = hooks.seen_at("/ops")[0].json();
    let said = slack["text"].as_str().unwrap();
    assert!(
        said.contains("apac") && said.contains("webhook slack"),
        "{said}"
    );
    assert!(
        said.contains("refused") && said.contains("no_service"),
        "{said}"
    );
    assert!(
        !said.contains("T0SECRET"),
        "the webhook's URL is a secret: {said}"
    );
    let generic = hooks.seen_at("/ops-json")[0].json();
    assert_eq!(generic["alert"], "digest_given_up");
    assert_eq!(generic["team"], "apac");
    assert_eq!(generic["webhook"], "slack");
    assert_eq!(generic["reason"], "refused");
    assert!(generic["date"].as_str().unwrap().len() == 10);
}

#[tokio::test]
async fn a_rejected_api_key_raises_one_alert_naming_the_team() {
    let (noon, _) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions {
        api_key: Some("the-right-key".into()),
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let hooks = Scripted::webhooks().await;
    let teams = [team("apac", "acme", &[("slack", &hooks.url("/apac"))])
        .replace("0 9 * * *", "* * * * * *")
        .replace("Asia/Kolkata", &noon)];
    let text = format!(
        "retry_every = \"10s\"\n{}\n[alerts]\nwebhooks = [{{ kind = \"mattermost\", url = \"{}\" }}]\n",
        config(&sim.base_url(), &teams),
        hooks.url("/ops"),
    );
    let work = Workspace::new(&text);
    let daemon = Daemon::start(&work);
    wait_until("the alert", SECONDS, || !hooks.seen_at("/ops").is_empty()).await;
    // Another round fails the same way: still one alert.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(hooks.seen_at("/ops").len(), 1, "{}", daemon.log());
    assert!(hooks.seen_at("/apac").is_empty());
    let said = hooks.seen_at("/ops")[0].json()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(said.contains("apac") && said.contains("API key"), "{said}");
    assert!(!said.contains("test-key-apac"), "{said}");
}

#[tokio::test]
async fn an_alert_in_flight_at_sigterm_is_sent_before_exit() {
    // A slow alerts receiver: the alert is still on the wire when the daemon is told to stop.
    let slow = Reply::new(200, "ok").delay(Duration::from_secs(3));
    let (work, hooks, _sim) = refused_with_alerts("slack", slow).await;
    let mut daemon = Daemon::start(&work);
    wait_until("the alert", SECONDS, || !hooks.seen_at("/ops").is_empty()).await;
    daemon.signal("TERM");
    daemon.wait_exit(SECONDS).await.unwrap();
    assert!(
        hooks.seen_at("/ops")[0].answered.is_some(),
        "the alert was dropped at exit: {}",
        daemon.log()
    );
    assert!(daemon.log().contains("alert sent to"), "{}", daemon.log());
}

#[tokio::test]
async fn an_alert_cut_off_by_a_kill_is_sent_at_the_next_start() {
    let hanging = Reply::new(200, "ok").delay(Duration::from_secs(60));
    let (work, hooks, _sim) = refused_with_alerts("generic", hanging).await;
    // A lease of 2 s: an unsent alert older than that has lost its sender.
    let env = [("ACQUIRE_DIGEST_LEASE_SECS", "2")];
    let mut killed = Daemon::start_with(&work, &[], &env);
    wait_until("the alert on the wire", SECONDS, || {
        !hooks.seen_at("/ops").is_empty()
    })
    .await;
    killed.child.kill().unwrap();
    killed.wait_exit(SECONDS).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    hooks.script("/ops", vec![Reply::new(200, "ok")]);
    let restarted = Daemon::start_with(&work, &[], &env);
    wait_until("the alert again", SECONDS, || {
        hooks.seen_at("/ops").len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = hooks.seen_at("/ops");
    assert_eq!(sent.len(), 2, "{}", restarted.log());
    assert_eq!(sent[1].json()["reason"], "refused");
    assert_eq!(sent[0].body, sent[1].body, "the same alert, detail and all");
    assert!(
        restarted.log().contains("alert sent to"),
        "{}",
        restarted.log()
    );
    assert_eq!(
        hooks.seen_at("/refuses").len(),
        1,
        "the refusal is not resent"
    );
}

/// A team firing every second whose Slack webhook refuses, with one `kind` alerts webhook at
/// `/ops` answering `ops`: its config, and the receiver.
async fn refused_with_alerts(
    kind: &str,
    ops: Reply,
) -> (Workspace, Scripted, simulator::RunningSimulator) {
    let (noon, _) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    hooks.script("/refuses", vec![Reply::new(404, "no_service")]);
    hooks.script("/ops", vec![ops]);
    let teams = [team("apac", "acme", &[("slack", &hooks.url("/refuses"))])
        .replace("0 9 * * *", "* * * * * *")
        .replace("Asia/Kolkata", &noon)];
    let text = format!(
        "{}\n[alerts]\nwebhooks = [{{ kind = \"{kind}\", url = \"{}\" }}]\n",
        config(&sim.base_url(), &teams),
        hooks.url("/ops"),
    );
    (Workspace::new(&text), hooks, sim)
}
