//! Standard Webhooks signatures for generic webhooks, made by the `standardwebhooks` crate:
//! `webhook-id` (the same for every POST of one digest, so a receiver can drop a repeat),
//! `webhook-timestamp`, and `webhook-signature` over `id.timestamp.body`.

use crate::config::{Webhook, WebhookKind};

/// The headers a POST of `body` to `hook` carries; a fresh timestamp for every attempt.
pub fn headers(hook: &Webhook, webhook_id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    if hook.kind != WebhookKind::Generic {
        return Vec::new();
    }
    let mut headers = vec![("webhook-id", webhook_id.to_owned())];
    if let Some(secret) = &hook.secret {
        let timestamp = chrono::Utc::now().timestamp();
        // Both were checked when the config was loaded: the secret's form, and the body is
        // serialized JSON, hence UTF-8.
        let signature = standardwebhooks::Webhook::new(secret.expose())
            .and_then(|signer| signer.sign(webhook_id, timestamp, body))
            .expect("a valid secret signs a UTF-8 body");
        headers.push(("webhook-timestamp", timestamp.to_string()));
        headers.push(("webhook-signature", signature));
    }
    headers
}
