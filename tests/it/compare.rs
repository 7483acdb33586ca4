//! Comparisons and empty days, end to end: the real binary against the simulator and an Acquire
//! stand-in that serves each day its own rows and counts what it was asked for each day.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acquire_digest::simulator::{self, SimulatorOptions};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Daemon, InProcess, Scripted, Workspace, config, minutes_until, on_postgres, report, run_beside,
    serve, stderr, team, test_database_url, wait_until, with_insights, zone_at,
};

/// One day's rows: countries (name, visitors) and pages (url, chats).
#[derive(Clone, Default)]
struct Day {
    countries: Vec<(&'static str, u64)>,
    pages: Vec<(&'static str, u64)>,
    /// Data still arriving: its first country's visitors on the day's first, second, ... read
    /// (four requests a read), the last repeated; empty for a day that is all in.
    arriving: Vec<u64>,
}

#[derive(Default)]
struct Served {
    days: HashMap<String, Day>,
    /// Requests per `start_date` day, whatever was answered.
    asked: HashMap<String, usize>,
}

/// An Acquire stand-in: each day it was given is answered with its rows, any other with a 500.
#[derive(Clone)]
struct Days {
    base: String,
    served: Arc<Mutex<Served>>,
}

impl Days {
    async fn start(days: &[(String, Day)]) -> Days {
        let served = Arc::new(Mutex::new(Served {
            days: days
                .iter()
                .map(|(date, day)| (date.clone(), day.clone()))
                .collect(),
            asked: HashMap::new(),
        }));
        let router = Router::new().fallback(answer).with_state(served.clone());
        let addr = serve(router).await;
        Days {
            base: format!("http://{addr}/{{account_id}}/api"),
            served,
        }
    }

    /// How many requests asked for `date`'s window.
    fn asked(&self, date: &str) -> usize {
        self.served
            .lock()
            .unwrap()
            .asked
            .get(date)
            .copied()
            .unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.served.lock().unwrap().asked.values().sum()
    }
}

async fn answer(
    State(served): State<Arc<Mutex<Served>>>,
    request: Request,
) -> (StatusCode, String) {
    let query = request.uri().query().unwrap_or_default();
    let start = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "start_date")
        .map(|(_, value)| value[..10].to_owned())
        .unwrap_or_default();
    let endpoint = request.uri().path().rsplit('/').next().unwrap_or_default();
    let mut served = served.lock().unwrap();
    *served.asked.entry(start.clone()).or_default() += 1;
    let asked = served.asked[&start] as u64;
    let Some(day) = served.days.get(&start) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no such day here".into());
    };
    let mut day = day.clone();
    if let Some(&last) = day.arriving.last() {
        let read = (asked as usize - 1) / 4;
        day.countries[0].1 = day.arriving.get(read).copied().unwrap_or(last);
    }
    let (key, rows) = match endpoint {
        "visitors-by-location" => (
            "visitorsByLocation",
            day.countries
                .iter()
                .map(|(name, visitors)| {
                    json!({"name": name, "cca3": &name[..3], "visitorCount": visitors, "chatCount": 1,
                           "caseCount": 0, "emailCount": 0, "cobrowseCount": 0, "videocall": 0,
                           "audiocall": 0, "voipCallCount": 0})
                })
                .collect(),
        ),
        "pages-with-most-chats" => (
            "pagesWithMostChats",
            day.pages
                .iter()
                .map(|(url, chats)| json!({"url": url, "chats": chats, "percentage": "10.00"}))
                .collect(),
        ),
        "visitor-reference" => ("visitorReference", vec![]),
        _ => ("mostActiveVisitTimes", vec![]),
    };
    (StatusCode::OK, report(key, Value::Array(rows)))
}

/// `n` days before `date`, as the API and the digest write it.
fn before(date: &str, n: u64) -> String {
    let date: chrono::NaiveDate = date.parse().unwrap();
    (date - chrono::Days::new(n)).to_string()
}

