//! `acquire-digest once`: the real binary against the simulator (or a scripted Acquire for data
//! the simulator never serves) and a loopback webhook receiver.

use acquire_digest::simulator::{self, RunningSimulator, SimulatorOptions};
use chrono::Timelike;
use serde_json::{Value, json};

use crate::support::{
    InProcess, Reply, Scripted, Workspace, config, report, shown, stderr, stdout, team,
};

const REFERENCE_DAY: &str = "2021-03-18";

async fn simulator() -> RunningSimulator {
    simulator::spawn(SimulatorOptions::default()).await.unwrap()
}

/// Runs the binary off the test's runtime so the loopback servers keep answering.
async fn run(work: &Workspace, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let dir = work.dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::run_in(&dir, &args, &[])
    })
    .await
    .unwrap()
}

/// An Acquire stand-in serving these rows for every day.
pub(crate) async fn acquire_serving(
    countries: Value,
    pages: Value,
    referrers: Value,
    hours: Value,
) -> Scripted {
    let server = Scripted::start(Reply::new(500, "unscripted")).await;
    for (path, key, rows) in [
        ("visitors-by-location", "visitorsByLocation", countries),
        ("most-active-visit-times", "mostActiveVisitTimes", hours),
        ("pages-with-most-chats", "pagesWithMostChats", pages),
        ("visitor-reference", "visitorReference", referrers),
    ] {
        server.script(path, vec![Reply::new(200, report(key, rows))]);
    }
    server
}

pub(crate) fn acquire_base(server: &Scripted) -> String {
    server.url("/{account_id}/api")
}

#[tokio::test]
async fn the_generic_webhook_gets_the_ranked_reference_day() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[team("apac", "acme", &[("generic", &hooks.url("/generic"))])],
    ));
    let output = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(output.status.success(), "{}", stderr(&output));

    let seen = hooks.seen();
    assert_eq!(seen.len(), 1);
    let body = seen[0].json();
    assert_eq!(body["team"], "apac");
    assert_eq!(body["account_id"], "acme");
    assert_eq!(body["date"], REFERENCE_DAY);
    assert_eq!(body["timezone"], "Asia/Kolkata");
    assert_eq!(body["utc_offset"], "+05:30");
    assert_eq!(body["totals"]["visitors"], 131);
    assert_eq!(body["totals"]["chats"], 200);
    assert_eq!(body["totals"]["countries"], 6);
    let names: Vec<&str> = body["countries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "India",
            "United States",
            "French Southern and Antarctic Lands",
            "Benin",
            "Burkina Faso"
        ]
    );
    assert_eq!(body["countries"][0]["rank"], 1);
    assert_eq!(body["countries"][0]["cca3"], "IND");
    assert_eq!(body["countries"][0]["share"], 76.34);
    assert_eq!(body["hours"].as_array().unwrap().len(), 24);
    assert_eq!(body["peak_hours"], json!([]));
    assert_eq!(body["pages"][0]["url"], "https://test1.acquire.io/simulate");
    assert_eq!(body["pages"][0]["percentage"], 89.86);
    assert_eq!(
        body["referrers"][1]["source"],
        "http://test1.acquire.io/acquire_widget/index.html"
    );
    assert_eq!(body["referrers"][1]["chats"], 2);
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("India (IND): 100 visitors")
    );
}

#[tokio::test]
async fn slack_gets_block_kit_without_unfurls() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[team("apac", "acme", &[("slack", &hooks.url("/slack"))])],
    ));
    let output = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let body = hooks.seen()[0].json();
    assert_eq!(body["unfurl_links"], false);
    assert_eq!(body["unfurl_media"], false);
    assert!(body["text"].as_str().unwrap().contains("131 visitors"));
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks.last().unwrap()["type"], "context");
    let context = blocks.last().unwrap().to_string();
    assert!(
        context.contains("Asia/Kolkata") && context.contains(REFERENCE_DAY),
        "{context}"
    );
}

