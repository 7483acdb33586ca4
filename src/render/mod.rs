//! Render: the digest through a kind's template into the body its receiver takes.
//!
//! Each destination kind is one module behind [`Kind`]: its built-in template, how visitor text
//! is made inert for it, how the template's output is checked and fitted to its limits, and
//! what its receiver's answer means. Templates write the destination's own JSON; every value
//! they print is written as the inside of a JSON string, from a copy of the digest whose
//! strings were already cleaned ([`text::clean`]) and escaped for the kind, so neither
//! `{{value}}` nor a helper can add structure, a mention or a link. The generic kind renders
//! plain text instead and sends it beside the digest itself.

mod discord;
mod generic;
mod google_chat;
mod helpers;
mod mattermost;
pub mod signing;
mod slack;
mod teams;
pub mod text;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use handlebars::template::TemplateElement;
use handlebars::{Context, Handlebars, Template};
use serde_json::Value;

use crate::config::{Webhook, WebhookKind};
use crate::fetch::{ChatSource, CountryRow, DayReport, HourRow};
use crate::rank::{Audience, Digest, rank};
use crate::schedule::{Comparison, Window, Zone};

pub use helpers::{activity_strip, date_range, thousands};

/// What a receiver's answer means, as its kind documents it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Delivered,
    /// Not delivered: the receiver's own message (from its error JSON where it has one), and
    /// when it asked to be tried again if its body says so (Discord's `retry_after`).
    Failed {
        message: String,
        after: Option<Duration>,
    },
}

/// One destination kind. Adding one is a module implementing this and a template; no other
/// kind changes.
pub trait Kind: Sync {
    /// The built-in template.
    fn template(&self) -> &'static str;
    /// Visitor text made inert for this destination; it has been through [`text::clean`].
    fn escape<'a>(&self, text: &'a str) -> Cow<'a, str>;
    /// The body, from the parsed template output: an error says what the kind can't send, and
    /// whatever is too long is cut to the kind's limits. Keys that keep the message inert
    /// (no unfurling, no mentions) are set here whatever a template wrote.
    fn fit(&self, body: Value) -> Result<Value, String>;
    /// What it looks like to the channel's readers, as terminal text.
    fn preview(&self, body: &Value) -> String;

    /// The body from the template's output and the digest.
    fn body(&self, rendered: &str, _digest: &Digest) -> Result<Value, String> {
        let body: Value = serde_json::from_str(rendered)
            .map_err(|e| format!("its output is not JSON ({e}); check quotes and commas"))?;
        if !body.is_object() {
            return Err("its output must be a JSON object ({…})".into());
        }
        self.fit(body)
    }
    /// A short plain message in this kind's format (a failure alert): `text` cleaned and
    /// escaped like visitor text, fitted like any body. Most kinds take a `text`.
    fn message(&self, text: &str) -> Result<Value, String> {
        self.fit(serde_json::json!({ "text": self.escape(&text::clean(text)) }))
    }
    /// Whether values are written into JSON strings (every kind but generic).
    fn writes_json(&self) -> bool {
        true
    }
    /// The URL to post to (Discord's `?wait=true`).
    fn url(&self, url: &url::Url) -> url::Url {
        url.clone()
    }
    /// Most receivers answer any 2xx for a posted message.
    fn answer(&self, status: u16, body: &str) -> Answer {
        if (200..300).contains(&status) {
            Answer::Delivered
        } else {
            Answer::Failed {
                message: receiver_message(body),
                after: None,
            }
        }
    }
}

pub fn kind(kind: WebhookKind) -> &'static dyn Kind {
    match kind {
        WebhookKind::Slack => &slack::Slack,
        WebhookKind::Generic => &generic::Generic,
        WebhookKind::Discord => &discord::Discord,
        WebhookKind::Teams => &teams::Teams,
        WebhookKind::GoogleChat => &google_chat::GoogleChat,
        WebhookKind::Mattermost => &mattermost::Mattermost,
    }
}

/// The message in a receiver's error JSON (`{"message": …}` from Discord and Mattermost,
/// `{"error": {"message": …}}` from Microsoft and Google), else its body as it came.
pub fn receiver_message(body: &str) -> String {
    let Ok(json) = serde_json::from_str::<Value>(body) else {
        return body.to_owned();
    };
    let message = json["message"]
        .as_str()
        .or_else(|| json["error"]["message"].as_str())
        .or_else(|| json["error"].as_str());
    match message {
        Some(message) => {
            let code = [&json["code"], &json["error"]["code"], &json["status_code"]]
                .into_iter()
                .find(|c| c.is_number() || c.is_string())
                .map(|c| format!(" ({})", c.to_string().trim_matches('"')));
            format!("{message}{}", code.unwrap_or_default())
        }
        None => body.to_owned(),
    }
}