fn after(date: &str) -> String {
    let date: chrono::NaiveDate = date.parse().unwrap();
    (date + chrono::Days::new(1)).to_string()
}

/// "Tue 14 Jul 2026", as the digests name a day.
fn long_date(date: &str) -> String {
    let date: chrono::NaiveDate = date.parse().unwrap();
    date.format("%a %-d %b %Y").to_string()
}

/// A day ten days ago, well within `history_days` (kept reports older than that are dropped,
/// so fixed dates would stop being kept as they age).
fn wednesday() -> String {
    before(&chrono::Utc::now().date_naive().to_string(), 10)
}

/// `wednesday()` beside the day before: B overtook A, C held its place, E is new and D dropped
/// out; one page rose, one is new. Nothing is served for a week earlier.
fn tuesday_and_wednesday() -> Vec<(String, Day)> {
    let wednesday = wednesday();
    vec![
        (
            before(&wednesday, 1),
            Day {
                countries: vec![("Aland", 50), ("Belize", 40), ("Chad", 30), ("Denmark", 5)],
                pages: vec![("https://shop.example/a", 9), ("https://shop.example/b", 3)],
                arriving: vec![],
            },
        ),
        (
            wednesday,
            Day {
                countries: vec![("Belize", 60), ("Aland", 45), ("Chad", 30), ("Estonia", 10)],
                pages: vec![("https://shop.example/b", 8), ("https://shop.example/c", 2)],
                arriving: vec![],
            },
        ),
    ]
}

async fn once(work: &Workspace, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut all = vec!["once"];
    all.extend(args);
    run_beside(work.dir.path(), &all, env).await
}

