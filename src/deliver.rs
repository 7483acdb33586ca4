//! Deliver: POST a rendered body to a webhook, retrying what may succeed later and nothing
//! else. Slack's answer is `200 ok`; anything else is a failure whose body (`invalid_payload`,
//! `channel_not_found`, ...) is reported, since it says what to fix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{Webhook, WebhookKind};
use crate::http::{self, Attempt, RetryPolicy};

/// Slack accepts about one message per second per incoming webhook.
const SLACK_PACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The webhook refused the message; sending it again won't help.
    #[error("rejected with HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    /// Still failing when the retry budget ran out.
    #[error("gave up after retries: {0}")]
    Unavailable(String),
}

impl DeliveryError {
    /// Whether a later try (the daemon's next round) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeliveryError::Unavailable(_))
    }
}

/// When a Slack webhook may take its next message; held for the whole POST so posts to one
/// webhook never overlap.
type PaceSlot = Arc<tokio::sync::Mutex<Option<Instant>>>;

#[derive(Clone)]
pub struct Deliverer {
    http: reqwest::Client,
    retry: RetryPolicy,
    /// One pacing slot per Slack webhook URL.
    slack_slots: Arc<Mutex<HashMap<String, PaceSlot>>>,
}

impl Deliverer {
    pub fn new(timeout: Duration, retry: RetryPolicy) -> Deliverer {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // A redirected POST comes back as a GET without the digest, which a 2xx at the end
            // would record as delivered; and the digest must not follow a redirect elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("acquire-digest/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend is compiled in");
        Deliverer {
            http,
            retry,
            slack_slots: Arc::default(),
        }
    }

    pub async fn post(&self, hook: &Webhook, body: &Value) -> Result<(), DeliveryError> {
        let slot = match hook.kind {
            WebhookKind::Slack => Some(self.slack_slot(hook)),
            WebhookKind::Generic => None,
        };
        let mut last_post = match &slot {
            Some(slot) => Some(slot.lock().await),
            None => None,
        };
        let result = self
            .retry
            .run(|| async {
                if let Some(Some(last)) = last_post.as_deref() {
                    tokio::time::sleep_until(*last + SLACK_PACE).await;
                }
                let sent = self
                    .http
                    .post(hook.url.expose().clone())
                    .json(body)
                    .send()
                    .await;
                classify(sent, hook).await
            })
            .await;
        if let Some(last) = last_post.as_deref_mut() {
            *last = Some(Instant::now());
        }
        result
    }

    fn slack_slot(&self, hook: &Webhook) -> PaceSlot {
        let mut slots = self.slack_slots.lock().expect("slot map lock");
        slots
            .entry(hook.url.expose().to_string())
            .or_default()
            .clone()
    }
}

/// What of a webhook URL a receiver might echo back: the whole URL, its path and query, and
/// each path segment that looks like a token (Slack's `T0…/B0…/XXXX…`), but not a word such
/// as `archived` that Slack's own errors use.
fn url_secrets(hook: &Webhook) -> Vec<&str> {
    let url = hook.url.expose();
    let mut secrets = vec![url.as_str(), url.path()];
    secrets.extend(url.query());
    secrets.extend(
        url.path_segments()
            .into_iter()
            .flatten()
            .filter(|s| s.len() >= 16 || (s.len() >= 8 && s.bytes().any(|b| b.is_ascii_digit()))),
    );
    // Longest first, so a whole URL is replaced before a part of it.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.retain(|s| *s != "/");
    secrets
}

async fn classify(
    sent: Result<reqwest::Response, reqwest::Error>,
    hook: &Webhook,
) -> Attempt<(), DeliveryError> {
    let response = match sent {
        Ok(response) => response,
        // `without_url`: the webhook URL is the credential.
        Err(e) => {
            return Attempt::Retry {
                error: DeliveryError::Unavailable(e.without_url().to_string()),
                after: None,
            };
        }
    };
    let status = response.status();
    let after = http::retry_after(response.headers(), SystemTime::now());
    let body = http::read_capped(response, 64 * 1024)
        .await
        // Scrubbed before the excerpt is cut, so no part of a secret survives at the cut.
        .map(|b| {
            http::excerpt(http::redact(&String::from_utf8_lossy(&b), &url_secrets(hook)).as_bytes())
        })
        .unwrap_or_else(|e| e.to_string());
    let accepted = match hook.kind {
        WebhookKind::Slack => status == StatusCode::OK && body.trim() == "ok",
        WebhookKind::Generic => status.is_success(),
    };
    if accepted {
        return Attempt::Done(());
    }
    let body = if status.is_redirection() {
        "the webhook redirects elsewhere: configure the URL it redirects to".to_owned()
    } else if body.is_empty() {
        "(empty body)".to_owned()
    } else {
        body
    };
    if http::is_transient(status) {
        Attempt::Retry {
            error: DeliveryError::Unavailable(format!("HTTP {}: {body}", status.as_u16())),
            after,
        }
    } else {
        Attempt::Fail(DeliveryError::Rejected {
            status: status.as_u16(),
            body,
        })
    }
}
