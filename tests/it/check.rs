//! `acquire-digest check`: the real binary on config files in a fresh folder.

use crate::support::{Workspace, run_in, stderr, stdout};

const GOOD: &str = r#"
[[teams]]
name = "support-apac"
account_id = "acme"
api_key_env = "ACME_KEY"
timezone = "Asia/Kolkata"
schedule = "0 9 * * *"

[[teams.webhooks]]
kind = "slack"
url_env = "APAC_SLACK"
"#;

const SECRET_URL: &str = "https://hooks.slack.com/services/T000/B000/XXXXSECRET";

#[test]
fn a_valid_config_passes_and_shows_the_next_digest() {
    let work = Workspace::new(GOOD);
    let output = work.run(
        &["check"],
        &[("ACME_KEY", "key-abc-123"), ("APAC_SLACK", SECRET_URL)],
    );
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert!(out.contains("OK, 1 team"), "{out}");
    assert!(out.contains("support-apac"), "{out}");
    assert!(out.contains("Asia/Kolkata"), "{out}");
    assert!(out.contains("https://hooks.slack.com"), "{out}");
    assert!(
        !out.contains("XXXXSECRET") && !out.contains("key-abc"),
        "{out}"
    );
}

/// Teams sharing a schedule are told their next digest in their own zone: the report works
/// each out once per schedule and zone, not once per schedule.
#[test]
fn teams_on_one_schedule_are_told_their_next_digest_in_their_own_zone() {
    let team = |name: &str, zone: &str| {
        GOOD.replace("support-apac", name)
            .replace("Asia/Kolkata", zone)
    };
    let work = Workspace::new(
        &[
            team("kolkata", "Asia/Kolkata"),
            team("new-york", "America/New_York"),
            team("kolkata-too", "Asia/Kolkata"),
        ]
        .concat(),
    );
    let output = work.run(
        &["check"],
        &[("ACME_KEY", "key-abc-123"), ("APAC_SLACK", SECRET_URL)],
    );
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    let next = |name: &str| {
        let line = (out.lines())
            .find(|line| line.trim_start().starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no line for {name} in {out}"));
        line.split("next digest ").nth(1).unwrap().to_owned()
    };
    assert!(next("kolkata").contains("09:00:00 Asia/Kolkata"), "{out}");
    assert!(
        next("new-york").contains("09:00:00 America/New_York"),
        "{out}"
    );
    assert_eq!(next("kolkata"), next("kolkata-too"));
}

#[test]
fn every_problem_is_reported_at_once_with_team_and_key() {
    let bad = GOOD
        .replace("Asia/Kolkata", "Asia/Kolkatta")
        .replace("0 9 * * *", "0 9 * * * * *")
        .replace("\"acme\"", "\"ac me\"")
        .replace("schedule =", "colour = \"blue\"\nschedule =");
    let work = Workspace::new(&bad);
    let output = work.run(&["check"], &[("APAC_SLACK", "ftp://hooks.example/x")]);
    assert!(!output.status.success());
    let err = stderr(&output);
    for expected in [
        "team \"support-apac\".timezone",
        "team \"support-apac\".schedule",
        "team \"support-apac\".account_id",
        "team \"support-apac\".colour: unknown key",
        "team \"support-apac\".api_key_env: environment variable ACME_KEY is not set",
        "team \"support-apac\".webhooks[0].url_env: must be an http:// or https:// URL",
        "6 problems",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        !err.contains("hooks.example/x"),
        "a webhook URL leaked:\n{err}"
    );
}

#[test]
fn syntax_errors_point_at_the_line() {
    let work = Workspace::new("[[teams]]\nname = \"x\"\nschedule = 0 9\n");
    let output = work.run(&["check"], &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("config.toml:3:"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_config_path_comes_from_the_flag_or_the_environment() {
    let work = Workspace::new(GOOD);
    let env = [("ACME_KEY", "key-12345"), ("APAC_SLACK", SECRET_URL)];
    std::fs::rename(work.config(), work.path("elsewhere.toml")).unwrap();
    let missing = work.run(&["check"], &env);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("config.toml"),
        "{}",
        stderr(&missing)
    );

    let flag = work.run(&["check", "--config", "elsewhere.toml"], &env);
    assert!(flag.status.success(), "{}", stderr(&flag));
    let path = work.path("elsewhere.toml");
    let mut with_env = env.to_vec();
    with_env.push(("ACQUIRE_DIGEST_CONFIG", path.to_str().unwrap()));
    assert!(work.run(&["check"], &with_env).status.success());
}

#[test]
fn the_shipped_config_passes() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let output = run_in(
        std::path::Path::new(repo),
        &["check", "--config", "config.toml"],
        &[],
    );
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
}

#[test]
fn two_unnamed_webhooks_of_one_kind_fail_where_the_names_go() {
    let second = "\n[[teams.webhooks]]\nkind = \"slack\"\nurl_env = \"APAC_SLACK\"\n";
    let work = Workspace::new(&format!("{GOOD}{second}"));
    let output = work.run(
        &["check", "--config", "config.toml"],
        &[("ACME_KEY", "key-12345"), ("APAC_SLACK", SECRET_URL)],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{}{err}", stdout(&output));
    for expected in [
        "team \"support-apac\".webhooks[0].name: missing: this team has 2 slack webhooks",
        "team \"support-apac\".webhooks[1].name: missing: this team has 2 slack webhooks",
        "keys the delivery ledger, so it must not depend on their order",
        "add name = \"slack-2\"",
        "2 problems",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("XXXXSECRET"), "a webhook URL leaked:\n{err}");

    let named = format!("{GOOD}name = \"alerts\"\n{second}name = \"digest\"\n");
    let work = Workspace::new(&named);
    let output = work.run(
        &["check", "--config", "config.toml"],
        &[("ACME_KEY", "key-12345"), ("APAC_SLACK", SECRET_URL)],
    );
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    // Both hooks share the URL here, so they show the same fingerprint: it is the URL's.
    let hook = crate::support::shown(SECRET_URL);
    assert!(hook.starts_with("https://hooks.slack.com:443 #"), "{hook}");
    assert!(out.contains(&format!("alerts ({hook})")), "{out}");
    assert!(out.contains(&format!("digest ({hook})")), "{out}");
}

#[test]
fn a_catch_up_of_a_million_years_fails_check() {
    let work = Workspace::new(&format!("catch_up = \"1000000y\"\n{GOOD}"));
    let output = work.run(
        &["check", "--config", "config.toml"],
        &[("ACME_KEY", "key-12345"), ("APAC_SLACK", SECRET_URL)],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{}{err}", stdout(&output));
    assert!(
        err.contains("catch_up: \"1000000y\" is out of range for catch_up: use at most 7 days"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn check_refuses_an_api_key_too_short_to_keep_out_of_logs() {
    let work = Workspace::new(GOOD);
    let output = work.run(
        &["check"],
        &[("ACME_KEY", "abc"), ("APAC_SLACK", SECRET_URL)],
    );
    assert!(!output.status.success());
    let said = stderr(&output);
    assert!(
        said.contains("team \"support-apac\".api_key: is 3 characters long"),
        "{said}"
    );
    assert!(!said.contains("abc"), "the key is not echoed: {said}");
}

/// Issue 20: too short a history for the unusual line is not an error, but `check` says which
/// teams lose the line and how to get it back.
#[test]
fn a_history_too_short_for_the_unusual_line_is_a_warning_naming_the_teams() {
    let env = [("ACME_KEY", "key-abc-123"), ("APAC_SLACK", SECRET_URL)];
    let work = Workspace::new(&format!("history_days = 30\n{GOOD}"));
    let output = work.run(&["check"], &env);
    assert!(output.status.success(), "{}", stderr(&output));
    let said = stderr(&output);
    assert!(
        said.contains("warning:")
            && said.contains("history_days: 30 keeps too little for the \"unusual\" line")
            && said.contains("support-apac won't get one")
            && said.contains("history_days = 60"),
        "{said}"
    );

    let enough = Workspace::new(&format!("history_days = 57\n{GOOD}"));
    let output = enough.run(&["check"], &env);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
}

/// A secret given the wrong type is one problem, at the key given, not also "missing" at its
/// `_env` twin. The value itself (it may be a real key) is never shown.
#[test]
fn a_secret_of_the_wrong_type_is_one_problem() {
    let text = GOOD
        .replace("api_key_env = \"ACME_KEY\"", "api_key = 12345678")
        .replace("url_env = \"APAC_SLACK\"", "url = 5")
        .replace("kind = \"slack\"", "kind = 5");
    let work = Workspace::new(&text);
    let output = work.run(&["check"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let said = stderr(&output);
    assert!(said.contains("config.toml: 3 problems"), "{said}");
    assert!(said.contains("kind: invalid type: integer"), "{said}");
    assert!(said.contains("api_key: invalid type: integer"), "{said}");
    assert!(said.contains("url: invalid type: integer"), "{said}");
    assert!(!said.contains("missing"), "{said}");
    assert!(!said.contains("12345678"), "{said}");
}

/// Issue 21: a value of the wrong type is named by its team and key, at its line and column,
/// and the file's other problems are still listed; misspelt keys, sections, zones and kinds
/// get a "did you mean".
#[test]
fn a_type_error_names_team_and_key_and_the_rest_is_still_checked_with_suggestions() {
    let text = GOOD
        .replace(
            "schedule = \"0 9 * * *\"",
            "schedule = \"0 9 * * *\"\ntop = \"three\"\nskip_emtpy = true",
        )
        .replace("Asia/Kolkata", "Asia/Tokio")
        .replace("kind = \"slack\"", "kind = \"slak\"")
        .replace("account_id = \"acme\"", "account_id = 42")
        + "\n[sever]\nlisten = \"127.0.0.1:9187\"\n";
    let work = Workspace::new(&text);
    let output = work.run(
        &["check"],
        &[("ACME_KEY", "key-abc-123"), ("APAC_SLACK", SECRET_URL)],
    );
    assert_eq!(output.status.code(), Some(1));
    let said = stderr(&output);
    let line = |needle: &str| {
        said.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{said}"))
            .trim()
            .to_owned()
    };
    // A required key of the wrong type is one problem, not also "missing".
    assert!(said.contains("config.toml: 6 problems"), "{said}");
    assert!(
        line("account_id").contains("invalid type: integer, expected a string"),
        "{said}"
    );
    assert_eq!(
        line("top"),
        "config.toml:8:1: team \"support-apac\".top: invalid type: string, expected a whole number, without quotes"
    );
    assert!(line("skip_emtpy").starts_with("config.toml:9:1: team \"support-apac\".skip_emtpy: unknown key (did you mean \"skip_empty\"?)"), "{said}");
    assert!(line("Tokio").starts_with("config.toml:6:1: team \"support-apac\".timezone: unknown timezone \"Asia/Tokio\" (did you mean \"Asia/Tokyo\"?)"), "{said}");
    assert!(line("slak").contains("(did you mean \"slack\"?)"), "{said}");
    assert!(
        line("sever").contains("sever: unknown key (did you mean \"server\"?)"),
        "{said}"
    );
    // In the file's order.
    let order: Vec<usize> = ["Tokio", "top", "skip_emtpy", "slak", "sever"]
        .iter()
        .map(|n| said.find(&line(n)).unwrap())
        .collect();
    assert!(order.is_sorted(), "{said}");
}