fn ranks(body: &Value, list: &str, key: &str) -> Vec<(String, Value)> {
    body[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[key].as_str().unwrap().to_owned(),
                e["previous_rank"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn compared_totals_are_the_earlier_days_and_ranks_their_whole_ranking() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &sim.base_url(),
        &[team("apac", "acme", &[("generic", &hooks.url("/generic"))])
            .replace("schedule =", "top = 2\nschedule =")],
    ));
    // The compared day first, so its comparisons are fetched rather than recalled.
    for date in ["2026-07-15", "2026-07-14", "2026-07-08"] {
        let output = once(&work, &["--date", date], &[]).await;
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let seen = hooks.seen_at("/generic");
    let [wednesday, tuesday, week_before] = [0, 1, 2].map(|i| seen[i].json());
    assert!(wednesday["totals"]["visitors"].as_u64().unwrap() > 0);
    assert_eq!(wednesday["compare"]["previous"]["date"], "2026-07-14");
    assert_eq!(
        wednesday["compare"]["previous"]["totals"],
        tuesday["totals"]
    );
    assert_eq!(wednesday["compare"]["last_week"]["end_date"], "2026-07-08");
    assert_eq!(
        wednesday["compare"]["last_week"]["totals"],
        week_before["totals"]
    );
    assert_ne!(tuesday["totals"], week_before["totals"]);
    // Each listed entry's rank among all of Tuesday's, not just Tuesday's top two.
    let mut tuesday_all: Vec<(String, u64)> = Vec::new();
    let full = Workspace::new(&config(
        &sim.base_url(),
        &[team("apac", "acme", &[("generic", &hooks.url("/full"))])
            .replace("schedule =", "top = 1000\ncompare = []\nschedule =")],
    ));
    let output = once(&full, &["--date", "2026-07-14"], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let every = hooks.seen_at("/full")[0].json();
    for country in every["countries"].as_array().unwrap() {
        let name = country["name"].as_str().unwrap().to_owned();
        tuesday_all.push((name, country["rank"].as_u64().unwrap()));
    }
    for (name, previous) in ranks(&wednesday, "countries", "name") {
        let expected = tuesday_all
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r);
        assert_eq!(previous.as_u64(), expected, "{name}");
    }
    assert_eq!(
        every["compare"],
        json!({"previous": null, "last_week": null})
    );
}

/// Up, down, unchanged and new; a week earlier that fails is null and logged, not a failure;
/// the next day's run asks nothing more for the day already kept.
async fn ranks_and_a_failed_comparison_then_nothing_refetched(
    config_text: String,
    env: &[(&str, &str)],
) {
    let (wed, tue) = (wednesday(), before(&wednesday(), 1));
    let (thu, week_before) = (after(&wed), before(&wed, 7));
    let mut days = tuesday_and_wednesday();
    days.push((
        thu.clone(),
        Day {
            countries: vec![("Chad", 1)],
            pages: vec![],
            arriving: vec![],
        },
    ));
    let api = Days::start(&days).await;
    let hooks = Scripted::webhooks().await;
    let text = config_text
        .replace("{api}", &api.base)
        .replace("{generic}", &hooks.url("/generic"))
        .replace("{slack}", &hooks.url("/slack"));
    let work = Workspace::new(&text);

    let output = once(&work, &["--date", &wed], env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("WARN")
            && log.contains("no last_week comparison")
            && log.contains(&week_before),
        "{log}"
    );
    let body = hooks.seen_at("/generic")[0].json();
    assert_eq!(body["compare"]["last_week"], Value::Null);
    assert_eq!(body["compare"]["previous"]["totals"]["visitors"], 125);
    assert_eq!(body["totals"]["visitors"], 145);
    assert_eq!(
        ranks(&body, "countries", "name"),
        [
            ("Belize".to_owned(), json!(2)),
            ("Aland".to_owned(), json!(1)),
            ("Chad".to_owned(), json!(3)),
            ("Estonia".to_owned(), Value::Null),
        ]
    );
    assert_eq!(
        ranks(&body, "pages", "url"),
        [
            ("https://shop.example/b".to_owned(), json!(2)),
            ("https://shop.example/c".to_owned(), Value::Null),
        ]
    );
    assert!(
        body["countries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["last_week_rank"].is_null())
    );
    // What a reader sees: Belize up one, Aland down one, Chad unchanged, Estonia new.
    let slack = hooks.seen_at("/slack")[0].json().to_string();
    for line in [
        "1. Belize (Bel): *60 visitors*, 41.4% · 1 chat · ▲1",
        "2. Aland (Ala): *45 visitors*, 31.0% · 1 chat · ▼1",
        "3. Chad (Cha): *30 visitors*, 20.7% · 1 chat\\n",
        "4. Estonia (Est): *10 visitors*, 6.9% · 1 chat · new",
        &format!("vs {}: visitors ▲ 16% · chats =", long_date(&tue)),
    ] {
        assert!(slack.contains(line), "{line} in {slack}");
    }
    assert_eq!((api.asked(&wed), api.asked(&tue)), (4, 4));

    // Thursday: Wednesday is kept, so only Thursday (and its failing week earlier) is asked.
    let output = once(&work, &["--date", &thu], env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(api.asked(&thu), 4);
    assert_eq!((api.asked(&wed), api.asked(&tue)), (4, 4));
    let thursday = hooks.seen_at("/generic")[1].json();
    assert_eq!(thursday["compare"]["previous"]["totals"], body["totals"]);
    assert_eq!(thursday["countries"][0]["previous_rank"], 3);
}

const TWO_HOOKS: &str = "[acquire]\nbase_url = \"{api}\"\nretry_budget_secs = 1\n\n[delivery]\nretry_budget_secs = 2\n\n[state]\npath = \"ledger.db\"\n\n[[teams]]\nname = \"apac\"\naccount_id = \"acme\"\napi_key = \"key-1234\"\ntimezone = \"Asia/Kolkata\"\nschedule = \"0 9 * * *\"\n\n[[teams.webhooks]]\nkind = \"generic\"\nurl = \"{generic}\"\n\n[[teams.webhooks]]\nkind = \"slack\"\nurl = \"{slack}\"\n";

#[tokio::test]
async fn ranks_move_a_failed_comparison_is_null_and_a_kept_day_is_not_asked_again() {
    ranks_and_a_failed_comparison_then_nothing_refetched(TWO_HOOKS.to_owned(), &[]).await;
}

#[tokio::test]
async fn on_postgres_too_a_kept_day_is_not_asked_again() {
    let Some(server) = test_database_url() else {
        return;
    };
    let database = acquire_digest::db::testing::scratch_database(&server)
        .await
        .unwrap();
    ranks_and_a_failed_comparison_then_nothing_refetched(
        on_postgres(TWO_HOOKS.to_owned()),
        &[("ACQUIRE_DIGEST_DATABASE_URL", database.as_str())],
    )
    .await;
}

#[tokio::test]
async fn no_comparisons_ask_for_nothing_more() {
    let wed = wednesday();
    let api = Days::start(&tuesday_and_wednesday()).await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &api.base,
        &[team("apac", "acme", &[("generic", &hooks.url("/generic"))])
            .replace("schedule =", "compare = []\nschedule =")],
    ));
    let output = once(&work, &["--date", &wed], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!((api.total(), api.asked(&wed)), (4, 4));
    let body = hooks.seen_at("/generic")[0].json();
    assert_eq!(
        body["compare"],
        json!({"previous": null, "last_week": null})
    );
    assert!(body["countries"][0]["previous_rank"].is_null());
}

/// A dry run compares with what is kept but keeps nothing itself.
#[tokio::test]
async fn a_dry_run_reads_kept_days_and_keeps_none() {
    let (wed, thu) = (wednesday(), after(&wednesday()));
    let fri = after(&thu);
    let mut days = tuesday_and_wednesday();
    for date in [&thu, &fri] {
        let chad = Day {
            countries: vec![("Chad", 2)],
            pages: vec![],
            arriving: vec![],
        };
        days.push((date.clone(), chad));
    }
    let api = Days::start(&days).await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &api.base,
        &[team("apac", "acme", &[("generic", &hooks.url("/generic"))])
            .replace("schedule =", "compare = [\"previous\"]\nschedule =")],
    ));
    let output = once(&work, &["--date", &wed], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(api.asked(&wed), 4);

    // Thursday's dry run recalls Wednesday and fetches only Thursday.
    let output = once(&work, &["--dry-run", "--date", &thu], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        shown["body"]["compare"]["previous"]["totals"]["visitors"],
        145
    );
    assert_eq!((api.asked(&wed), api.asked(&thu)), (4, 4));

    // Friday's real run has to fetch Thursday: the dry run did not keep it.
    let output = once(&work, &["--date", &fri], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(api.asked(&thu), 8);
    assert_eq!(hooks.seen_at("/generic").len(), 2);
}

/// An empty day under `skip_empty` posts nothing, is recorded as skipped, and isn't tried
/// again; an admin's `--force` still sends it.
#[tokio::test]
async fn an_empty_day_is_skipped_once_and_for_all_unless_forced() {
    let (wed, tue) = (wednesday(), before(&wednesday(), 1));
    let api = Days::start(&[(wed.clone(), Day::default()), (tue, Day::default())]).await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &api.base,
        &[team(
            "apac",
            "acme",
            &[
                ("slack", &hooks.url("/slack")),
                ("generic", &hooks.url("/generic")),
            ],
        )
        .replace(
            "schedule =",
            "skip_empty = true\ncompare = [\"previous\"]\nschedule =",
        )],
    ));
    let output = once(&work, &["--date", &wed], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    assert_eq!(log.matches("skipped: no visitors").count(), 2, "{log}");
    assert!(hooks.seen().is_empty());
    let asked = api.total();

    let output = once(&work, &["--date", &wed], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("generic (") && stderr(&output).contains("skipped: no visitors")
    );
    assert!(hooks.seen().is_empty());
    assert_eq!(api.total(), asked, "a settled day costs no requests");

    let status = run_beside(work.dir.path(), &["status", "--date", &wed], &[]).await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("skipped: no visitors"), "{text}");

    let output = once(&work, &["--date", &wed, "--force"], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(hooks.seen().len(), 2);
    assert!(
        hooks.seen_at("/slack")[0]
            .json()
            .to_string()
            .contains("No visitors")
    );
}

/// The daemon records an empty day as skipped once, and its later firings for the same day
/// neither post it nor ask the API again.
#[tokio::test]
async fn the_daemon_skips_an_empty_day_once() {
    let (noon, offset) = zone_at(12);
    let yesterday =
        (chrono::Utc::now().with_timezone(&offset).date_naive() - chrono::Days::new(1)).to_string();
    let api = Days::start(&[(yesterday.clone(), Day::default())]).await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &api.base,
        &[team("apac", "acme", &[("slack", &hooks.url("/slack"))])
            .replace("0 9 * * *", "* * * * * *")
            .replace("Asia/Kolkata", &noon)
            .replace("schedule =", "skip_empty = true\ncompare = []\nschedule =")],
    ));
    let daemon = Daemon::start(&work);
    daemon
        .wait_for_log("skipped: no visitors", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = daemon.log();
    assert_eq!(log.matches("skipped: no visitors").count(), 1, "{log}");
    assert!(hooks.seen().is_empty());
    assert_eq!(api.total(), 4, "{log}");
}

