//! The digest as teams read it, in every kind: snapshots of the reference day, and properties
//! that hold for any visitor-chosen text.

use acquire_digest::config::{Webhook, WebhookKind, WebhookUrl};
use acquire_digest::fetch::{ChatSource, CountryRow, DayReport, HourRow};
use acquire_digest::insight::{self, Direction, Metric, Unusual};
use acquire_digest::rank::{Audience, Digest, compare, rank};
use acquire_digest::render::Renderer;
use acquire_digest::schedule::{Comparison, Window, Zone};
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

fn hook(kind: WebhookKind) -> Webhook {
    Webhook {
        name: kind.as_str().into(),
        kind,
        url: WebhookUrl::parse("https://hooks.example.com/x").unwrap(),
        template: None,
        secret: None,
    }
}

fn body(kind: WebhookKind, digest: &Digest) -> Value {
    Renderer::builtin().body(&hook(kind), digest).unwrap()
}

#[test]
fn slack_digest_of_the_reference_day() {
    let message = body(
        WebhookKind::Slack,
        &digest(&busy_reference_day(), "support-apac", 5),
    );
    insta::assert_json_snapshot!("slack_reference_day", message);
    let read = Renderer::builtin().preview(&hook(WebhookKind::Slack), &message);
    insta::assert_snapshot!("slack_reference_day_as_read", read);
}

#[test]
fn text_digest_of_the_reference_day() {
    let body = body(
        WebhookKind::Generic,
        &digest(&busy_reference_day(), "support-apac", 5),
    );
    insta::assert_snapshot!("text_reference_day", body["text"].as_str().unwrap());
}

#[test]
fn slack_digest_of_an_empty_day() {
    let message = body(
        WebhookKind::Slack,
        &digest(&DayReport::default(), "support-apac", 5),
    );
    insta::assert_json_snapshot!("slack_empty_day", message);
}

/// The reference day beside two earlier days: the day before, where the United States led,
/// India was second, Burkina Faso wasn't there and one page had fewer chats; and a week
/// earlier, with every total smaller and the same order.
fn compared_reference_day() -> Digest {
    let today = busy_reference_day();
    let mut digest = digest(&today, "support-apac", 5);
    let span = Window::for_date(
        Zone::parse("Asia/Kolkata").unwrap(),
        "2021-03-18".parse().unwrap(),
    )
    .span;

    let mut day_before = today.clone();
    day_before.countries.retain(|c| c.cca3 != "BFA");
    let india = day_before
        .countries
        .iter()
        .position(|c| c.cca3 == "IND")
        .unwrap();
    day_before.countries[india].visitors = 20;
    day_before.countries[india].chats = 100;
    day_before.pages[0].chats = 5;
    compare(
        &mut digest,
        Comparison::Previous,
        Comparison::Previous.of(span).unwrap(),
        &day_before,
    );

    let mut week_before = today;
    for country in &mut week_before.countries {
        country.visitors /= 2;
        country.chats /= 2;
    }
    compare(
        &mut digest,
        Comparison::LastWeek,
        Comparison::LastWeek.of(span).unwrap(),
        &week_before,
    );
    digest
}

#[test]
fn slack_and_text_digests_with_comparisons() {
    let digest = compared_reference_day();
    let previous = digest.compare.previous.as_ref().unwrap();
    assert_eq!(
        (previous.date.as_str(), previous.totals.visitors),
        ("2021-03-17", 50)
    );
    let message = body(WebhookKind::Slack, &digest);
    insta::assert_json_snapshot!("slack_reference_day_compared", message);
    let read = Renderer::builtin().preview(&hook(WebhookKind::Slack), &message);
    insta::assert_snapshot!("slack_reference_day_compared_as_read", read);
    let text = body(WebhookKind::Generic, &digest);
    insta::assert_snapshot!(
        "text_reference_day_compared",
        text["text"].as_str().unwrap()
    );
    // The generic JSON carries the comparison beside the digest, as the README's contract says.
    assert_eq!(text["compare"]["last_week"]["date"], "2021-03-11");
    assert_eq!(text["countries"][0]["previous_rank"], 2);
    assert_eq!(text["countries"][4]["previous_rank"], Value::Null);
}

/// Every other kind shows the same changes and marks, as its readers see them.
#[test]
fn every_kind_shows_the_comparisons() {
    let digest = compared_reference_day();
    for kind in [
        WebhookKind::Discord,
        WebhookKind::Teams,
        WebhookKind::GoogleChat,
        WebhookKind::Mattermost,
    ] {
        let read = Renderer::builtin().preview(&hook(kind), &body(kind, &digest));
        for shown in [
            "vs Wed 17 Mar 2021: visitors ▲ 162% · chats ▲ 42%",
            "vs Thu 11 Mar 2021: visitors ▲ 108% · chats ▲ 104%",
            "158 chats · ▲1",
            "35 chats · ▼1",
            "1 chat · new",
            "(5.1%) · ▼1",
        ] {
            assert!(read.contains(shown), "{}: {shown} in {read}", kind.as_str());
        }
        assert!(!read.contains("3 chats · "), "{}: {read}", kind.as_str());
    }
}

