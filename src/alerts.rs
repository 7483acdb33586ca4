//! Failure alerts: when the daemon gives a team's digest up (its catch-up window closed, the
//! webhook refused it, its outcome is unknown, or Acquire rejected the team's API key), one
//! message goes to each `[alerts]` webhook, naming team, span, webhook and reason.
//!
//! The ledger records each (team, span, webhook, reason) before the alert goes out, so a
//! restart or another replica that sees the same give-up sends nothing; an alert that fails
//! to send is logged and not tried again (an alert about alerts would have nowhere to go).

use serde_json::{Value, json};

use crate::config::{Webhook, WebhookKind, sha256_hex};
use crate::deliver::{Deliverer, Posted};
use crate::fetch::Problem;
use crate::ledger::{Key, Ledger};
use crate::pipeline::{HookStatus, SpanReport};
use crate::render;

/// Why a digest was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    WindowClosed,
    Missed,
    Refused,
    OutcomeUnknown,
    TooManyAttempts,
    ApiKeyRejected,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::WindowClosed,
        Reason::Missed,
        Reason::Refused,
        Reason::OutcomeUnknown,
        Reason::TooManyAttempts,
        Reason::ApiKeyRejected,
    ];

    /// As recorded in the ledger and sent to generic receivers.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::WindowClosed => "window_closed",
            Reason::Missed => "missed",
            Reason::Refused => "refused",
            Reason::OutcomeUnknown => "outcome_unknown",
            Reason::TooManyAttempts => "too_many_attempts",
            Reason::ApiKeyRejected => "api_key_rejected",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Reason::WindowClosed => "its catch_up window closed before it could be delivered",
            Reason::Missed => {
                "its catch_up window closed with nothing recorded of it: no acquire-digest process was running when it was due, or none could record it (`once --date` sends it)"
            }
            Reason::Refused => "the webhook refused it",
            Reason::OutcomeUnknown => {
                "two POSTs went unanswered, so it is not resent (outcome unknown)"
            }
            Reason::TooManyAttempts => {
                "the most POSTs a digest may send reached the receiver without one delivering it"
            }
            Reason::ApiKeyRejected => "Acquire rejected the team's API key",
        }
    }
}

/// One give-up worth an alert: what, why, and the last error.
#[derive(Debug, Clone, PartialEq)]
pub struct GiveUp {
    pub key: Key,
    pub reason: Reason,
    pub detail: String,
}