/// `history_days = 0` keeps nothing: the next day's run asks for the day before again.
#[tokio::test]
async fn history_days_0_keeps_nothing() {
    let (wed, thu) = (wednesday(), after(&wednesday()));
    let mut days = tuesday_and_wednesday();
    days.push((thu.clone(), Day::default()));
    let api = Days::start(&days).await;
    let hooks = Scripted::webhooks().await;
    let text = config(
        &api.base,
        &[team("apac", "acme", &[("generic", &hooks.url("/generic"))])
            .replace("schedule =", "compare = [\"previous\"]\nschedule =")],
    );
    let work = Workspace::new(&format!("history_days = 0\n{text}"));
    for date in [&wed, &thu] {
        let output = once(&work, &["--date", date], &[]).await;
        assert!(output.status.success(), "{}", stderr(&output));
    }
    assert_eq!(api.asked(&wed), 8);
    let thursday = hooks.seen_at("/generic")[1].json();
    assert_eq!(thursday["compare"]["previous"]["totals"]["visitors"], 145);
}

/// Reports are kept only for comparisons: while no team compares, nothing is kept, so a
/// config that starts comparing later asks for the earlier day again.
#[tokio::test]
async fn nothing_is_kept_while_no_team_compares() {
    let (wed, thu) = (wednesday(), after(&wednesday()));
    let mut days = tuesday_and_wednesday();
    days.push((thu.clone(), Day::default()));
    let api = Days::start(&days).await;
    let hooks = Scripted::webhooks().await;
    let comparing = |compare: &str| {
        let team = team("apac", "acme", &[("generic", &hooks.url("/generic"))]);
        let team = team.replace("schedule =", &format!("compare = {compare}\nschedule ="));
        config(&api.base, &[team])
    };
    let work = Workspace::new(&comparing("[]"));
    let output = once(&work, &["--date", &wed], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(api.asked(&wed), 4);

    std::fs::write(work.config(), comparing("[\"previous\"]")).unwrap();
    let output = once(&work, &["--date", &thu], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(api.asked(&wed), 8);
    let thursday = hooks.seen_at("/generic")[1].json();
    assert_eq!(thursday["compare"]["previous"]["totals"]["visitors"], 145);
}

/// The 56 days before `day`, each with 40 visitors from India.
fn eight_usual_weeks_before(day: &str) -> Vec<(String, Day)> {
    let usual = Day {
        countries: vec![("India", 40)],
        ..Day::default()
    };
    (1..=56).map(|n| (before(day, n), usual.clone())).collect()
}

/// Issue 20: a team with no history learns its baselines at most 14 days per digest (one
/// report each), the same weekday first, so its first digest can already say that a day of
/// nothing, where 40 are usual, looks like broken tracking.
#[tokio::test]
async fn a_new_team_fetches_at_most_fourteen_baseline_days_per_digest() {
    // Two days ago: its 56 days before are all inside the 60 kept.
    let day = before(&chrono::Utc::now().date_naive().to_string(), 2);
    let mut days = eight_usual_weeks_before(&day);
    days.push((day.clone(), Day::default()));
    let api = Days::start(&days).await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &api.base,
        &[with_insights(team(
            "apac",
            "acme",
            &[("generic", &hooks.url("/generic"))],
        ))],
    ));
    let output = once(&work, &["--date", &day], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    // Four reports of the day, four of each comparison, and 14 baseline days of one report.
    assert_eq!(api.total(), 4 + 4 + 4 + 14);
    // The eight Wednesdays before came first: the comparison's a week earlier, then seven.
    for week in 1..=8 {
        assert!(api.asked(&before(&day, 7 * week)) >= 1, "week {week}");
    }
    let body = hooks.seen_at("/generic")[0].json();
    assert_eq!(
        body["unusual"],
        json!([{"metric": "visitors", "direction": "none_recorded", "value": 0, "usual": 40,
                "weekday": chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").unwrap().format("%A").to_string(),
                "score": body["unusual"][0]["score"]}])
    );
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("Visitors: no visitors recorded: tracking may be broken"),
        "{}",
        body["text"]
    );
    assert_eq!(body["moved"]["visitors"]["change"], -40);
    // `once` doesn't wait for data that looks incomplete: it says so and marks the digest.
    assert_eq!(body["provisional"], true);
    assert!(
        stderr(&output).contains("the data looks incomplete (a zero or unusually low total) and `once` doesn't wait for more"),
        "{}",
        stderr(&output)
    );

    // Each later digest learns 14 more, until all 56 are kept; then none.
    let mut learned = vec![];
    for _ in 0..4 {
        let asked = api.total();
        let output = once(&work, &["--date", &day, "--force"], &[]).await;
        assert!(output.status.success(), "{}", stderr(&output));
        learned.push(api.total() - asked - 4);
    }
    // 16 known after the first: 14, 14, 12, then nothing left to learn.
    assert_eq!(learned, [14, 14, 12, 0]);
}