/// Each new kind's body for the reference day, and what its readers see.
#[test]
fn every_kind_of_the_reference_day() {
    for kind in [
        WebhookKind::Discord,
        WebhookKind::Teams,
        WebhookKind::GoogleChat,
        WebhookKind::Mattermost,
    ] {
        let message = body(kind, &digest(&busy_reference_day(), "support-apac", 5));
        let read = Renderer::builtin().preview(&hook(kind), &message);
        insta::assert_json_snapshot!(format!("{}_reference_day", kind.as_str()), message);
        insta::assert_snapshot!(format!("{}_reference_day_as_read", kind.as_str()), read);
        let empty = body(kind, &digest(&DayReport::default(), "support-apac", 5));
        let read = Renderer::builtin().preview(&hook(kind), &empty);
        assert!(read.contains("No visitors on Thu 18 Mar 2021"), "{read}");
    }
}

/// The compared reference day with what moved against the day before, an unusual total of
/// each kind, and figures still updating.
fn insightful_reference_day() -> Digest {
    let mut digest = compared_reference_day();
    let today = busy_reference_day();
    let mut day_before = today.clone();
    for country in &mut day_before.countries {
        match country.cca3.as_str() {
            "IND" => (country.visitors, country.chats) = (20, 100),
            "USA" => country.visitors += 9,
            _ => {}
        }
    }
    day_before.countries.retain(|c| c.cca3 != "BFA");
    day_before.referrers[0].chats += 40;
    day_before.pages[0].chats -= 50;
    digest.moved = insight::moved(&today, &day_before);
    let flag = |metric, direction, value, usual, score| Unusual {
        metric,
        direction,
        value,
        usual,
        weekday: Some("Thursday".into()),
        score,
    };
    digest.unusual = vec![
        flag(Metric::Visitors, Direction::High, 131, 40, 6.2),
        flag(Metric::Chats, Direction::Low, 3, 120, -4.8),
    ];
    digest.provisional = true;
    digest
}

/// Every kind says what moved and what is unusual in one line each, as its readers see it.
#[test]
fn every_kind_shows_what_moved_and_what_is_unusual() {
    let insightful = insightful_reference_day();
    let visitors = insightful.moved.visitors.as_ref().unwrap();
    assert_eq!((visitors.change, visitors.before), (72, 59));
    for kind in [
        WebhookKind::Slack,
        WebhookKind::Discord,
        WebhookKind::Teams,
        WebhookKind::GoogleChat,
        WebhookKind::Mattermost,
        WebhookKind::Generic,
    ] {
        let message = body(kind, &insightful);
        let read = match kind {
            WebhookKind::Generic => message["text"].as_str().unwrap().to_owned(),
            _ => Renderer::builtin().preview(&hook(kind), &message),
        };
        insta::assert_snapshot!(format!("{}_insights_as_read", kind.as_str()), read);
        for shown in [
            "What moved: Visitors ▲ 122% (+72): India +80",
            "Unusual: Visitors 131: unusually high for a Thursday (usually about 40) · Chats 3: unusually low for a Thursday (usually about 120)",
            "Figures may still be updating.",
        ] {
            assert!(read.contains(shown), "{}: {shown} in {read}", kind.as_str());
        }
        let lines = read.lines().filter(|l| l.contains("What moved")).count();
        assert_eq!(lines, 1, "{}: {read}", kind.as_str());
    }
    let generic = body(WebhookKind::Generic, &insightful);
    assert_eq!(generic["moved"]["visitors"]["drivers"][0]["name"], "India");
    assert_eq!(generic["moved"]["visitors"]["against"], "previous");
    assert_eq!(generic["unusual"][1]["direction"], "low");
    assert_eq!(generic["unusual"][0]["weekday"], "Thursday");
    assert_eq!(generic["provisional"], true);
    // An empty day still says that nothing was recorded where much usually is.
    let mut empty = digest(&DayReport::default(), "support-apac", 5);
    empty.unusual = vec![Unusual {
        metric: Metric::Visitors,
        direction: Direction::NoneRecorded,
        value: 0,
        usual: 40,
        weekday: Some("Thursday".into()),
        score: -9.1,
    }];
    for kind in [
        WebhookKind::Slack,
        WebhookKind::Teams,
        WebhookKind::Mattermost,
    ] {
        let read = Renderer::builtin().preview(&hook(kind), &body(kind, &empty));
        assert!(
            read.contains("Visitors: no visitors recorded: tracking may be broken or the data not in yet (usually about 40 for a Thursday)"),
            "{read}"
        );
    }
}

