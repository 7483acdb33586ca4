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

/// `status --date` warns of a day the ledger may have forgotten (`[state] keep_days`) by the
/// digest that covers it: a week's digest ending after what was forgotten is still there.
#[tokio::test]
async fn status_warns_of_a_forgotten_day_by_the_span_that_covers_it() {
    use chrono::{Datelike, Days};
    let weekly = team("apac", "acme", &[("slack", "http://127.0.0.1:9/x")])
        .replace("schedule = \"0 9 * * *\"", "schedule = \"0 9 * * 1\"");
    assert!(weekly.contains("* * 1\""), "{weekly}");
    let work = Workspace::new(&config("http://127.0.0.1:9/{account_id}", &[weekly]));
    // A Wednesday weeks ago: Monday's digest covers the week before it, Monday to Sunday.
    let back = chrono::Utc::now().date_naive() - Days::new(21);
    let wednesday = back - Days::new((back.weekday().num_days_from_monday() as u64 + 5) % 7);
    assert_eq!(wednesday.weekday(), chrono::Weekday::Wed);
    let horizon = format!("INSERT INTO forgotten (id, before_day) VALUES (1, '{wednesday}')");
    crate::support::ledger_with(&work, &horizon).await;
    let warned = |date: chrono::NaiveDate| {
        let out = run_in(
            work.dir.path(),
            &["status", "--date", &date.to_string()],
            &[],
        );
        crate::support::stderr(&out).contains("may no longer hold this day's")
    };
    // Its week ends on the Sunday after: kept.
    assert!(!warned(wednesday - Days::new(2)));
    // The week before ended on the Sunday before: forgotten.
    assert!(warned(wednesday - Days::new(3)));
    assert!(!warned(wednesday + Days::new(7)));
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

/// The headless Chromium `scripts/with-postgres` provides; None (the test says it skipped)
/// outside CI without one.
fn chromium() -> Option<String> {
    let found = std::env::var("ACQUIRE_DIGEST_TEST_CHROMIUM")
        .ok()
        .or_else(|| {
            ["chromium", "chromium-browser"].iter().find_map(|name| {
                let which = std::process::Command::new("which")
                    .arg(name)
                    .output()
                    .ok()?;
                which
                    .status
                    .success()
                    .then(|| String::from_utf8_lossy(&which.stdout).trim().to_owned())
            })
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (scripts/with-postgres installs it)"
        );
        eprintln!("skipped: no chromium (scripts/with-postgres installs it)");
    }
    found
}

/// The page as the browser built it (`--dump-dom`), or its screenshot at `png`.
async fn browse(browser: &str, url: &str, png: Option<&std::path::Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(browser);
    command.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1100,900",
    ]);
    command.arg(format!("--user-data-dir={}", profile.path().display()));
    match png {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        command.arg(url).output(),
    )
    .await
    .expect("chromium finished within a minute")
    .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Issue 21: `run`'s page at `/`, loaded in a real headless Chromium, shows each team's last
/// digest per webhook (delivered, failed with its reason, pending), escapes team names, keeps
/// receivers' bodies out, links the other endpoints, and turns red on a rejected reload.
#[tokio::test]
async fn the_status_page_shows_delivered_failed_and_pending_teams_in_a_browser() {
    let Some(browser) = chromium() else { return };
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    hooks.script("/down", vec![Reply::new(503, "<i>maintenance</i>")]);
    hooks.script(
        "/slow",
        vec![Reply::new(200, "ok").delay(std::time::Duration::from_secs(120))],
    );
    let (noon, _) = zone_at(12);
    let teams: Vec<String> = [("apac <b>&", "/ok"), ("emea", "/down"), ("amer", "/slow")]
        .iter()
        .map(|(name, path)| {
            team(name, "acme", &[("generic", &hooks.url(path))])
                .replace("0 9 * * *", "* * * * * *")
                .replace("Asia/Kolkata", &noon)
        })
        .collect();
    // amer's POST must still be unanswered when the page is read, however long the other
    // rounds and the browser's start take on a busy machine: past the default 10 s it would
    // have timed out and read as failed.
    let config =
        config(&sim.base_url(), &teams).replace("[delivery]\n", "[delivery]\ntimeout_secs = 600\n");
    assert!(config.contains("timeout_secs = 600"), "{config}");
    let text = format!("retry_every = \"1h\"\n{config}\n[server]\nlisten = \"127.0.0.1:0\"\n");
    let work = Workspace::new(&text);
    let daemon = crate::support::Daemon::start(&work);
    let base = crate::support::endpoint(&daemon).await;
    crate::support::wait_until(
        "every team's round",
        std::time::Duration::from_secs(30),
        || {
            hooks.seen_at("/ok").len() == 1
                && hooks.seen_at("/down").len() == 3
                && hooks.seen_at("/slow").len() == 1
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    let dom = browse(&browser, &format!("{base}/"), None).await;
    let row = |team: &str| -> String {
        let at = dom
            .find(&format!("<h2>{team}</h2>"))
            .unwrap_or_else(|| panic!("no {team} in\n{dom}"));
        let end = dom[at..].find("</section>").unwrap() + at;
        dom[at..end].to_owned()
    };
    let apac = row("apac &lt;b&gt;&amp;");
    assert!(
        apac.contains("class=\"ok\"") && apac.contains("delivered at "),
        "{apac}"
    );
    assert!(apac.contains("Next digest: "), "{apac}");
    let emea = row("emea");
    assert!(
        emea.contains("class=\"bad\"")
            && emea.contains("FAILED after 3 attempts: HTTP 503; next attempt"),
        "{emea}"
    );
    let amer = row("amer");
    assert!(
        amer.contains("class=\"wait\"") && amer.contains("pending"),
        "{amer}"
    );
    // What needs a look comes first, under a count.
    assert!(
        dom.contains("3 teams: 1 needing attention, 1 pending or waiting"),
        "{dom}"
    );
    let at = |team: &str| dom.find(&format!("<h2>{team}</h2>")).unwrap();
    assert!(
        at("emea") < at("amer") && at("amer") < at("apac &lt;b&gt;&amp;"),
        "{dom}"
    );
    assert!(
        !dom.contains("maintenance"),
        "a receiver's body reached the page:\n{dom}"
    );
    assert!(!dom.contains("<b>&"), "{dom}");
    for link in [
        "href=\"/metrics\"",
        "href=\"/-/healthy\"",
        "href=\"/-/ready\"",
    ] {
        assert!(dom.contains(link), "{link}");
    }
    assert!(dom.contains("http-equiv=\"refresh\""));
    assert!(!dom.contains("class=\"alarm\""), "{dom}");

    // A screenshot for whoever reads the CI run.
    let artefacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let png = artefacts.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    browse(&browser, &format!("{base}/"), Some(&png)).await;
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "no screenshot at {}", png.display());

    std::fs::write(work.config(), "[[teams]]\nname = \"broken\"\n").unwrap();
    let reload = reqwest::Client::new()
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status().as_u16(), 400);
    let dom = browse(&browser, &format!("{base}/"), None).await;
    assert!(
        dom.contains("class=\"alarm\" role=\"alert\">The last config reload was rejected"),
        "{dom}"
    );
    // The config in force still shows.
    assert!(dom.contains("<h2>emea</h2>"), "{dom}");
}