/// Issue 20: a day whose data keeps changing and stays far below what is usual is read again
/// every `recheck`, three times, then sent once, marked provisional.
#[tokio::test]
async fn data_that_never_settles_is_sent_once_after_three_rechecks_marked_provisional() {
    // Wednesday 25 Nov 2026 at 09:00 in Kolkata covers Tuesday; 40 visitors are usual.
    let day = "2026-11-24".to_owned();
    let mut days = eight_usual_weeks_before(&day);
    let arriving = Day {
        countries: vec![("India", 0)],
        arriving: vec![0, 1, 2, 3, 4],
        ..Day::default()
    };
    days.push((day.clone(), arriving));
    let api = Days::start(&days).await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &api.base,
        &[with_insights(team(
            "apac",
            "acme",
            &[("generic", &hooks.url("/generic"))],
        ))],
    ));
    let (clock, daemon) = InProcess::start(&work, "2026-11-25T03:29:58Z".parse().unwrap());
    let mut minutes = 0;
    while hooks.seen_at("/generic").is_empty() {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Nothing goes out while it waits: 15 minutes between reads.
        if minutes < 45 {
            assert!(hooks.seen().is_empty(), "sent after {minutes} minutes");
        }
        if minutes == 0 {
            let mut said = String::new();
            for _ in 0..20 {
                let status = run_beside(work.dir.path(), &["status", "--date", &day], &[]).await;
                said = String::from_utf8_lossy(&status.stdout).into_owned();
                if said.contains("waiting") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let shown = "waiting for data: it looked incomplete; read again at 2026-11-25 03:45";
            assert!(said.contains(shown), "{said}");
        }
        clock.jump(chrono::Duration::minutes(8));
        minutes += 8;
        assert!(minutes <= 120, "not sent after two hours");
    }
    assert!(minutes >= 45, "sent after {minutes} minutes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    clock.jump(chrono::Duration::hours(1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.finish().await;
    let sent = hooks.seen_at("/generic");
    assert_eq!(sent.len(), 1);
    let body = sent[0].json();
    assert_eq!(body["provisional"], true);
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("Figures may still be updating."),
        "{}",
        body["text"]
    );
    assert_eq!(body["unusual"][0]["direction"], "low");
    // Four reads of each report: the first and three rechecks.
    assert_eq!(api.asked(&day), 4 * 4);
}