/// Every string in a body that a reader sees, wherever it is (not the card's own schema and
/// content type).
fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(fields) => fields
            .iter()
            .filter(|(key, _)| !["$schema", "contentType", "type"].contains(&key.as_str()))
            .flat_map(|(_, value)| strings(value))
            .collect(),
        _ => Vec::new(),
    }
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

/// What no visitor text may leave in a chat message of any kind: reordering marks, line
/// separators and control characters (the template's own line breaks aside).
fn assert_clean(body: &Value) -> Result<(), TestCaseError> {
    for text in strings(body) {
        let bad = text.chars().find(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
        });
        prop_assert!(bad.is_none(), "{:?} in {:?}", bad, text);
    }
    Ok(())
}

/// No link a chat client would find: no scheme (`https://`), no domain (`evil.example`), no
/// Markdown link, no `@` that could notify.
fn assert_no_links_or_mentions(body: &Value) -> Result<(), TestCaseError> {
    for text in strings(body) {
        prop_assert!(!text.contains("://"), "a URL in {:?}", text);
        prop_assert!(!text.contains("]("), "a Markdown link in {:?}", text);
        let chars: Vec<char> = text.chars().collect();
        for pair in chars.windows(2) {
            prop_assert!(
                !(pair[0] == '.' && pair[1].is_alphanumeric() && !pair[1].is_ascii_digit()),
                "a domain in {:?}",
                text
            );
            prop_assert!(
                pair[0] != '@' || pair[1] == '\u{200D}',
                "a mention in {:?}",
                text
            );
        }
    }
    Ok(())
}

/// Markdown kinds: every `<` from the data is escaped, so `<@id>`, `<!channel>` and `<url>`
/// can't form.
fn assert_angles_escaped(text: &str) -> Result<(), TestCaseError> {
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c == '<' {
            prop_assert!(i > 0 && chars[i - 1] == '\\', "a bare < in {:?}", text);
        }
    }
    Ok(())
}