#[tokio::test]
async fn visitor_text_cannot_mention_or_link_in_slack_but_reaches_generic_unaltered() {
    let hostile = [
        "<!channel>",
        "<!here|here>",
        "<!everyone>",
        "<@U024BE7LH>",
        "<!subteam^SAZ94GDB8>",
        "<https://evil.example|Click to verify>",
    ];
    let acquire = acquire_serving(
        json!([{"name": hostile[0], "cca3": "<@U1>", "visitorCount": 5, "chatCount": 1, "caseCount": 0, "emailCount": 0, "cobrowseCount": 0, "videocall": 0, "audiocall": 0, "voipCallCount": 0},
               {"name": hostile[5], "cca3": "XXX", "visitorCount": 4, "chatCount": 1, "caseCount": 0, "emailCount": 0, "cobrowseCount": 0, "videocall": 0, "audiocall": 0, "voipCallCount": 0}]),
        json!(hostile.iter().map(|h| json!({"url": format!("https://shop.example/?q={h}"), "chats": 2, "percentage": "10.00"})).collect::<Vec<_>>()),
        json!([{"source": "<!here> & <mailto:a@b.c|mail>", "chats": 1, "percentage": "100"}]),
        json!([]),
    )
    .await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &acquire_base(&acquire),
        &[team(
            "apac",
            "acme",
            &[
                ("slack", &hooks.url("/slack")),
                ("generic", &hooks.url("/generic")),
            ],
        )
        .replace("schedule =", "top = 10\nschedule =")],
    ));
    let output = run(&work, &["once", "--date", "2026-07-15"]).await;
    assert!(output.status.success(), "{}", stderr(&output));

    let slack = hooks.seen_at("/slack")[0].json();
    let text = slack.to_string();
    for bad in ["<!", "<@", "<http", "<mailto", "|Click"] {
        if bad == "|Click" {
            continue; // the pipe is harmless once the brackets are escaped
        }
        assert!(!text.contains(bad), "{bad} reached Slack: {text}");
    }
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(
        text.contains("&lt;https://evil.example|Click to verify&gt;"),
        "{text}"
    );
    assert!(
        text.contains("&lt;!here&gt; &amp; &lt;mailto:a@b.c|mail&gt;"),
        "{text}"
    );

    let generic = hooks.seen_at("/generic")[0].json();
    assert_eq!(generic["countries"][0]["name"], "<!channel>");
    assert_eq!(
        generic["referrers"][0]["source"],
        "<!here> & <mailto:a@b.c|mail>"
    );
}

#[tokio::test]
async fn huge_days_stay_within_slack_limits() {
    let long = "ü".repeat(5000);
    let countries: Vec<Value> = (0..250)
        .map(|i| json!({"name": format!("Country {i} {long}"), "cca3": "ABC", "visitorCount": 1000 - i, "chatCount": i, "caseCount": 0, "emailCount": 0, "cobrowseCount": 0, "videocall": 0, "audiocall": 0, "voipCallCount": 0}))
        .collect();
    let pages: Vec<Value> = (0..2000)
        .map(|i| json!({"url": format!("https://x.example/{i}/{}", "p".repeat(300)), "chats": i, "percentage": "0.05"}))
        .collect();
    let acquire = acquire_serving(json!(countries), json!(pages), json!([]), json!([])).await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &acquire_base(&acquire),
        &[team(
            &format!("t{}", "e".repeat(300)),
            "acme",
            &[("slack", &hooks.url("/slack"))],
        )
        .replace("schedule =", "top = 1000\nschedule =")],
    ));
    let output = run(&work, &["once", "--date", "2026-07-15"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let body = hooks.seen()[0].json();
    assert!(body.to_string().len() < 40_000);
    let blocks = body["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50);
    let utf16 = |v: &Value| v.as_str().unwrap().encode_utf16().count();
    assert!(utf16(&blocks[0]["text"]["text"]) <= 150);
    assert!(blocks[0]["text"]["text"].as_str().unwrap().ends_with('…'));
    let sections: Vec<&Value> = blocks.iter().filter(|b| b["type"] == "section").collect();
    for section in &sections {
        assert!(utf16(&section["text"]["text"]) <= 3000);
    }
    let countries = sections
        .iter()
        .find(|s| {
            s["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with("*Top countries*")
        })
        .unwrap();
    let last_line = countries["text"]["text"]
        .as_str()
        .unwrap()
        .lines()
        .last()
        .unwrap();
    assert!(
        last_line.starts_with("…and ") && last_line.ends_with(" more lines"),
        "{last_line}"
    );
}

#[tokio::test]
async fn an_empty_day_says_so() {
    let acquire = acquire_serving(json!([]), json!([]), json!([]), json!([])).await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &acquire_base(&acquire),
        &[team(
            "apac",
            "acme",
            &[
                ("slack", &hooks.url("/slack")),
                ("generic", &hooks.url("/generic")),
            ],
        )],
    ));
    let output = run(&work, &["once", "--date", "2026-07-15"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let slack = hooks.seen_at("/slack")[0].json().to_string();
    assert!(slack.contains("No visitors on Wed 15 Jul 2026"), "{slack}");
    let generic = hooks.seen_at("/generic")[0].json();
    assert_eq!(generic["totals"]["visitors"], 0);
    assert_eq!(generic["countries"], json!([]));
    assert!(generic["text"].as_str().unwrap().contains("No visitors"));
}

#[tokio::test]
async fn a_dry_run_prints_every_payload_and_touches_nothing() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[
            team(
                "apac",
                "acme",
                &[
                    ("slack", &hooks.url("/slack")),
                    ("generic", &hooks.url("/generic")),
                ],
            ),
            team("emea", "globex", &[("slack", &hooks.url("/slack-emea"))]),
        ],
    ));
    let output = run(&work, &["once", "--dry-run", "--date", REFERENCE_DAY]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let labelled: Vec<Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(labelled.len(), 3);
    let mut labels: Vec<String> = labelled
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["team"].as_str().unwrap(),
                p["webhook"].as_str().unwrap()
            )
        })
        .collect();
    labels.sort();
    assert_eq!(labels, ["apac generic", "apac slack", "emea slack"]);
    for payload in &labelled {
        let slack = payload["webhook"] == "slack";
        assert_eq!(payload["body"].get("blocks").is_some(), slack, "{payload}");
    }
    assert!(hooks.seen().is_empty());
    assert!(!work.path("ledger.db").exists());
    assert!(stderr(&output).contains("dry run, not sent"));
}