/// The give-ups a delivery round (or an expiry) came to. A rejected API key concerns every
/// webhook of the team, so its alert names none (`webhook` is empty).
pub fn give_ups(report: &SpanReport) -> Vec<GiveUp> {
    let give_up = |webhook: &str, reason, detail: &str| GiveUp {
        key: Key::new(&report.team, report.span, webhook),
        reason,
        detail: detail.to_owned(),
    };
    match &report.outcome {
        Ok(hooks) => hooks
            .iter()
            .filter_map(|hook| match &hook.status {
                HookStatus::Refused(e) => Some(give_up(&hook.webhook, Reason::Refused, e)),
                HookStatus::Unknown(e) => Some(give_up(&hook.webhook, Reason::OutcomeUnknown, e)),
                HookStatus::TooManyAttempts(e) => {
                    Some(give_up(&hook.webhook, Reason::TooManyAttempts, e))
                }
                HookStatus::Missed(firing) => Some(give_up(
                    &hook.webhook,
                    Reason::Missed,
                    &firing.map_or_else(
                        || "it was due while nothing ran".to_owned(),
                        |at| format!("it was due at {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
                    ),
                )),
                HookStatus::Expired(e) => Some(give_up(
                    &hook.webhook,
                    Reason::WindowClosed,
                    e.as_deref().unwrap_or("no attempt got through"),
                )),
                _ => None,
            })
            .collect(),
        Err(e) if matches!(e.problem, Problem::Unauthorized(_)) => {
            vec![give_up("", Reason::ApiKeyRejected, &e.to_string())]
        }
        Err(_) => Vec::new(),
    }
}

/// The `[alerts]` webhooks and what sends to them.
#[derive(Clone)]
pub struct Alerts {
    webhooks: Vec<Webhook>,
    ledger: Ledger,
    deliverer: Deliverer,
}

impl Alerts {
    pub fn new(webhooks: Vec<Webhook>, ledger: Ledger, deliverer: Deliverer) -> Alerts {
        Alerts {
            webhooks,
            ledger,
            deliverer,
        }
    }

    /// Sends an alert for each give-up no process has alerted about yet.
    pub async fn raise(&self, give_ups: Vec<GiveUp>) {
        if self.webhooks.is_empty() {
            return;
        }
        for give_up in give_ups {
            let GiveUp {
                key,
                reason,
                detail,
            } = &give_up;
            let (team, date, webhook) = (&key.team, key.span.to_string(), &key.webhook);
            match self.ledger.first_alert(key, reason.as_str(), detail).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    // Unrecorded, it could be sent again by every replica: better none.
                    tracing::error!(%team, %date, %webhook, "no alert sent: it could not be recorded ({e})");
                    continue;
                }
            }
            self.send_all(&give_up).await;
        }
    }

    /// Sends the alerts recorded but never sent: their process stopped before (a kill, or a
    /// shutdown whose grace ran out). Only those older than a lease, whose sender is gone.
    pub async fn send_unsent(&self) {
        if self.webhooks.is_empty() {
            return;
        }
        let unsent = match self.ledger.unsent_alerts(crate::ledger::lease_ttl()).await {
            Ok(unsent) => unsent,
            Err(e) => return tracing::error!("could not look for alerts left unsent: {e}"),
        };
        for (key, reason, detail) in unsent {
            // One a later version raised, for a reason this one doesn't know, is left to it.
            let Some(reason) = Reason::ALL.into_iter().find(|r| r.as_str() == reason) else {
                continue;
            };
            self.send_all(&GiveUp {
                key,
                reason,
                detail,
            })
            .await;
        }
    }

    /// To every alerts webhook, then recorded as sent.
    async fn send_all(&self, give_up: &GiveUp) {
        for hook in &self.webhooks {
            self.send(hook, give_up).await;
        }
        let (key, reason) = (&give_up.key, give_up.reason.as_str());
        if let Err(e) = self.ledger.alert_sent(key, reason).await {
            let (team, date) = (&key.team, key.span.to_string());
            tracing::warn!(%team, %date, "the alert was sent, but not recorded as sent ({e}): the next start may send it again");
        }
    }

    async fn send(&self, hook: &Webhook, give_up: &GiveUp) {
        let GiveUp {
            key,
            reason,
            detail,
        } = give_up;
        let (team, date) = (&key.team, key.span.to_string());
        let webhook = if key.webhook.is_empty() {
            "every webhook".to_owned()
        } else {
            format!("webhook {}", key.webhook)
        };
        let text = format!(
            "acquire-digest gave up the digest of team {team} for {date} ({webhook}): {}. Last error: {detail}",
            reason.describe()
        );
        let body: Value = match hook.kind {
            WebhookKind::Generic => json!({
                "alert": "digest_given_up",
                "team": team,
                "date": key.span.first.to_string(),
                "end_date": key.span.last.to_string(),
                "webhook": key.webhook,
                "reason": reason.as_str(),
                "detail": detail,
                "text": text,
            }),
            kind => match render::kind(kind).message(&text) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(%team, %date, alert = %hook.name, "could not build the alert: {e}");
                    return;
                }
            },
        };
        let id = format!(
            "alert_{}",
            &sha256_hex(format!("{}\n{}", key.webhook_id(), reason.as_str()).as_bytes())[..32]
        );
        let posted = self.deliverer.post(hook, &body, &id).await;
        crate::telemetry::alert(reason.as_str(), matches!(posted, Posted::Delivered));
        match posted {
            Posted::Delivered => {
                tracing::info!(%team, %date, alert = %hook.name, "alert sent to {}: {}", hook.url, reason.as_str())
            }
            failed => tracing::error!(
                %team, %date, alert = %hook.name,
                "the alert to {} failed ({failed}); it is not sent again", hook.url
            ),
        }
    }
}