fn chars(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
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

/// A digest beside an earlier day, as both comparisons: visitor text there only moves ranks.
/// And the earlier day's rows as what moved, so visitor text reaches a line of its own.
fn compared(mut digest: Digest, earlier: &DayReport) -> Digest {
    digest.moved = insight::moved(earlier, &DayReport::default());
    let span = Window::for_date(
        Zone::parse("Asia/Kolkata").unwrap(),
        "2021-03-18".parse().unwrap(),
    )
    .span;
    for which in [Comparison::Previous, Comparison::LastWeek] {
        compare(&mut digest, which, which.of(span).unwrap(), earlier);
    }
    digest
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_visitor_text_stays_inert_and_within_slack_limits(
        day in day_strategy(),
        earlier in day_strategy(),
        team in hostile_text(),
        top in 1..300usize,
    ) {
        let message = body(WebhookKind::Slack, &compared(digest(&day, &team, top), &earlier));
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
        assert_clean(&message)?;

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
    fn any_visitor_text_stays_inert_and_within_discord_limits(
        day in day_strategy(),
        earlier in day_strategy(),
        top in 1..300usize,
    ) {
        let message = body(WebhookKind::Discord, &compared(digest(&day, "team", top), &earlier));
        prop_assert!(chars(&message["content"]) <= 2000);
        prop_assert_eq!(&message["allowed_mentions"], &serde_json::json!({"parse": []}));
        let embeds = message["embeds"].as_array().unwrap();
        prop_assert!(!embeds.is_empty() && embeds.len() <= 10);
        let mut total = 0;
        for embed in embeds {
            prop_assert!(chars(&embed["title"]) <= 256);
            prop_assert!(chars(&embed["description"]) <= 4096);
            let fields = embed["fields"].as_array().unwrap();
            prop_assert!(fields.len() <= 25);
            for field in fields {
                prop_assert!(chars(&field["name"]) <= 256);
                prop_assert!(chars(&field["value"]) <= 1024);
                prop_assert!(chars(&field["value"]) > 0);
                total += chars(&field["name"]) + chars(&field["value"]);
            }
            total += chars(&embed["title"]) + chars(&embed["description"]);
        }
        prop_assert!(total <= 6000, "{} characters in embeds", total);
        assert_clean(&message)?;
        assert_no_links_or_mentions(&message)?;
        for text in strings(&message) {
            assert_angles_escaped(text)?;
        }
    }

    #[test]
    fn any_visitor_text_stays_inert_and_within_teams_limits(
        day in day_strategy(),
        earlier in day_strategy(),
        top in 1..300usize,
    ) {
        let message = body(WebhookKind::Teams, &compared(digest(&day, "team", top), &earlier));
        let json = serde_json::to_string(&message).unwrap();
        prop_assert!(json.len() <= 20_000, "{} bytes", json.len());
        let card = &message["attachments"][0];
        prop_assert_eq!(&card["contentType"], "application/vnd.microsoft.card.adaptive");
        prop_assert_eq!(&card["content"]["type"], "AdaptiveCard");
        prop_assert!(!json.contains("\"entities\""));
        assert_clean(&message)?;
        assert_no_links_or_mentions(&message)?;
        // Visitor text is only in TextRuns, which Teams doesn't read as Markdown.
        for element in card["content"]["body"].as_array().unwrap() {
            if element["type"] == "TextBlock" {
                let text = element["text"].as_str().unwrap();
                prop_assert!(!text.contains("evil") && !text.contains('<'), "{}", text);
            }
        }
    }

    #[test]
    fn any_visitor_text_stays_inert_and_within_google_chat_limits(
        day in day_strategy(),
        earlier in day_strategy(),
        top in 1..300usize,
    ) {
        let message = body(WebhookKind::GoogleChat, &compared(digest(&day, "team", top), &earlier));
        let json = serde_json::to_string(&message).unwrap();
        prop_assert!(json.len() < 32_000, "{} bytes", json.len());
        prop_assert!(message["cardsV2"][0]["card"]["sections"].is_array());
        assert_clean(&message)?;
        assert_no_links_or_mentions(&message)?;
        // Only the template's own tags: nothing from the data can open one (<users/all>).
        for text in strings(&message) {
            let mut rest = text.to_owned();
            for tag in ["<b>", "</b>", "<i>", "</i>", "</font>", "<font color=\"#5f6368\">", "<font color=\"#80868b\">"] {
                rest = rest.replace(tag, "");
            }
            prop_assert!(!rest.contains('<') && !rest.contains('>'), "{}", text);
        }
        // The notification is the template's: team, date and numbers.
        let text = message["text"].as_str().unwrap();
        prop_assert!(text.starts_with("team · Thu 18 Mar 2021: "), "{}", text);
    }

    #[test]
    fn any_visitor_text_stays_inert_and_within_mattermost_limits(
        day in day_strategy(),
        earlier in day_strategy(),
        top in 1..300usize,
    ) {
        let message = body(WebhookKind::Mattermost, &compared(digest(&day, "team", top), &earlier));
        let text = message["text"].as_str().unwrap();
        prop_assert!(text.encode_utf16().count() <= 16_383);
        prop_assert_eq!(message.as_object().unwrap().len(), 1);
        assert_clean(&message)?;
        assert_no_links_or_mentions(&message)?;
        assert_angles_escaped(text)?;
    }

    #[test]
    fn generic_text_renders_any_day(day in day_strategy(), earlier in day_strategy()) {
        let message = body(WebhookKind::Generic, &compared(digest(&day, "t", 5), &earlier));
        prop_assert!(message["text"].as_str().unwrap().contains("visitor digest"));
        assert_clean(&serde_json::json!({"text": message["text"]}))?;
    }
}

/// One overlong value (a 5,000-character country code on the top country) is cut, and the
/// rest of its list still shows, in every kind.
#[test]
fn one_overlong_value_hides_nothing_else() {
    let mut day = busy_reference_day();
    day.countries[0].cca3 = "Q".repeat(5000);
    day.pages[0].text = format!("https://example.com/{}", "p".repeat(5000));
    let digest = digest(&day, "support-apac", 5);
    for kind in WebhookKind::ALL {
        let message = body(kind, &digest);
        let read = Renderer::builtin().preview(&hook(kind), &message);
        for name in &digest.countries {
            assert!(
                read.contains(&name.name),
                "{}: no {} in\n{read}",
                kind.as_str(),
                name.name
            );
        }
        assert!(!read.contains("more line"), "{}: {read}", kind.as_str());
    }
}

/// The measured defects: U+202E and U+2028 from visitor text never reach a message.
#[test]
fn bidi_overrides_and_line_separators_never_reach_a_message() {
    let mut day = busy_reference_day();
    day.countries[0].name = "In\u{202E}dia\u{2028}<section>".into();
    day.referrers[0].text = "evil\u{2029}\u{2066}x".into();
    let digest = digest(&day, "support-apac", 5);
    for kind in WebhookKind::ALL {
        let mut message = body(kind, &digest);
        if kind == WebhookKind::Generic {
            // Its data keys are the API's strings by contract; its text is a message.
            message = serde_json::json!({"text": message["text"]});
        }
        let json = serde_json::to_string(&message).unwrap();
        for bad in ['\u{202E}', '\u{2028}', '\u{2029}', '\u{2066}'] {
            assert!(!json.contains(bad), "{}: {bad:?} in {json}", kind.as_str());
        }
        let read = Renderer::builtin().preview(&hook(kind), &message);
        assert!(read.contains("India"), "{}: {read}", kind.as_str());
    }
}