#[tokio::test]
async fn a_delivered_digest_is_not_sent_again_unless_forced() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[team("apac", "acme", &[("slack", &hooks.url("/slack"))])],
    ));
    let first = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(first.status.success());
    // A new ledger says what it may send again; an existing one says nothing of the kind.
    let new = "is new: nothing is recorded as delivered yet";
    assert!(stderr(&first).contains(new), "{}", stderr(&first));
    let again = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("already delivered") && !stderr(&again).contains(new),
        "{}",
        stderr(&again)
    );
    assert_eq!(hooks.seen().len(), 1);

    let forced = run(&work, &["once", "--date", REFERENCE_DAY, "--force"]).await;
    assert!(forced.status.success());
    assert_eq!(hooks.seen().len(), 2);
    // Another day is another digest.
    assert!(
        run(&work, &["once", "--date", "2021-03-19"])
            .await
            .status
            .success()
    );
    assert_eq!(hooks.seen().len(), 3);
}

#[tokio::test]
async fn two_runs_at_the_same_time_post_a_digest_once() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    hooks.script(
        "/slow",
        vec![Reply::new(200, "ok").delay(std::time::Duration::from_secs(4))],
    );
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[team("apac", "acme", &[("slack", &hooks.url("/slow"))])],
    ));
    // The second starts while the first is waiting for the webhook's answer, as an admin's
    // `once` does next to the daemon.
    let first = run(&work, &["once", "--date", REFERENCE_DAY]);
    let second = async {
        crate::support::wait_until(
            "the first run's POST",
            std::time::Duration::from_secs(20),
            || hooks.seen().len() == 1,
        )
        .await;
        run(&work, &["once", "--date", REFERENCE_DAY]).await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(first.status.success(), "{}", stderr(&first));
    // The second run delivered nothing itself: it says why and exits non-zero.
    assert!(!second.status.success(), "{}", stderr(&second));
    assert_eq!(hooks.seen_at("/slow").len(), 1);
    assert!(
        stderr(&second).contains("being delivered by another acquire-digest process"),
        "{}",
        stderr(&second)
    );
}

#[tokio::test]
async fn after_a_partial_failure_only_the_failed_webhook_is_retried() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    hooks.script("/broken", vec![Reply::new(500, "upstream down")]);
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[team(
            "apac",
            "acme",
            &[
                ("slack", &hooks.url("/fine")),
                ("generic", &hooks.url("/broken")),
            ],
        )],
    ));
    let first = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(!first.status.success());
    let summary = stderr(&first);
    assert!(
        summary.contains(&format!(
            "apac 2021-03-18 slack ({}): delivered",
            shown(&hooks.url("/fine"))
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "apac 2021-03-18 generic ({}): FAILED",
            shown(&hooks.url("/broken"))
        )),
        "{summary}"
    );
    assert!(summary.contains("HTTP 500: upstream down"), "{summary}");
    assert_eq!(hooks.seen_at("/fine").len(), 1);
    let failed_tries = hooks.seen_at("/broken").len();
    assert!(failed_tries >= 2, "5xx should be retried");

    hooks.script("/broken", vec![Reply::new(204, "")]);
    let second = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(hooks.seen_at("/fine").len(), 1);
    assert_eq!(hooks.seen_at("/broken").len(), failed_tries + 1);
}

