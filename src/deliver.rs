//! Deliver: POST a rendered body to a webhook, retrying what may succeed later and nothing
//! else. Slack's answer is `200 ok`; anything else is a failure whose body (`invalid_payload`,
//! `channel_not_found`, ...) is reported, since it says what to fix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::time::Instant;

use crate::config::{Webhook, WebhookKind};
use crate::http;
use crate::render::{self, Answer};

/// Slack accepts about one message per second per incoming webhook.
const SLACK_PACE: Duration = Duration::from_secs(1);

/// What one POST came to. Only what provably did not arrive is retried freely; a POST that
/// was sent but not answered may have arrived, and the ledger bounds how often it is resent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    Delivered,
    /// A permanent 4xx: sending it again won't help until the webhook is mended.
    Refused {
        status: u16,
        body: String,
    },
    /// Nothing arrived (connection refused, DNS, TLS before sending) or the receiver asked
    /// for another try before taking it (429), after `after` if it said so.
    NotDelivered {
        error: String,
        after: Option<Duration>,
    },
    /// The request reached a server that answered 5xx: worth another try, but a gateway may
    /// have forwarded it, so it counts toward the ledger's bound on copies.
    ServerError {
        error: String,
        after: Option<Duration>,
    },
    /// Sent, but no answer came (timed out, connection reset): it may have arrived.
    Unknown(String),
}

impl std::fmt::Display for Posted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Posted::Delivered => f.write_str("delivered"),
            Posted::Refused { status, body } => write!(f, "rejected with HTTP {status}: {body}"),
            Posted::NotDelivered { error, .. } | Posted::ServerError { error, .. } => {
                f.write_str(error)
            }
            Posted::Unknown(error) => f.write_str(error),
        }
    }
}

/// When a Slack webhook may take its next message; held for the whole POST so posts to one
/// webhook never overlap.
type PaceSlot = Arc<tokio::sync::Mutex<Option<Instant>>>;

#[derive(Clone)]
pub struct Deliverer {
    http: reqwest::Client,
    timeout: Duration,
    /// One pacing slot per Slack webhook URL.
    slack_slots: Arc<Mutex<HashMap<String, PaceSlot>>>,
}

impl Deliverer {
    pub fn new(timeout: Duration) -> Deliverer {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirected POST comes back as a GET without the digest, which a 2xx at the end
            // would record as delivered; and the digest must not follow a redirect elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("acquire-digest/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend is compiled in");
        Deliverer {
            http,
            timeout,
            slack_slots: Arc::default(),
        }
    }

    /// One POST. `webhook_id` is the same for every POST of one digest to one webhook, so a
    /// generic receiver can drop a repeat.
    pub async fn post(&self, hook: &Webhook, body: &Value, webhook_id: &str) -> Posted {
        let slot = match hook.kind {
            WebhookKind::Slack => Some(self.slack_slot(hook)),
            _ => None,
        };
        let mut last_post = match &slot {
            Some(slot) => Some(slot.lock().await),
            None => None,
        };
        if let Some(Some(last)) = last_post.as_deref() {
            tokio::time::sleep_until(*last + SLACK_PACE).await;
        }
        let kind = render::kind(hook.kind);
        let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
        let mut request = self
            .http
            .post(kind.url(hook.url.expose()))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in render::signing::headers(hook, webhook_id, &bytes) {
            request = request.header(name, value);
        }
        let request = request.body(bytes);
        let started = std::time::Instant::now();
        let posted = classify(request.send().await, hook, self.timeout).await;
        crate::telemetry::webhook_request(hook.kind.as_str(), started.elapsed());
        if let Some(last) = last_post.as_deref_mut() {
            *last = Some(Instant::now());
        }
        posted
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
    // Each query value on its own too: `?token=…` is echoed back as "unknown token …".
    secrets.extend(
        url.query()
            .into_iter()
            .flat_map(|query| query.split('&'))
            .filter_map(|pair| pair.split_once('=').map(|(_, value)| value)),
    );
    secrets.extend(url.path_segments().into_iter().flatten().filter(|s| {
        let marked = s
            .bytes()
            .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
        s.len() >= 12 || (s.len() >= 6 && marked)
    }));
    // Longest first, so a whole URL is replaced before a part of it.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.retain(|s| *s != "/");
    secrets
}

async fn classify(
    sent: Result<reqwest::Response, reqwest::Error>,
    hook: &Webhook,
    timeout: Duration,
) -> Posted {
    let response = match sent {
        Ok(response) => response,
        Err(e) => return failure(&e.without_url(), timeout),
    };
    let status = response.status();
    let after = http::retry_after(response.headers(), SystemTime::now());
    let body = http::read_capped(response, 64 * 1024)
        .await
        // Scrubbed before the excerpt is cut, so no part of a secret survives at the cut.
        .map(|b| http::redact(&String::from_utf8_lossy(&b), &url_secrets(hook)))
        .unwrap_or_else(|e| e.to_string());
    // The kind reads the whole answer (its error JSON), then the message is cut for the log.
    let (body, after) = match render::kind(hook.kind).answer(status.as_u16(), &body) {
        Answer::Delivered => return Posted::Delivered,
        Answer::Failed {
            message,
            after: said,
        } => (http::excerpt(message.as_bytes()), said.or(after)),
    };
    let body = if status.is_redirection() {
        "the webhook redirects elsewhere: configure the URL it redirects to".to_owned()
    } else if body.is_empty() {
        "(empty body)".to_owned()
    } else {
        body
    };
    let error = format!("HTTP {}: {body}", status.as_u16());
    if status.is_server_error() {
        Posted::ServerError { error, after }
    } else if http::is_transient(status) {
        Posted::NotDelivered { error, after }
    } else {
        Posted::Refused {
            status: status.as_u16(),
            body,
        }
    }
}

/// A POST that got no HTTP answer, named by its cause. Connecting failed (refused, DNS, TLS
/// handshake) before anything was sent; a timeout or reset after connecting may have
/// delivered it.
fn failure(e: &reqwest::Error, timeout: Duration) -> Posted {
    let http::NoAnswer {
        before_sending,
        cause,
    } = http::NoAnswer::of(e, timeout, timeout);
    if before_sending {
        Posted::NotDelivered {
            error: format!("{cause} (nothing was sent)"),
            after: None,
        }
    } else {
        Posted::Unknown(format!("{cause} (it may have arrived: outcome unknown)"))
    }
}