/// The name a built-in template is registered under; overrides go by their path.
const BUILTIN: &str = "built-in";

/// Compiled templates, one registry per kind (each escapes for its own output), each made the
/// first time its kind renders: a config that posts only to Slack never compiles the others.
#[derive(Clone)]
pub struct Renderer {
    registries: Arc<HashMap<WebhookKind, OnceLock<Handlebars<'static>>>>,
    /// Each kind's overrides that compiled, by name, for its registry.
    overrides: Arc<HashMap<WebhookKind, Vec<(String, Template)>>>,
    /// Overrides that did not compile, with why: `check` refuses them, and a run that gets
    /// here anyway (a config not loaded through `check`) fails only their webhooks.
    broken: Arc<HashMap<PathBuf, String>>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Renderer")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("template {template}: {reason}")]
pub struct RenderError {
    template: String,
    reason: String,
}

impl Renderer {
    /// The built-in templates and every webhook's own.
    pub fn new<'a>(webhooks: impl IntoIterator<Item = &'a Webhook>) -> Renderer {
        let mut overrides: HashMap<WebhookKind, Vec<(String, Template)>> = HashMap::new();
        let mut broken = HashMap::new();
        for hook in webhooks {
            let Some(template) = &hook.template else {
                continue;
            };
            let compiled = Template::compile(&template.source).map_err(|e| e.to_string());
            let refused = compiled.and_then(|compiled| {
                raw_output(&compiled.elements, kind(hook.kind).writes_json())?;
                let named = (name(&template.path), compiled);
                overrides.entry(hook.kind).or_default().push(named);
                Ok(())
            });
            if let Err(reason) = refused {
                broken.insert(template.path.clone(), reason);
            }
        }
        Renderer {
            registries: Arc::new(WebhookKind::ALL.map(|k| (k, OnceLock::new())).into()),
            overrides: Arc::new(overrides),
            broken: Arc::new(broken),
        }
    }

    /// A kind's registry: its built-in template and the overrides for it.
    fn registry(&self, each: WebhookKind) -> &Handlebars<'static> {
        self.registries[&each].get_or_init(|| {
            let mut registry = Handlebars::new();
            registry.set_strict_mode(true);
            if kind(each).writes_json() {
                registry.register_escape_fn(json_string_inside);
            } else {
                registry.register_escape_fn(handlebars::no_escape);
            }
            helpers::register(&mut registry);
            registry.register_template(BUILTIN, builtin_template(each).clone());
            for (name, template) in self.overrides.get(&each).into_iter().flatten() {
                registry.register_template(name, template.clone());
            }
            registry
        })
    }

    /// The renderer with only the built-in templates.
    pub fn builtin() -> Renderer {
        Renderer::new([])
    }

    /// What is wrong with a webhook's template: it doesn't compile, reads a variable the digest
    /// doesn't have, or writes something its kind can't send, on a busy or an empty day.
    pub fn problem(&self, hook: &Webhook) -> Option<String> {
        let template = hook.template.as_ref()?;
        if let Some(reason) = self.broken.get(&template.path) {
            return Some(reason.clone());
        }
        [sample_digest(), empty_digest()]
            .iter()
            .find_map(|digest| self.body(hook, digest).err().map(|e| e.reason))
    }

    /// The JSON body a webhook receives for a digest.
    pub fn body(&self, hook: &Webhook, digest: &Digest) -> Result<Value, RenderError> {
        let this = kind(hook.kind);
        let name = hook
            .template
            .as_ref()
            .map_or(BUILTIN.to_owned(), |t| name(&t.path));
        let error = |reason: String| RenderError {
            template: if name == BUILTIN {
                format!("built-in {}", hook.kind.as_str())
            } else {
                name.clone()
            },
            reason,
        };
        if let Some(reason) = hook
            .template
            .as_ref()
            .and_then(|t| self.broken.get(&t.path))
        {
            return Err(error(reason.clone()));
        }
        let mut data = serde_json::to_value(digest).expect("the digest serializes");
        escape_strings(&mut data, this);
        let rendered = self
            .registry(hook.kind)
            .render_with_context(&name, &Context::from(data))
            .map_err(|e| error(plain_reason(&e)))?;
        this.body(&rendered, digest).map_err(error)
    }

    /// What the webhook's readers would see of `body`, as terminal text.
    pub fn preview(&self, hook: &Webhook, body: &Value) -> String {
        kind(hook.kind).preview(body)
    }
}