#[tokio::test]
async fn slack_errors_are_reported_and_permanent_ones_not_resent() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    let cases = [
        ("/invalid", 400, "invalid_payload"),
        ("/gone", 404, "no_service"),
        ("/channel", 404, "channel_not_found"),
        ("/archived", 410, "channel_is_archived"),
        ("/forbidden", 403, "action_prohibited"),
        ("/weird", 200, "not ok at all"),
    ];
    let mut teams = Vec::new();
    for (i, (path, status, body)) in cases.iter().enumerate() {
        hooks.script(path, vec![Reply::new(*status, *body)]);
        teams.push(team(
            &format!("t{i}"),
            "acme",
            &[("slack", &hooks.url(path))],
        ));
    }
    let work = Workspace::new(&config(&sim.base_url(), &teams));
    let output = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(!output.status.success());
    let summary = stderr(&output);
    for (path, status, body) in cases {
        assert!(
            summary.contains(&format!("rejected with HTTP {status}: {body}")),
            "{path}: {summary}"
        );
        assert_eq!(hooks.seen_at(path).len(), 1, "{path} was resent");
    }
}

#[tokio::test]
async fn slack_rate_limits_and_outages_are_retried() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    hooks.script(
        "/limited",
        vec![
            Reply::new(429, "rate_limited").header("retry-after", "1"),
            Reply::new(200, "ok"),
        ],
    );
    hooks.script(
        "/flaky",
        vec![Reply::new(503, "busy"), Reply::new(200, "ok")],
    );
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[
            team("a", "acme", &[("slack", &hooks.url("/limited"))]),
            team("b", "acme", &[("slack", &hooks.url("/flaky"))]),
        ],
    ));
    let started = std::time::Instant::now();
    let output = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(hooks.seen_at("/limited").len(), 2);
    assert_eq!(hooks.seen_at("/flaky").len(), 2);
}

#[tokio::test]
async fn a_redirect_is_a_failure_not_a_delivery() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    let moved = hooks.url("/new-home");
    hooks.script("/old", vec![Reply::new(301, "").header("location", &moved)]);
    hooks.script("/new-home", vec![Reply::new(200, "ok")]);
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[team("apac", "acme", &[("generic", &hooks.url("/old"))])],
    ));
    let output = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("rejected with HTTP 301: the webhook redirects elsewhere"),
        "{}",
        stderr(&output)
    );
    assert_eq!(hooks.seen_at("/old").len(), 1);
    assert!(
        hooks.seen_at("/new-home").is_empty(),
        "the redirect was followed"
    );
}

#[tokio::test]
async fn posts_to_one_slack_webhook_are_a_second_apart() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    let shared = hooks.url("/shared-channel");
    let teams: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|name| team(name, "acme", &[("slack", &shared)]))
        .collect();
    let work = Workspace::new(&config(&sim.base_url(), &teams));
    let output = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let mut arrivals: Vec<std::time::Instant> = hooks.seen().iter().map(|s| s.at).collect();
    arrivals.sort();
    assert_eq!(arrivals.len(), 3);
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= std::time::Duration::from_millis(950),
            "{gap:?} between posts"
        );
    }
}

#[tokio::test]
async fn requests_to_acquire_respect_the_global_concurrency_cap() {
    let acquire = acquire_serving(json!([]), json!([]), json!([]), json!([])).await;
    for (path, key) in [
        ("visitors-by-location", "visitorsByLocation"),
        ("most-active-visit-times", "mostActiveVisitTimes"),
        ("pages-with-most-chats", "pagesWithMostChats"),
        ("visitor-reference", "visitorReference"),
    ] {
        let slow =
            Reply::new(200, report(key, json!([]))).delay(std::time::Duration::from_millis(200));
        acquire.script(path, vec![slow]);
    }
    let hooks = Scripted::webhooks().await;
    let teams: Vec<String> = (0..4)
        .map(|i| {
            // Four requests a team: comparisons could be recalled from another team's fetch.
            team(&format!("t{i}"), "acme", &[("generic", &hooks.url("/g"))])
                .replace("schedule =", "compare = []\nschedule =")
        })
        .collect();
    let text = config(&acquire_base(&acquire), &teams).replace(
        "retry_budget_secs = 2\n\n[delivery]",
        "retry_budget_secs = 2\nconcurrency = 3\n\n[delivery]",
    );
    assert!(text.contains("concurrency = 3"));
    let work = Workspace::new(&text);
    let output = run(&work, &["once", "--date", "2026-07-15"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(acquire.seen().len(), 16);
    assert_eq!(acquire.most_in_flight(), 3);
}

#[tokio::test]
async fn a_failed_fetch_sends_nothing_and_fails_the_run() {
    let acquire = acquire_serving(json!([]), json!([]), json!([]), json!([])).await;
    acquire.script(
        "visitor-reference",
        vec![Reply::new(200, "<html>Maintenance</html>")],
    );
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &acquire_base(&acquire),
        &[team("apac", "acme", &[("slack", &hooks.url("/slack"))])],
    ));
    let output = run(&work, &["once", "--date", "2026-07-15"]).await;
    assert!(!output.status.success());
    let summary = stderr(&output);
    assert!(
        summary.contains("apac 2026-07-15: FAILED, no digest sent"),
        "{summary}"
    );
    assert!(
        summary.contains("visitor-reference report for account acme"),
        "{summary}"
    );
    assert!(hooks.seen().is_empty());
}

