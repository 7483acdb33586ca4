//! `acquire-digest status`: the ledger read back for an admin and a monitoring check, from
//! either store.

use acquire_digest::simulator::{self, SimulatorOptions};
use serde_json::Value;

use crate::support::{
    Reply, Scripted, Workspace, config, on_postgres, run_beside, run_in, stdout, team,
    test_database_url, zone_at,
};

/// `once` with a webhook that answers and one that keeps failing, then `status`, on the
/// store `on_store` puts the config on.
async fn a_failed_webhook_is_reported_with_its_reason(
    on_store: fn(String) -> String,
    env: &[(&str, &str)],
) {
    let (noon, _) = zone_at(12);
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    hooks.script("/broken", vec![Reply::new(503, "maintenance until 10:00")]);
    let teams = [team(
        "apac",
        "acme",
        &[
            ("slack", &hooks.url("/ok")),
            ("generic", &hooks.url("/broken")),
        ],
    )
    .replace("Asia/Kolkata", &noon)];
    let work = Workspace::new(&on_store(config(&sim.base_url(), &teams)));
    let dir = work.dir.path().to_owned();
    let once = run_beside(&dir, &["once"], env).await;
    assert_eq!(once.status.code(), Some(1));

    let status = run_in(&dir, &["status", "--format", "json"], env);
    assert_eq!(status.status.code(), Some(1), "{}", stdout(&status));
    let json: Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(json["ok"], false);
    let hooks_json = &json["teams"][0]["webhooks"];
    let find = |name: &str| {
        hooks_json
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["webhook"] == name)
            .unwrap()
            .clone()
    };
    let failed = &find("generic")["spans"][0];
    assert_eq!(failed["state"], "failed", "{json:#}");
    assert!(failed["attempts"].as_u64().unwrap() >= 1);
    let reason = failed["last_error"].as_str().unwrap();
    assert!(
        reason.contains("503") && reason.contains("maintenance"),
        "{reason}"
    );
    assert!(failed["next_attempt"].is_string());
    assert_eq!(find("slack")["spans"][0]["state"], "delivered");
    assert!(!stdout(&status).contains(&hooks.url("/broken")));

    // The text form says the same to a person; one team's webhook alone is fine.
    let text = run_in(&dir, &["status", "--team", "apac"], env);
    assert!(stdout(&text).contains("FAILED after"), "{}", stdout(&text));
    let unknown = run_in(&dir, &["status", "--team", "nobody"], env);
    assert_eq!(unknown.status.code(), Some(1));
}

#[tokio::test]
async fn status_reports_a_failed_webhooks_reason_and_exits_1_on_sqlite() {
    a_failed_webhook_is_reported_with_its_reason(|c| c, &[]).await;
}

#[tokio::test]
async fn status_reports_a_failed_webhooks_reason_and_exits_1_on_postgres() {
    let Some(server) = test_database_url() else {
        return;
    };
    let database = acquire_digest::db::testing::scratch_database(&server)
        .await
        .unwrap();
    a_failed_webhook_is_reported_with_its_reason(
        on_postgres,
        &[("ACQUIRE_DIGEST_DATABASE_URL", database.as_str())],
    )
    .await;
}

#[tokio::test]
async fn status_before_anything_was_delivered_says_so() {
    let work = Workspace::new(&config(
        "http://127.0.0.1:9/{account_id}",
        &[team("apac", "acme", &[("slack", "http://127.0.0.1:9/x")])],
    ));
    let out = run_in(work.dir.path(), &["status"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no delivery ledger"), "{err}");
    assert!(
        !work.path("ledger.db").exists(),
        "status must not create a ledger"
    );
}

#[tokio::test]
async fn status_on_an_empty_database_says_so_and_creates_nothing() {
    let Some(server) = test_database_url() else {
        return;
    };
    let database = acquire_digest::db::testing::scratch_database(&server)
        .await
        .unwrap();
    let work = Workspace::new(&on_postgres(config(
        "http://127.0.0.1:9/{account_id}",
        &[team("apac", "acme", &[("slack", "http://127.0.0.1:9/x")])],
    )));
    let env = [("ACQUIRE_DIGEST_DATABASE_URL", database.as_str())];
    let out = run_beside(work.dir.path(), &["status"], &env).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no acquire-digest tables yet"), "{err}");
    let tables: i64 = {
        use sqlx::Connection;
        let mut client = sqlx::AnyConnection::connect(&database).await.unwrap();
        sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&mut client)
        .await
        .unwrap()
    };
    assert_eq!(tables, 0, "status must not create the schema");
}