fn name(path: &Path) -> String {
    path.display().to_string()
}

/// A kind's built-in template, compiled once a process and only when first used: Handlebars'
/// parser takes about 15 M instructions for one, and `check`, every start and every reload
/// make a renderer.
fn builtin_template(each: WebhookKind) -> &'static Template {
    static COMPILED: [OnceLock<Template>; WebhookKind::ALL.len()] =
        [const { OnceLock::new() }; WebhookKind::ALL.len()];
    let at = (WebhookKind::ALL.iter().position(|k| *k == each)).expect("every kind is in ALL");
    COMPILED[at].get_or_init(|| {
        Template::compile_with_name(kind(each).template(), BUILTIN.to_owned())
            .expect("built-in templates compile")
    })
}

/// A value written as the inside of a JSON string: what `{{value}}` prints in a JSON template.
fn json_string_inside(text: &str) -> String {
    if !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        return text.to_owned();
    }
    let quoted = serde_json::to_string(text).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_owned()
}

/// Every string cleaned and escaped for `kind`; most need neither, and stay as they are.
fn escape_strings(value: &mut Value, kind: &dyn Kind) {
    match value {
        Value::String(text) => {
            let escaped = match text::clean(text) {
                Cow::Borrowed(clean) => match kind.escape(clean) {
                    Cow::Borrowed(_) => None,
                    Cow::Owned(escaped) => Some(escaped),
                },
                Cow::Owned(clean) => Some(kind.escape(&clean).into_owned()),
            };
            if let Some(escaped) = escaped {
                *text = escaped;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| escape_strings(v, kind)),
        Value::Object(fields) => fields.values_mut().for_each(|v| escape_strings(v, kind)),
        _ => {}
    }
}

/// Refuses `{{{value}}}` and `{{& value}}` in a JSON template: they skip the escape, so a
/// visitor's `"` would end the string and the rest of their text become JSON.
fn raw_output(elements: &[TemplateElement], json: bool) -> Result<(), String> {
    if !json {
        return Ok(());
    }
    for element in elements {
        match element {
            TemplateElement::HtmlExpression(_) => {
                return Err(
                    "{{{…}}} and {{& …}} write a value unescaped, which could break the JSON: use {{…}}, which writes any value safely inside a JSON string"
                        .to_owned(),
                );
            }
            TemplateElement::HelperBlock(block) => {
                for inner in block.template.iter().chain(&block.inverse) {
                    raw_output(&inner.elements, json)?;
                }
            }
            // Inline partials and partial blocks hold templates that render later.
            TemplateElement::DecoratorBlock(block) | TemplateElement::PartialBlock(block) => {
                if let Some(inner) = &block.template {
                    raw_output(&inner.elements, json)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn plain_reason(e: &handlebars::RenderError) -> String {
    match e.line_no {
        Some(line) => format!("line {line}: {}", e.reason()),
        None => e.reason().to_string(),
    }
}

/// A day with something in every list, so strict rendering visits every variable a template
/// uses inside `{{#each}}` and `{{#if}}`.
pub fn sample_digest() -> Digest {
    let source = |text: &str, chats| ChatSource {
        text: text.into(),
        chats,
        percentage: 50.0,
    };
    let report = DayReport {
        countries: vec![
            CountryRow {
                name: "India".into(),
                cca3: "IND".into(),
                visitors: 100,
                chats: 158,
                cases: 178,
                emails: 17,
                cobrowse: 12,
                calls: 3,
            },
            CountryRow {
                name: "Benin".into(),
                cca3: "BEN".into(),
                visitors: 1,
                chats: 2,
                cases: 2,
                emails: 0,
                cobrowse: 0,
                calls: 0,
            },
        ],
        hours: vec![HourRow {
            hour: 14,
            label: "02 PM".into(),
            activity: 7,
        }],
        pages: vec![
            source("https://example.com/a", 3),
            source("https://example.com/b", 1),
        ],
        referrers: vec![source("https://example.org/", 2), source("direct", 1)],
    };
    let mut digest = sample(&report, 1);
    // Both comparisons, so strict rendering visits what a template shows beside them too.
    let span = Window::for_date(sample_zone(), sample_date()).span;
    let mut earlier = report.clone();
    earlier.countries.reverse();
    for which in [Comparison::Previous, Comparison::LastWeek] {
        if let Some(earlier_span) = which.of(span) {
            crate::rank::compare(&mut digest, which, earlier_span, &earlier);
        }
    }
    digest
}

fn empty_digest() -> Digest {
    sample(&DayReport::default(), 5)
}

fn sample_zone() -> Zone {
    Zone::parse("Asia/Kolkata").expect("a known zone")
}

fn sample_date() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2021, 3, 18).expect("a real date")
}

fn sample(report: &DayReport, top: usize) -> Digest {
    let audience = Audience {
        team: "sample",
        account_id: "sample",
        zone: sample_zone(),
        top,
    };
    rank(
        &audience,
        &Window::for_date(sample_zone(), sample_date()),
        report,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TemplateFile, WebhookUrl};

    fn hook(kind: WebhookKind, source: Option<&str>) -> Webhook {
        Webhook {
            name: kind.as_str().into(),
            kind,
            url: WebhookUrl::parse("https://hooks.example.com/x").unwrap(),
            template: source.map(|source| TemplateFile {
                path: format!("{}.hbs", kind.as_str()).into(),
                source: source.into(),
            }),
            secret: None,
        }
    }

    #[test]
    fn every_builtin_template_renders_both_samples() {
        let renderer = Renderer::builtin();
        for kind in WebhookKind::ALL {
            for digest in [sample_digest(), empty_digest()] {
                let body = renderer.body(&hook(kind, None), &digest);
                assert!(body.is_ok(), "{}: {body:?}", kind.as_str());
            }
        }
    }

    #[test]
    fn a_custom_template_cannot_unescape_visitor_text() {
        let raw = "{\"text\": \"{{#each countries}}{{{name}}}{{/each}}\"}";
        let renderer = Renderer::new([&hook(WebhookKind::Mattermost, Some(raw))]);
        let problem = renderer.problem(&hook(WebhookKind::Mattermost, Some(raw)));
        assert!(problem.unwrap().contains("unescaped"));
        let inline = "{{#*inline \"p\"}}{{{name}}}{{/inline}}{\"text\": \"{{> p}}\"}";
        let renderer = Renderer::new([&hook(WebhookKind::Mattermost, Some(inline))]);
        let problem = renderer.problem(&hook(WebhookKind::Mattermost, Some(inline)));
        assert!(problem.unwrap().contains("unescaped"));

        let plain = "{\"text\": \"Top: {{#each countries}}{{name}} {{truncate cca3 5}}{{/each}}\"}";
        let hook = hook(WebhookKind::Slack, Some(plain));
        let renderer = Renderer::new([&hook]);
        assert_eq!(renderer.problem(&hook), None);
        let mut digest = sample_digest();
        digest.countries[0].name = "\", \"blocks\": [], \"x\": \"<!channel>".into();
        digest.countries[0].cca3 = "<@U1>".into();
        let body = renderer.body(&hook, &digest).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(
            text.contains("\", \"blocks\": [], \"x\": \"&lt;!channel&gt;"),
            "{text}"
        );
        assert!(text.ends_with("&lt;…"), "{text}");
        assert_eq!(body.as_object().unwrap().len(), 3, "{body}"); // text + unfurl flags
    }

    #[test]
    fn misspelt_variables_and_unsendable_output_are_problems() {
        for (kind, source, words) in [
            (
                WebhookKind::Slack,
                "{\"text\": \"{{totals.visiters}}\"}",
                "visiters",
            ),
            (
                WebhookKind::Discord,
                "{{#if totals.visiters}}{}{{/if}}",
                "no totals.visiters",
            ),
            (
                WebhookKind::Teams,
                "{\"text\": \"{{#each countries}}{{nmae}}{{/each}}\"}",
                "nmae",
            ),
            (WebhookKind::Generic, "{{#each countries}}", "each"),
            (WebhookKind::Slack, "{\"text\": {{team}}}", "not JSON"),
            (
                WebhookKind::Discord,
                "{\"username\": \"x\"}",
                "content or embeds",
            ),
        ] {
            let hook = hook(kind, Some(source));
            let problem = Renderer::new([&hook]).problem(&hook);
            assert!(
                problem.as_deref().is_some_and(|p| p.contains(words)),
                "{source}: {problem:?}"
            );
        }
    }
}