#[tokio::test]
async fn teams_can_be_picked_by_name() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[
            team("apac", "acme", &[("slack", &hooks.url("/apac"))]),
            team("emea", "globex", &[("slack", &hooks.url("/emea"))]),
        ],
    ));
    let output = run(&work, &["once", "--team", "emea", "--date", REFERENCE_DAY]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        (hooks.seen_at("/apac").len(), hooks.seen_at("/emea").len()),
        (0, 1)
    );

    let unknown = run(&work, &["once", "--team", "nobody"]).await;
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no team named \"nobody\""),
        "{}",
        stderr(&unknown)
    );
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    // Express's default 404 page echoes the path, which for a webhook is the credential.
    hooks.script(
        "/T0SECRET/broken",
        vec![Reply::new(404, "Cannot POST /T0SECRET/broken")],
    );
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[team(
            "apac",
            "acme",
            &[
                ("slack", &hooks.url("/services/T0SECRET/ok")),
                ("generic", &hooks.url("/T0SECRET/broken")),
            ],
        )],
    ));
    let dir = work.dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let args = ["once", "--date", REFERENCE_DAY];
        crate::support::run_in(&dir, &args, &[("RUST_LOG", "trace")])
    })
    .await
    .unwrap();
    let everything = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        everything.contains("DEBUG"),
        "the log is off:\n{everything}"
    );
    assert!(everything.contains("generic"), "{everything}");
    assert!(
        !everything.contains("T0SECRET"),
        "a webhook URL leaked:\n{everything}"
    );
    assert!(
        !everything.contains("test-key-apac"),
        "the API key leaked:\n{everything}"
    );
}

/// Issue 9, defect 2: a receiver that answers after the timeout got a copy per retry, then
/// per retry round. A POST that went unanswered is resent once; then it is "outcome unknown"
/// and nothing resends it, whatever the settings and however often `once` runs.
#[tokio::test]
async fn a_slow_receiver_gets_at_most_two_posts() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    hooks.script(
        "/slow",
        vec![Reply::new(200, "ok").delay(std::time::Duration::from_secs(3))],
    );
    let text = config(
        &sim.base_url(),
        &[team("apac", "acme", &[("generic", &hooks.url("/slow"))])],
    )
    .replace(
        "[delivery]\nretry_budget_secs = 2",
        "[delivery]\ntimeout_secs = 1\nretry_budget_secs = 30",
    );
    let work = Workspace::new(&text);
    let first = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(!first.status.success());
    let log = stderr(&first);
    assert!(log.contains("outcome unknown"), "{log}");
    assert!(log.contains("timed out after 1 s"), "{log}");
    let again = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("outcome unknown"),
        "{}",
        stderr(&again)
    );
    let seen = hooks.seen_at("/slow");
    assert_eq!(seen.len(), 2, "{log}");
    assert_eq!(seen[0].headers["webhook-id"], seen[1].headers["webhook-id"]);
}

