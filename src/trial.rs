//! `test` and `preview`: trying a webhook before 9 am. Both build one digest of a team's day
//! through the real fetch and render; `test` posts it once, marked as a test in its title,
//! and `preview` shows it as the webhook's readers would see it. Neither touches the ledger.

use anyhow::{Context, bail};
use chrono::NaiveDate;

use crate::clock::{Clock, WallClock};
use crate::config::{Config, Team, Webhook, WebhookKind};
use crate::deliver::Posted;
use crate::pipeline::Pipeline;
use crate::rank::Digest;
use crate::schedule::{Span, Window};

/// What one webhook made of the trial.
pub struct Tried {
    /// "team webhook (https://host:port #fingerprint, kind)".
    pub label: String,
    /// The preview, or the receiver's answer.
    pub text: String,
    pub ok: bool,
}

/// Prints nothing and posts nothing: what each chosen webhook's readers would see.
pub async fn preview(
    config: &Config,
    team: &str,
    webhook: Option<&str>,
    date: Option<NaiveDate>,
) -> anyhow::Result<Vec<Tried>> {
    let (pipeline, team, hooks, digest) = build(config, team, webhook, date).await?;
    let mut out = Vec::new();
    for hook in hooks {
        let body = pipeline.renderer.body(hook, &digest)?;
        out.push(Tried {
            label: label(team, hook),
            text: pipeline.renderer.preview(hook, &body),
            ok: true,
        });
    }
    Ok(out)
}

/// Posts one digest, marked as a test, to each chosen webhook now: one POST each, no retries,
/// nothing recorded, so the real digest still goes out on schedule.
pub async fn test(
    config: &Config,
    team: &str,
    webhook: Option<&str>,
    date: Option<NaiveDate>,
) -> anyhow::Result<Vec<Tried>> {
    let (pipeline, team, hooks, digest) = build(config, team, webhook, date).await?;
    // A person reads a chat message: the team's name says it is a test. A program reads the
    // generic JSON: a `test` key says so (and its `text` for a person), and `team` stays the
    // key it files the digest under.
    let mut marked = digest.clone();
    marked.team = format!("[TEST] {}", digest.team);
    // Its own id: a receiver that drops repeats must not drop the real digest as one.
    let id = format!(
        "test-{}",
        WallClock::new().now().timestamp_nanos_opt().unwrap_or(0)
    );
    let mut out = Vec::new();
    for hook in hooks {
        let body = match hook.kind {
            WebhookKind::Generic => {
                let mut body = pipeline.renderer.body(hook, &digest)?;
                if let Some(fields) = body.as_object_mut() {
                    fields.insert("test".to_owned(), serde_json::Value::Bool(true));
                    if let Some(serde_json::Value::String(text)) = fields.get_mut("text") {
                        text.insert_str(0, "[TEST] ");
                    }
                }
                body
            }
            _ => pipeline.renderer.body(hook, &marked)?,
        };
        let posted = pipeline.deliverer.post(hook, &body, &id).await;
        out.push(Tried {
            label: label(team, hook),
            ok: posted == Posted::Delivered,
            text: posted.to_string(),
        });
    }
    Ok(out)
}

fn label(team: &Team, hook: &Webhook) -> String {
    format!(
        "{} {} ({}, {})",
        team.name,
        hook.name,
        hook.url,
        hook.kind.as_str()
    )
}

async fn build<'a>(
    config: &'a Config,
    team: &str,
    webhook: Option<&str>,
    date: Option<NaiveDate>,
) -> anyhow::Result<(Pipeline, &'a Team, Vec<&'a Webhook>, Digest)> {
    let names = |items: Vec<&str>| items.join(", ");
    let Some(team) = config.teams.iter().find(|t| t.name == team) else {
        bail!(
            "no team named {team:?}: the config has {}",
            names(config.teams.iter().map(|t| t.name.as_str()).collect())
        );
    };
    let hooks: Vec<&Webhook> = team
        .webhooks
        .iter()
        .filter(|h| webhook.is_none_or(|name| h.name == name))
        .collect();
    if hooks.is_empty() {
        bail!(
            "team {:?} has no webhook named {:?}: it has {}",
            team.name,
            webhook.unwrap_or_default(),
            names(team.webhooks.iter().map(|h| h.name.as_str()).collect())
        );
    }
    let clock = WallClock::new();
    let span = date.map_or_else(|| Window::yesterday(team.zone, clock.now()).span, Span::day);
    let pipeline = Pipeline::new(config, None, clock);
    let digest = pipeline
        .digest(team, span)
        .await
        .with_context(|| format!("{} {span}: no digest", team.name))?;
    Ok((pipeline, team, hooks, digest))
}