/// Issue 20: once a day has looked incomplete, a read that no longer looks low isn't trusted
/// until the next agrees with it: the day half in (35 of a usual 40) waits for the whole.
#[tokio::test]
async fn a_day_that_looked_incomplete_is_read_until_two_reads_agree() {
    let day = "2026-11-24".to_owned();
    let mut days = eight_usual_weeks_before(&day);
    let arriving = Day {
        countries: vec![("India", 0)],
        arriving: vec![0, 35, 41],
        ..Day::default()
    };
    days.push((day.clone(), arriving));
    let api = Days::start(&days).await;
    let hooks = Scripted::webhooks().await;
    let work = Workspace::new(&config(
        &api.base,
        &[with_insights(team(
            "apac",
            "acme",
            &[("generic", &hooks.url("/generic"))],
        ))],
    ));
    let (clock, daemon) = InProcess::start(&work, "2026-11-25T03:29:58Z".parse().unwrap());
    let minutes = minutes_until(&clock, || !hooks.seen_at("/generic").is_empty()).await;
    // Nothing, 35, 41, 41: three waits of 15 minutes.
    assert!(minutes >= 45, "sent after {minutes} minutes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    clock.jump(chrono::Duration::hours(1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.finish().await;
    let sent = hooks.seen_at("/generic");
    assert_eq!(sent.len(), 1);
    let body = sent[0].json();
    assert_eq!(body["totals"]["visitors"], 41, "{body}");
    assert_eq!(body["provisional"], false, "{body}");
    assert_eq!(api.asked(&day), 4 * 4);
}

/// Issue 20: `recheck = "0"` turns the wait off: a day that looks incomplete goes out at once,
/// read once, marked provisional.
#[tokio::test]
async fn recheck_0_sends_an_incomplete_day_at_once_marked_provisional() {
    let day = "2026-11-24".to_owned();
    let mut days = eight_usual_weeks_before(&day);
    days.push((day.clone(), Day::default()));
    let api = Days::start(&days).await;
    let hooks = Scripted::webhooks().await;
    let team = with_insights(team("apac", "acme", &[("generic", &hooks.url("/generic"))]))
        .replace("schedule = ", "recheck = \"0\"\nschedule = ");
    let work = Workspace::new(&config(&api.base, &[team]));
    let (clock, daemon) = InProcess::start(&work, "2026-11-25T03:29:58Z".parse().unwrap());
    wait_until("the digest", Duration::from_secs(20), || {
        !hooks.seen_at("/generic").is_empty()
    })
    .await;
    clock.jump(chrono::Duration::hours(1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.finish().await;
    let sent = hooks.seen_at("/generic");
    assert_eq!(sent.len(), 1);
    let body = sent[0].json();
    assert_eq!(body["provisional"], true, "{body}");
    assert_eq!(body["unusual"][0]["direction"], "none_recorded", "{body}");
    assert_eq!(api.asked(&day), 4);
}