/// Issue 9, defect 6: a day that hasn't ended would be posted partial and recorded, and the
/// real digest then skipped.
#[tokio::test]
async fn once_refuses_a_day_that_has_not_ended() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    // Where it is about noon, so today can't end while the test runs.
    let (noon, offset) = crate::support::zone_at(12);
    let work =
        Workspace::new(&config(
            &sim.base_url(),
            &[team("apac", "acme", &[("generic", &hooks.url("/apac"))])
                .replace("Asia/Kolkata", &noon)],
        ));
    let today = chrono::Utc::now().with_timezone(&offset).date_naive();
    for day in [today, today + chrono::Days::new(30)] {
        let output = run(&work, &["once", "--date", &day.to_string()]).await;
        assert!(!output.status.success());
        let log = stderr(&output);
        assert!(
            log.contains("has not ended yet") && log.contains("apac"),
            "{log}"
        );
    }
    assert!(hooks.seen().is_empty());
    // Days before the API and the ledger, down to the earliest chrono reads: refused as such.
    for day in ["1999-12-31", "-262143-01-01"] {
        let output = run(&work, &["once", &format!("--date={day}")]).await;
        let log = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{log}");
        assert!(
            log.contains("is before 2000") && !log.contains("panicked"),
            "{log}"
        );
    }
    assert!(hooks.seen().is_empty());
    let yesterday = (today - chrono::Days::new(1)).to_string();
    let output = run(&work, &["once", "--date", &yesterday]).await;
    assert!(output.status.success(), "{}", stderr(&output));
}

/// `[state] keep_days`: a day the ledger has forgotten may have been sent, so `once` sends it
/// only when forced (a dry run shows it); the oldest day remembered goes as any other.
#[tokio::test]
async fn once_asks_for_force_before_a_day_the_ledger_has_forgotten() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    let (noon, _) = crate::support::zone_at(12);
    let text =
        config(
            &sim.base_url(),
            &[team("apac", "acme", &[("generic", &hooks.url("/apac"))])
                .replace("Asia/Kolkata", &noon)],
        );
    let work = Workspace::new(&text.replace(
        "path = \"ledger.db\"",
        "path = \"ledger.db\"\nkeep_days = 14",
    ));
    let today = chrono::Utc::now().date_naive();
    let forgotten = (today - chrono::Days::new(15)).to_string();
    let oldest = (today - chrono::Days::new(14)).to_string();
    // As the daemon leaves it once it has forgotten something.
    let horizon = format!("INSERT INTO forgotten (id, before_day) VALUES (1, '{oldest}')");
    crate::support::ledger_with(&work, &horizon).await;
    let output = run(&work, &["once", "--date", &forgotten]).await;
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("older than the ledger remembers")
            && log.contains(&format!("ended before {oldest}"))
            && log.contains("[state] keep_days")
            && log.contains("--force"),
        "{log}"
    );
    let dry = run(&work, &["once", "--dry-run", "--date", &forgotten]).await;
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(hooks.seen().is_empty());
    let forced = run(&work, &["once", "--force", "--date", &forgotten]).await;
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(hooks.seen().len(), 1);
    let remembered = run(&work, &["once", "--date", &oldest]).await;
    assert!(remembered.status.success(), "{}", stderr(&remembered));
    assert_eq!(hooks.seen().len(), 2);
}

/// Issue 9, defect 9: a change day's window is exact at both ends, in the offset in force at
/// its start, and its hours land on the local hours they were counted in.
#[tokio::test]
async fn change_days_ask_for_their_exact_window() {
    let labels = ["12 AM", "01 AM", "02 AM", "03 AM", "04 AM"];
    let hours: Vec<Value> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| json!({"label": label, "visits": i + 1}))
        .collect();
    let acquire = acquire_serving(json!([]), json!([]), json!([]), json!(hours)).await;
    let hooks = Scripted::webhooks().await;
    // Without comparisons, the last request of each run is for its own day.
    let team = team("ny", "acme", &[("generic", &hooks.url("/ny"))])
        .replace("Asia/Kolkata", "America/New_York")
        .replace("schedule =", "compare = []\nschedule =");
    let work = Workspace::new(&config(&acquire_base(&acquire), &[team]));
    for (day, end, offset) in [
        ("2026-11-01", "2026-11-02+00%3A59%3A59", "-04%3A00"),
        ("2026-03-08", "2026-03-08+22%3A59%3A59", "-05%3A00"),
    ] {
        let output = run(&work, &["once", "--date", day]).await;
        assert!(output.status.success(), "{}", stderr(&output));
        let query = acquire
            .seen_at("visitors-by-location")
            .last()
            .unwrap()
            .query
            .clone();
        assert!(
            query.contains(&format!("start_date={day}+00%3A00%3A00"))
                && query.contains(&format!("end_date={end}"))
                && query.contains(&format!("offset={offset}")),
            "{day}: {query}"
        );
    }
    let bodies: Vec<Value> = hooks.seen().iter().map(|s| s.json()).collect();
    // Autumn: the label "02 AM" on -04:00 is 01:00 EST, the repeated hour.
    assert_eq!(bodies[0]["hours"][1], json!(2 + 3));
    assert_eq!(bodies[0]["hours"][2], json!(4));
    // Spring: "02 AM" on -05:00 is 03:00 EDT; 02:00 doesn't exist.
    assert_eq!(bodies[1]["hours"][2], json!(0));
    assert_eq!(bodies[1]["hours"][3], json!(3));
}

