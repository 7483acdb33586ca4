//! The digest as teams read it: snapshots of the reference day, and properties that hold for
//! any visitor-chosen text.

use acquire_digest::fetch::{ChatSource, CountryRow, DayReport, HourRow};
use acquire_digest::rank::{Audience, Digest, rank};
use acquire_digest::render::{Renderer, terminal};
use acquire_digest::schedule::{Window, Zone};
use proptest::prelude::*;
use serde_json::Value;

fn reference_day() -> DayReport {
    DayReport::parse([
        include_bytes!("../../src/simulator/reference/visitors-by-location.json"),
        include_bytes!("../../src/simulator/reference/most-active-visit-times.json"),
        include_bytes!("../../src/simulator/reference/pages-with-most-chats.json"),
        include_bytes!("../../src/simulator/reference/visitor-reference.json"),
    ])
    .unwrap()
}

fn digest(report: &DayReport, team: &str, top: usize) -> Digest {
    let zone = Zone::parse("Asia/Kolkata").unwrap();
    let audience = Audience {
        team,
        account_id: "acme",
        zone,
        top,
    };
    rank(
        &audience,
        &Window::for_date(zone, "2021-03-18".parse().unwrap()),
        report,
    )
}

/// The reference day with some hourly activity, so the peak-hours section has content.
fn busy_reference_day() -> DayReport {
    let mut day = reference_day();
    for (row, activity) in day
        .hours
        .iter_mut()
        .zip([0, 0, 1, 4, 9, 12, 7, 3, 0, 2, 5, 6])
    {
        row.activity = activity;
    }
    day
}

#[test]
fn slack_digest_of_the_reference_day() {
    let message = Renderer::builtin()
        .slack_message(&digest(&busy_reference_day(), "support-apac", 5), None)
        .unwrap();
    insta::assert_json_snapshot!("slack_reference_day", message);
    insta::assert_snapshot!("slack_reference_day_as_read", terminal(&message));
}

#[test]
fn text_digest_of_the_reference_day() {
    let text = Renderer::builtin()
        .text(&digest(&busy_reference_day(), "support-apac", 5), None)
        .unwrap();
    insta::assert_snapshot!("text_reference_day", text);
}

#[test]
fn slack_digest_of_an_empty_day() {
    let message = Renderer::builtin()
        .slack_message(&digest(&DayReport::default(), "support-apac", 5), None)
        .unwrap();
    insta::assert_json_snapshot!("slack_empty_day", message);
}

/// Every text a Slack client renders as mrkdwn or plain text in a message.
fn texts(message: &Value) -> Vec<String> {
    let mut out = vec![message["text"].as_str().unwrap().to_owned()];
    for block in message["blocks"].as_array().unwrap() {
        if let Some(text) = block["text"]["text"].as_str() {
            out.push(text.to_owned());
        }
        for element in block["elements"].as_array().into_iter().flatten() {
            out.push(element["text"].as_str().unwrap().to_owned());
        }
    }
    out
}

fn hostile_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        any::<String>(),
        proptest::string::string_regex(
            "(<|>|&|&amp;|!|@|channel|here|everyone|subteam\\^|\\||\\n|https://evil.example|mailto:|\\*|_|`|[a-zé😀 ]){0,80}"
        )
        .unwrap(),
        Just("x".repeat(5000)),
    ]
}

fn day_strategy() -> impl Strategy<Value = DayReport> {
    let country = (
        hostile_text(),
        hostile_text(),
        0..1_000_000u64,
        0..1_000_000u64,
    )
        .prop_map(|(name, cca3, visitors, chats)| CountryRow {
            name,
            cca3,
            visitors,
            chats,
            cases: chats,
            emails: 1,
            cobrowse: 0,
            calls: 2,
        });
    let source =
        (hostile_text(), 0..100_000u64, 0.0..100.0f64).prop_map(|(text, chats, percentage)| {
            ChatSource {
                text,
                chats,
                percentage,
            }
        });
    let hour =
        (0..24u8, hostile_text(), 0..10_000u64).prop_map(|(hour, label, activity)| HourRow {
            hour,
            label,
            activity,
        });
    (
        proptest::collection::vec(country, 0..40),
        proptest::collection::vec(hour, 0..30),
        proptest::collection::vec(source.clone(), 0..40),
        proptest::collection::vec(source, 0..40),
    )
        .prop_map(|(countries, hours, pages, referrers)| DayReport {
            countries,
            hours,
            pages,
            referrers,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_visitor_text_stays_inert_and_within_slack_limits(
        day in day_strategy(),
        team in hostile_text(),
        top in 1..300usize,
    ) {
        let message = Renderer::builtin().slack_message(&digest(&day, &team, top), None).unwrap();
        let json = serde_json::to_string(&message).unwrap();
        prop_assert!(json.len() < 40_000, "{} bytes", json.len());
        let reparsed: Value = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&reparsed, &message);

        let blocks = message["blocks"].as_array().unwrap();
        prop_assert!(blocks.len() <= 50);
        let units = |v: &Value| v.as_str().unwrap().encode_utf16().count();
        for block in blocks {
            match block["type"].as_str().unwrap() {
                "header" => prop_assert!(units(&block["text"]["text"]) <= 150),
                "section" => prop_assert!(units(&block["text"]["text"]) <= 3000),
                "context" => prop_assert!(units(&block["elements"][0]["text"]) <= 3000),
                other => prop_assert!(other == "divider", "unexpected block {}", other),
            }
        }
        prop_assert!(units(&message["text"]) <= 3000);
        prop_assert_eq!(&message["unfurl_links"], &Value::Bool(false));
        prop_assert_eq!(&message["unfurl_media"], &Value::Bool(false));

        // No angle bracket survives, so no mention (<!channel>, <@U…>) or link (<url|label>)
        // can be formed, and every & starts an escape Slack decodes.
        for text in texts(&message) {
            prop_assert!(!text.contains('<') && !text.contains('>'), "{}", text);
            for (i, _) in text.match_indices('&') {
                let rest = &text[i..];
                prop_assert!(
                    ["&amp;", "&lt;", "&gt;"].iter().any(|e| rest.starts_with(e)),
                    "bare & in {}", text
                );
            }
        }
    }

    #[test]
    fn generic_text_renders_any_day(day in day_strategy()) {
        let text = Renderer::builtin().text(&digest(&day, "t", 5), None).unwrap();
        prop_assert!(text.contains("visitor digest"));
    }
}
