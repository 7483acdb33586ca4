//! Every destination kind, posted for real to a loopback receiver: what arrives (shape, limits,
//! escaping, mention safety), what each kind's answers mean, the Standard Webhooks signature
//! checked by an independent HMAC, and `test` / `preview` against the simulator.

use std::time::Duration;

use acquire_digest::config::{Secret, Webhook, WebhookKind, WebhookUrl};
use acquire_digest::deliver::{Deliverer, Posted};
use acquire_digest::simulator::{self, SimulatorOptions};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::once::{acquire_base, acquire_serving};
use crate::support::{Reply, Scripted, Seen, Workspace, run_in, stderr, stdout};

const SECRET_BYTES: [u8; 32] = *b"an example signing key, 32 bytes";

fn secret() -> String {
    format!("whsec_{}", STANDARD.encode(SECRET_BYTES))
}

/// A receiver answering each kind as its service does when it takes a message.
async fn receiver() -> Scripted {
    let hooks = Scripted::webhooks().await;
    hooks.script(
        "/discord",
        vec![Reply::new(200, r#"{"id": "1", "type": 0}"#)],
    );
    hooks.script("/teams", vec![Reply::new(202, "")]);
    hooks.script(
        "/google_chat",
        vec![Reply::new(200, r#"{"name": "spaces/A/messages/B"}"#)],
    );
    hooks.script("/generic", vec![Reply::new(204, "")]);
    hooks
}

/// A team with one webhook of every kind at `hooks`, the generic one signed.
fn every_kind(acquire: &str, hooks: &Scripted) -> String {
    let mut text = format!(
        "[acquire]\nbase_url = \"{acquire}\"\nretry_budget_secs = 2\n\n[delivery]\nretry_budget_secs = 2\n\n[state]\npath = \"ledger.db\"\n\n[[teams]]\nname = \"apac\"\naccount_id = \"acme\"\napi_key = \"key-1234\"\ntimezone = \"Asia/Kolkata\"\nschedule = \"0 9 * * *\"\ntop = 10\n"
    );
    for kind in WebhookKind::ALL {
        let kind = kind.as_str();
        text.push_str(&format!(
            "\n[[teams.webhooks]]\nkind = \"{kind}\"\nurl = \"{}\"\n",
            hooks.url(&format!("/{kind}"))
        ));
        if kind == "generic" {
            text.push_str(&format!("secret = \"{}\"\n", secret()));
        }
    }
    text
}

async fn run(work: &Workspace, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let dir = work.dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_in(&dir, &args, &[])
    })
    .await
    .unwrap()
}

/// Every string in a JSON value.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(fields) => fields.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// The signature checked with hmac + sha2, not with the crate that made it.
fn assert_signed(seen: &Seen) {
    use hmac::{Hmac, Mac};
    let header = |name: &str| seen.headers[name].to_str().unwrap().to_owned();
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&SECRET_BYTES).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&seen.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(header("webhook-signature"), expected);
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp {age} s old");
}

#[tokio::test]
async fn every_kind_gets_an_inert_digest_within_its_limits() {
    let hostile = [
        "<!channel> @everyone @here",
        "@channel @all <users/all>",
        "[Click me](https://evil.example/login)",
        "Ind\u{202E}aid\u{2028}<@U024BE7LH> <#123>",
        "www.evil.example **bold** `code`",
    ];
    let country = |name: &str, visitors: u64| json!({"name": name, "cca3": "<@&1>", "visitorCount": visitors, "chatCount": 1, "caseCount": 0, "emailCount": 0, "cobrowseCount": 0, "videocall": 0, "audiocall": 0, "voipCallCount": 0});
    let acquire = acquire_serving(
        json!(hostile.iter().zip([9, 8, 7, 6, 5]).map(|(h, v)| country(h, v)).collect::<Vec<_>>()),
        json!(hostile.iter().map(|h| json!({"url": format!("https://shop.example/?q={h}"), "chats": 2, "percentage": "10.00"})).collect::<Vec<_>>()),
        json!([{"source": "<https://evil.example|verify> @someone", "chats": 1, "percentage": "100"}]),
        json!([]),
    )
    .await;
    let hooks = receiver().await;
    let work = Workspace::new(&every_kind(&acquire_base(&acquire), &hooks));
    let output = run(&work, &["once", "--date", "2026-07-15"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(hooks.seen().len(), 6, "{}", stderr(&output));

    for kind in WebhookKind::ALL {
        let seen = &hooks.seen_at(&format!("/{}", kind.as_str()))[0];
        assert_eq!(seen.headers["content-type"], "application/json");
        let body = seen.json();
        let text = strings(&body).join("\n");
        if kind != WebhookKind::Generic {
            for bad in ['\u{202E}', '\u{2028}'] {
                assert!(!text.contains(bad), "{}: {bad:?} in {text}", kind.as_str());
            }
        }
        match kind {
            WebhookKind::Discord => {
                assert_eq!(seen.query, "wait=true");
                assert_eq!(body["allowed_mentions"], json!({"parse": []}));
                assert!(body["content"].as_str().unwrap().chars().count() <= 2000);
                // Only escaped angle brackets (`\<@…>` shows as text) are left.
                let unescaped = text.replace("\\<", "");
                for bad in ["@everyone", "@here", "<@", "<#", "](", "://", "www.evil"] {
                    assert!(!unescaped.contains(bad), "discord: {bad} in {text}");
                }
                assert!(text.contains("\\[Click me\\]"), "{text}");
            }
            WebhookKind::Teams => {
                let card = &body["attachments"][0];
                assert_eq!(
                    card["contentType"],
                    "application/vnd.microsoft.card.adaptive"
                );
                assert!(seen.body.len() < 20_000);
                assert!(!text.contains("://evil") && !text.contains("]("), "{text}");
                let runs = body.to_string();
                assert!(!runs.contains("entities"), "{runs}");
            }
            WebhookKind::GoogleChat => {
                assert!(seen.body.len() < 32_000);
                assert!(!text.contains("<users/all>"), "{text}");
                assert!(text.contains("&lt;users/all&gt;"), "{text}");
                assert_eq!(body["text"], "apac · Wed 15 Jul 2026: 35 visitors, 5 chats");
            }
            WebhookKind::Mattermost => {
                let text = body["text"].as_str().unwrap();
                assert!(text.encode_utf16().count() <= 16_383);
                for mention in ["@channel", "@all", "@here", "@everyone", "@someone"] {
                    assert!(!text.contains(mention), "{mention} in {text}");
                    let defused = mention.replacen('@', "@\u{200D}", 1);
                    assert!(text.contains(&defused), "{defused} not in {text}");
                }
                assert!(
                    !text.contains("<!channel>") && !text.contains("]("),
                    "{text}"
                );
            }
            WebhookKind::Slack => {
                assert!(!text.contains("<!") && !text.contains("<@"), "{text}");
                assert_eq!(body["unfurl_links"], false);
            }
            WebhookKind::Generic => {
                // The contract: the API's strings, unaltered; the signature over the bytes sent.
                assert_eq!(body["countries"][0]["name"], hostile[0]);
                assert_signed(seen);
            }
        }
    }

    // The id is the digest's, so a receiver can drop a repeat: the same on a forced resend,
    // with a fresh timestamp and signature.
    let again = run(&work, &["once", "--date", "2026-07-15", "--force"]).await;
    assert!(again.status.success(), "{}", stderr(&again));
    let generic = hooks.seen_at("/generic");
    assert_eq!(generic.len(), 2);
    assert_eq!(
        generic[0].headers["webhook-id"],
        generic[1].headers["webhook-id"]
    );
    assert_signed(&generic[1]);
    assert!(
        hooks.seen_at("/slack")[0]
            .headers
            .get("webhook-id")
            .is_none()
    );
}

fn hook(kind: WebhookKind, url: &str) -> Webhook {
    Webhook {
        name: kind.as_str().into(),
        kind,
        url: WebhookUrl::parse(url).unwrap(),
        template: None,
        secret: None,
    }
}

/// What each kind's receiver answers, and what it comes to: delivered, tried again (after
/// the time it asked for), or refused with the receiver's own message.
#[tokio::test]
async fn each_kind_reads_its_receivers_answers() {
    let hooks = Scripted::webhooks().await;
    let deliverer = Deliverer::new(Duration::from_secs(5));
    let body = json!({"text": "x"});
    let cases: Vec<(WebhookKind, Reply, Posted)> = vec![
        (WebhookKind::Slack, Reply::new(200, "ok"), Posted::Delivered),
        (
            WebhookKind::Slack,
            Reply::new(400, "invalid_blocks"),
            Posted::Refused { status: 400, body: "invalid_blocks".into() },
        ),
        (WebhookKind::Discord, Reply::new(200, r#"{"id": "1"}"#), Posted::Delivered),
        (
            WebhookKind::Discord,
            Reply::new(429, r#"{"message": "You are being rate limited.", "retry_after": 1.5, "global": false}"#),
            Posted::NotDelivered {
                error: "HTTP 429: You are being rate limited.".into(),
                after: Some(Duration::from_millis(1500)),
            },
        ),
        (
            WebhookKind::Discord,
            Reply::new(404, r#"{"message": "Unknown Webhook", "code": 10015}"#),
            Posted::Refused { status: 404, body: "Unknown Webhook (10015)".into() },
        ),
        (WebhookKind::Teams, Reply::new(202, ""), Posted::Delivered),
        (
            WebhookKind::Teams,
            Reply::new(400, r#"{"error": {"code": "TriggerInputSchemaMismatch", "message": "The input body for trigger 'manual' of type 'Request' did not match its schema definition."}}"#),
            Posted::Refused {
                status: 400,
                body: "The input body for trigger 'manual' of type 'Request' did not match its schema definition. (TriggerInputSchemaMismatch)".into(),
            },
        ),
        (WebhookKind::GoogleChat, Reply::new(200, r#"{"name": "spaces/A/messages/B"}"#), Posted::Delivered),
        (
            WebhookKind::GoogleChat,
            Reply::new(400, r#"{"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}"#),
            Posted::Refused { status: 400, body: "Invalid JSON payload received. (400)".into() },
        ),
        (
            WebhookKind::GoogleChat,
            Reply::new(503, r#"{"error": {"code": 503, "message": "The service is currently unavailable."}}"#),
            // It reached a server, which may have passed it on: retried, but counted.
            Posted::ServerError {
                error: "HTTP 503: The service is currently unavailable. (503)".into(),
                after: None,
            },
        ),
        (WebhookKind::Mattermost, Reply::new(200, "ok"), Posted::Delivered),
        (
            WebhookKind::Mattermost,
            Reply::new(400, r#"{"id": "web.incoming_webhook.text.app_error", "message": "No text specified", "status_code": 400}"#),
            Posted::Refused { status: 400, body: "No text specified (400)".into() },
        ),
        (WebhookKind::Generic, Reply::new(204, ""), Posted::Delivered),
        (
            WebhookKind::Generic,
            Reply::new(410, "gone"),
            Posted::Refused { status: 410, body: "gone".into() },
        ),
    ];
    for (i, (kind, reply, expected)) in cases.into_iter().enumerate() {
        let path = format!("/{i}/{}", kind.as_str());
        hooks.script(&path, vec![reply]);
        let posted = deliverer
            .post(&hook(kind, &hooks.url(&path)), &body, "id")
            .await;
        assert_eq!(posted, expected, "{path}");
    }
}

#[tokio::test]
async fn a_signed_post_verifies_with_an_independent_hmac() {
    let hooks = Scripted::webhooks().await;
    let mut signed = hook(WebhookKind::Generic, &hooks.url("/signed"));
    signed.secret = Some(Secret::new(secret()));
    let body = json!({"team": "apac", "text": "é ✓"});
    let posted = Deliverer::new(Duration::from_secs(5))
        .post(&signed, &body, "msg_apac_1")
        .await;
    assert_eq!(posted, Posted::Delivered);
    let seen = &hooks.seen()[0];
    assert_eq!(seen.headers["webhook-id"], "msg_apac_1");
    assert_signed(seen);
    // The receiver's crate agrees too.
    let verifier = standardwebhooks::Webhook::new(&secret()).unwrap();
    let mut headers = axum::http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, seen.headers[name].clone());
    }
    verifier.verify(&seen.body, &headers).unwrap();
    let mut tampered = seen.body.to_vec();
    tampered[2] ^= 1;
    assert!(verifier.verify(&tampered, &headers).is_err());
}

/// A config for `test` and `preview`: one team on the simulator with a Discord hook and a
/// Mattermost hook using its own template.
async fn trial_workspace(hooks: &Scripted, sim: &simulator::RunningSimulator) -> Workspace {
    let text = format!(
        "[acquire]\nbase_url = \"{}\"\n\n[state]\npath = \"ledger.db\"\n\n[[teams]]\nname = \"apac\"\naccount_id = \"acme\"\napi_key = \"key-1234\"\ntimezone = \"Asia/Kolkata\"\nschedule = \"0 9 * * *\"\n\n[[teams.webhooks]]\nkind = \"discord\"\nurl = \"{}\"\n\n[[teams.webhooks]]\nkind = \"mattermost\"\nurl = \"{}\"\ntemplate = \"mm.hbs\"\n",
        sim.base_url(),
        hooks.url("/discord"),
        hooks.url("/mattermost"),
    );
    let work = Workspace::new(&text);
    std::fs::write(
        work.path("mm.hbs"),
        "{\"text\": \"Our own: {{team}} had {{number totals.visitors}} visitors{{#each countries}}, {{name}}{{/each}}\"}",
    )
    .unwrap();
    work
}

#[tokio::test]
async fn preview_shows_each_webhook_with_its_own_template_and_posts_nothing() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = receiver().await;
    let work = trial_workspace(&hooks, &sim).await;
    let output = run(
        &work,
        &["preview", "--team", "apac", "--date", "2021-03-18"],
    )
    .await;
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    let discord = crate::support::shown(&hooks.url("/discord"));
    assert!(
        out.contains(&format!("apac discord ({discord}, discord)")),
        "{out}"
    );
    assert!(
        out.contains("1. India (IND): 100 visitors, 76.3% · 158 chats"),
        "{out}"
    );
    assert!(
        out.contains("Our own: apac had 131 visitors, India, United States"),
        "{out}"
    );
    assert!(
        !out.contains(&hooks.url("/discord")),
        "a webhook URL leaked: {out}"
    );
    assert!(hooks.seen().is_empty());
    assert!(!work.path("ledger.db").exists());

    let one = run(
        &work,
        &[
            "preview",
            "--team",
            "apac",
            "--webhook",
            "mattermost",
            "--date",
            "2021-03-18",
        ],
    )
    .await;
    assert!(one.status.success());
    assert!(!stdout(&one).contains("apac discord"), "{}", stdout(&one));
    let unknown = run(&work, &["preview", "--team", "apac", "--webhook", "slack"]).await;
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("it has discord, mattermost"),
        "{}",
        stderr(&unknown)
    );
}

#[tokio::test]
async fn test_posts_one_marked_digest_now_and_records_nothing() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = receiver().await;
    let work = trial_workspace(&hooks, &sim).await;
    let args = [
        "test",
        "--team",
        "apac",
        "--webhook",
        "discord",
        "--date",
        "2021-03-18",
    ];
    let output = run(&work, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("apac discord ("),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("): delivered"),
        "{}",
        stderr(&output)
    );
    let seen = hooks.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].query, "wait=true");
    let body = seen[0].json();
    // Markdown-escaped like any value, so it reads "[TEST] apac · …" in Discord.
    let title = body["embeds"][0]["title"].as_str().unwrap();
    assert!(
        title.starts_with("\\[TEST\\]") && title.ends_with("apac · Thu 18 Mar 2021"),
        "{title}"
    );
    assert!(!work.path("ledger.db").exists());

    // A refusal is printed with the receiver's message, and the exit code says so.
    hooks.script(
        "/discord",
        vec![Reply::new(
            401,
            r#"{"message": "Invalid Webhook Token", "code": 50027}"#,
        )],
    );
    let output = run(&work, &args).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("rejected with HTTP 401: Invalid Webhook Token (50027)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(hooks.seen().len(), 2);
}

#[test]
fn check_knows_what_each_kind_needs() {
    let base = "[[teams]]\nname = \"apac\"\naccount_id = \"acme\"\napi_key = \"key-1234\"\ntimezone = \"UTC\"\nschedule = \"0 9 * * *\"\n\n[[teams.webhooks]]\n";
    for (hook, words) in [
        (
            "kind = \"teams\"\nurl = \"https://acme.webhook.office.com/webhookb2/x/IncomingWebhook/y/z\"",
            "create a Workflows webhook",
        ),
        (
            "kind = \"generic\"\nurl = \"https://x.example/\"\nsecret = \"hunter2hunter2\"",
            "whsec_",
        ),
        (
            "kind = \"generic\"\nurl = \"https://x.example/\"\nsecret = \"whsec_!!!notbase64!!!notbase64!!!notbase64\"",
            "base64",
        ),
        (
            "kind = \"slack\"\nurl = \"https://x.example/\"\nsecret_env = \"S\"",
            "only a generic webhook is signed",
        ),
        (
            "kind = \"telegram\"\nurl = \"https://x.example/\"",
            "\"google_chat\", \"mattermost\" or \"generic\"",
        ),
    ] {
        let work = Workspace::new(&format!("{base}{hook}\n"));
        let output = work.run(&["check"], &[("S", "x")]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{hook}: {err}");
        assert!(err.contains(words), "{hook}: {err}");
        assert!(
            !err.contains("hunter2") && !err.contains("notbase64"),
            "a secret leaked: {err}"
        );
    }
    let good =
        format!("{base}kind = \"generic\"\nurl = \"https://x.example/\"\nsecret_env = \"S\"\n");
    let output = Workspace::new(&good).run(&["check"], &[("S", &secret())]);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// Issue 21: a generic receiver files by `team`, so `test` leaves it alone and says
/// `"test": true` instead.
#[tokio::test]
async fn test_marks_a_generic_payload_with_a_test_key_and_keeps_the_team() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let hooks = receiver().await;
    let text = format!(
        "[acquire]\nbase_url = \"{}\"\n\n[[teams]]\nname = \"apac\"\naccount_id = \"acme\"\napi_key = \"key-1234\"\ntimezone = \"Asia/Kolkata\"\nschedule = \"0 9 * * *\"\n\n[[teams.webhooks]]\nkind = \"generic\"\nurl = \"{}\"\n",
        sim.base_url(),
        hooks.url("/generic"),
    );
    let work = Workspace::new(&text);
    let output = run(&work, &["test", "--team", "apac", "--date", "2021-03-18"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let body = hooks.seen_at("/generic")[0].json();
    assert_eq!(body["team"], "apac");
    assert_eq!(body["test"], true);
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("[TEST] apac"), "{text}");
}