/// Every delivery error names its cause; nothing that never reached the receiver counts as
/// sent (so it is retried freely, not "outcome unknown").
#[tokio::test]
async fn a_failed_connection_names_its_cause() {
    let sim = simulator().await;
    // A port nobody listens on, and one that speaks plain bytes where TLS is expected.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let not_tls = format!("https://{}/hook", plain.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = plain.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[
            team("a", "acme", &[("generic", &refused)]),
            team("b", "acme", &[("generic", &not_tls)]),
        ],
    ));
    let output = run(&work, &["once", "--date", REFERENCE_DAY]).await;
    assert!(!output.status.success());
    let log = stderr(&output);
    let line = |team: &str| {
        log.lines()
            .find(|l| l.starts_with(&format!("{team} {REFERENCE_DAY}")))
            .unwrap_or_else(|| panic!("no line for {team}:\n{log}"))
            .to_owned()
    };
    let (a, b) = (line("a"), line("b"));
    assert!(
        a.contains("could not connect") && a.contains("refused") && a.contains("nothing was sent"),
        "{a}"
    );
    assert!(
        b.contains("TLS handshake failed") && b.contains("nothing was sent"),
        "{b}"
    );
    assert!(!log.contains("outcome unknown"), "{log}");
}

/// A receiver that echoes the token in the webhook's query string doesn't get it into the
/// summary, the log, or the ledger's last error that later runs print.
#[tokio::test]
async fn a_query_token_echoed_by_the_receiver_is_redacted() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    hooks.script("/h", vec![Reply::new(404, "unknown token s3cr3tTokenX")]);
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[team(
            "apac",
            "acme",
            &[("generic", &hooks.url("/h?token=s3cr3tTokenX"))],
        )],
    ));
    for _ in 0..2 {
        let output = run(&work, &["once", "--date", REFERENCE_DAY]).await;
        let everything = format!("{}{}", stdout(&output), stderr(&output));
        assert!(
            everything.contains("unknown token [redacted]"),
            "{everything}"
        );
        assert!(!everything.contains("s3cr3t"), "{everything}");
    }
    let ledger = std::fs::read(work.path("ledger.db")).unwrap();
    let wal = std::fs::read(work.path("ledger.db-wal")).unwrap_or_default();
    let raw = String::from_utf8_lossy(&[ledger, wal].concat()).into_owned();
    assert!(
        raw.contains("unknown token [redacted]"),
        "the error is recorded"
    );
    assert!(!raw.contains("s3cr3t"));
}

#[tokio::test]
async fn a_kill_while_a_fresh_ledger_is_created_never_stops_the_next_start() {
    use acquire_digest::clock::WallClock;
    use acquire_digest::config::StateStore;
    use acquire_digest::ledger::Ledger;

    let teams = [team(
        "apac",
        "acme",
        &[("slack", "http://127.0.0.1:9/hook")],
    )];
    let text = config("http://127.0.0.1:9", &teams);
    let start = |work: &Workspace| {
        std::process::Command::new(env!("CARGO_BIN_EXE_acquire-digest"))
            .arg("once")
            .current_dir(work.dir.path())
            .env_remove("ACQUIRE_DIGEST_CONFIG")
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long this machine takes to a ledger file, so the kills fall before and after it.
    let work = Workspace::new(&text);
    let (mut child, started) = (start(&work), std::time::Instant::now());
    while !work.path("ledger.db").exists() && started.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let step = started.elapsed() / 50;
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut with_file, mut without) = (0, 0);
    for trial in 0..100u32 {
        let work = Workspace::new(&text);
        let mut child = start(&work);
        std::thread::sleep(step * trial);
        child.kill().unwrap();
        child.wait().unwrap();
        let path = work.path("ledger.db");
        if !path.exists() {
            without += 1;
            continue;
        }
        with_file += 1;
        let opened = Ledger::open(&StateStore::Sqlite(path), WallClock::new()).await;
        assert!(opened.is_ok(), "trial {trial}: {}", opened.err().unwrap());
    }
    // Both sides of the creation were reached, or the trials proved nothing.
    assert!(
        with_file > 0 && without > 0,
        "{with_file} with a file, {without} without"
    );
}

#[tokio::test]
async fn once_sends_the_span_the_schedule_puts_a_day_in_and_never_another_shape_of_it() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    let weekdays = team("emea", "acme", &[("generic", &hooks.url("/emea"))])
        .replace("0 9 * * *", "30 8 * * 1-5")
        .replace("Asia/Kolkata", "Europe/Berlin");
    // Same zone, another schedule: `once` works a span out once per schedule and zone, so
    // this team's must not be the other's.
    let daily = team("daily", "acme", &[("generic", &hooks.url("/daily"))])
        .replace("Asia/Kolkata", "Europe/Berlin");
    let work = Workspace::new(&config(&sim.base_url(), &[weekdays, daily]));
    // Saturday 2021-03-13 goes out on Monday, with Friday and Sunday.
    let saturday = run(&work, &["once", "--date", "2021-03-13"]).await;
    assert!(saturday.status.success(), "{}", stderr(&saturday));
    let body = hooks.seen_at("/emea")[0].json();
    let days = (&body["date"], &body["end_date"], &body["days"]);
    assert_eq!(
        days,
        (&json!("2021-03-12"), &json!("2021-03-14"), &json!(3))
    );
    let body = hooks.seen_at("/daily")[0].json();
    let days = (&body["date"], &body["end_date"], &body["days"]);
    assert_eq!(
        days,
        (&json!("2021-03-13"), &json!("2021-03-13"), &json!(1))
    );
    // Asked for the Friday, it is the same digest, under the same key: already delivered.
    let friday = run(&work, &["once", "--date", "2021-03-12"]).await;
    assert!(friday.status.success());
    assert!(
        stderr(&friday).contains("already delivered"),
        "{}",
        stderr(&friday)
    );
    assert_eq!(hooks.seen_at("/emea").len(), 1);
    // Thursday went out on Friday, alone.
    let thursday = run(&work, &["once", "--date", "2021-03-11"]).await;
    assert!(thursday.status.success());
    let body = hooks.seen_at("/emea")[1].json();
    assert_eq!(
        (&body["date"], &body["end_date"]),
        (&json!("2021-03-11"), &json!("2021-03-11"))
    );
}

#[tokio::test]
async fn a_gateway_answering_5xx_after_reading_gets_at_most_ten_posts_in_all() {
    let sim = simulator().await;
    let hooks = Scripted::webhooks().await;
    hooks.script("/gateway", vec![Reply::new(502, "bad gateway")]);
    hooks.script(
        "/blip",
        vec![
            Reply::new(500, "oops"),
            Reply::new(503, "busy"),
            Reply::new(200, "ok"),
        ],
    );
    // A team whose firing was five minutes ago, in UTC, so a daemon after the `once` runs is
    // inside its catch_up and past the ten minutes a 5xx round is spaced by.
    let now = chrono::Utc::now();
    let firing = now - chrono::Duration::minutes(5);
    let schedule = format!("{} {} * * *", firing.minute(), firing.hour());
    let day = (firing.date_naive() - chrono::Days::new(1)).to_string();
    let apac = team(
        "apac",
        "acme",
        &[
            ("generic", &hooks.url("/gateway")),
            ("mattermost", &hooks.url("/blip")),
        ],
    );
    let apac = apac
        .replace("0 9 * * *", &schedule)
        .replace("Asia/Kolkata", "UTC");
    let work = Workspace::new(&config(&sim.base_url(), &[apac]));
    let first = run(&work, &["once", "--date", &day]).await;
    // A blip of two 5xx is still delivered at once, by the quick retries.
    assert_eq!(hooks.seen_at("/blip").len(), 3, "{}", stderr(&first));
    let said = stderr(&first);
    assert!(
        said.contains("mattermost") && said.contains("delivered"),
        "{said}"
    );
    for _ in 1..14 {
        run(&work, &["once", "--date", &day]).await;
    }
    assert_eq!(hooks.seen_at("/gateway").len(), 10);
    let last = run(&work, &["once", "--date", &day]).await;
    assert!(!last.status.success());
    assert!(
        stderr(&last).contains("10 POSTs reached the receiver"),
        "{}",
        stderr(&last)
    );
    assert_eq!(hooks.seen_at("/gateway").len(), 10);
    // A daemon after them, half an hour on and again an hour later: still ten.
    let (clock, daemon) = InProcess::start(&work, now + chrono::Duration::minutes(30));
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    clock.jump(chrono::Duration::hours(1));
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    daemon.finish().await;
    assert_eq!(hooks.seen_at("/gateway").len(), 10);
    assert_eq!(
        hooks.seen_at("/blip").len(),
        3,
        "delivered once, never again"
    );
}
