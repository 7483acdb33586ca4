//! Render: the digest through a Handlebars template into what a webhook receives.
//!
//! Slack gets Block Kit built with a JSON serializer from the template's marked-up output, with
//! visitor-chosen text escaped so it can never mention anyone or smuggle a link, and every block
//! cut to Slack's limits. The generic webhook gets the digest model itself plus the plain text.
//! Templates are strict: a misspelt variable fails `check`, not the 9 am run.

use std::path::PathBuf;
use std::sync::Arc;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, Path, RenderContext, Template,
    handlebars_helper,
};
use serde_json::{Value, json};

use crate::config::{Webhook, WebhookKind};
use crate::fetch::{ChatSource, CountryRow, DayReport, HourRow};
use crate::rank::{Audience, Digest, rank};
use crate::schedule::{Window, Zone};

const SLACK_TEMPLATE: &str = include_str!("../templates/slack.hbs");
const TEXT_TEMPLATE: &str = include_str!("../templates/text.hbs");

/// Slack's documented limits, counted in UTF-16 units (what Slack counts), which is never less
/// than the character count.
pub const HEADER_LIMIT: usize = 150;
pub const SECTION_LIMIT: usize = 3000;
pub const MAX_BLOCKS: usize = 50;
/// Far below Slack's 40,000 so the JSON overhead never matters.
pub const MESSAGE_BUDGET: usize = 30_000;

/// A webhook's own template, read from the file its config names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateOverride {
    pub path: PathBuf,
    pub source: String,
}

impl TemplateOverride {
    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// Compiled templates. Neither registry escapes: Slack templates are rendered over
/// [`slack_safe`]'s copy of the digest, whose every string is already escaped, so a template
/// using `{{{triple}}}` or `{{& amp}}` can't emit visitor markup either.
#[derive(Clone)]
pub struct Renderer {
    slack: Arc<Handlebars<'static>>,
    plain: Arc<Handlebars<'static>>,
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
    /// Compiles the built-in templates and every webhook's override, and renders each override
    /// against a busy and an empty sample day, so a template that would fail at 9 am fails now.
    /// Errors are (template path, reason).
    pub fn new<'a>(
        webhooks: impl IntoIterator<Item = &'a Webhook>,
    ) -> Result<Renderer, Vec<(PathBuf, String)>> {
        let mut slack = registry();
        let mut plain = registry();
        // The samples every override is checked against, as each kind of template sees them.
        let plain_samples = [sample_digest(), empty_digest()]
            .map(|digest| serde_json::to_value(digest).expect("the digest serializes"));
        let slack_samples = [slack_safe(&sample_digest()), slack_safe(&empty_digest())];
        slack
            .register_template_string("slack", SLACK_TEMPLATE)
            .expect("the built-in slack template compiles");
        plain
            .register_template_string("text", TEXT_TEMPLATE)
            .expect("the built-in text template compiles");
        let mut problems = Vec::new();
        for hook in webhooks {
            let Some(template) = &hook.template else {
                continue;
            };
            let registry = match hook.kind {
                WebhookKind::Slack => &mut slack,
                WebhookKind::Generic => &mut plain,
            };
            if let Err(e) = registry.register_template_string(&template.name(), &template.source) {
                problems.push((template.path.clone(), e.to_string()));
                continue;
            }
            let compiled = Template::compile(&template.source).expect("it registered");
            let unknown = unknown_paths(&compiled.elements, &mut vec![&plain_samples[0]]);
            if !unknown.is_empty() {
                problems.push((
                    template.path.clone(),
                    format!(
                        "the digest has no {}; variables are the fields of the digest listed in README.md",
                        unknown.join(", ")
                    ),
                ));
                continue;
            }
            let samples = match hook.kind {
                WebhookKind::Slack => &slack_samples,
                WebhookKind::Generic => &plain_samples,
            };
            for sample in samples {
                if let Err(e) = registry.render(&template.name(), sample) {
                    problems.push((
                        template.path.clone(),
                        format!(
                            "{}; variables are the fields of the digest listed in README.md",
                            plain_reason(&e)
                        ),
                    ));
                    break;
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Renderer {
            slack: Arc::new(slack),
            plain: Arc::new(plain),
        })
    }

    /// The renderer with only the built-in templates.
    pub fn builtin() -> Renderer {
        Renderer::new([]).expect("built-in templates are valid")
    }

    /// The JSON body a webhook receives for a digest.
    pub fn body(&self, hook: &Webhook, digest: &Digest) -> Result<Value, RenderError> {
        let name = hook.template.as_ref().map(TemplateOverride::name);
        match hook.kind {
            WebhookKind::Slack => self.slack_message(digest, name.as_deref()),
            WebhookKind::Generic => {
                let text = self.text(digest, name.as_deref())?;
                let mut body = serde_json::to_value(digest).expect("the digest serializes");
                body["text"] = Value::String(text);
                Ok(body)
            }
        }
    }

    pub fn slack_message(
        &self,
        digest: &Digest,
        template: Option<&str>,
    ) -> Result<Value, RenderError> {
        let rendered = render(&self.slack, template.unwrap_or("slack"), slack_safe(digest))?;
        Ok(slack_payload(&rendered))
    }

    pub fn text(&self, digest: &Digest, template: Option<&str>) -> Result<String, RenderError> {
        let data = serde_json::to_value(digest).expect("the digest serializes");
        render(&self.plain, template.unwrap_or("text"), data)
    }
}

/// Every path a template reads that the digest doesn't have. Strict rendering catches most,
/// but not a condition (`{{#if totals.visiters}}` is simply false), so the template is walked
/// against a busy sample with `#each` and `#with` entering their scope.
fn unknown_paths(elements: &[TemplateElement], scopes: &mut Vec<&Value>) -> Vec<String> {
    let mut unknown = Vec::new();
    for element in elements {
        let (TemplateElement::Expression(helper)
        | TemplateElement::HtmlExpression(helper)
        | TemplateElement::HelperBlock(helper)) = element
        else {
            continue;
        };
        let mut paths: Vec<&Path> = helper
            .params
            .iter()
            .chain(helper.hash.values())
            .filter_map(|p| match p {
                Parameter::Path(path) => Some(path),
                _ => None,
            })
            .collect();
        if let Parameter::Path(path) = &helper.name {
            paths.push(path);
        }
        for path in &paths {
            if let Path::Relative((_, raw)) = path
                && resolve(scopes, raw).is_none()
            {
                unknown.push(raw.clone());
            }
        }
        let name = match &helper.name {
            Parameter::Name(name) => name.as_str(),
            _ => "",
        };
        let entered = match (name, paths.first()) {
            ("each", Some(Path::Relative((_, raw)))) => resolve(scopes, raw)
                .and_then(|list| list.as_array().and_then(|items| items.first())),
            ("with", Some(Path::Relative((_, raw)))) => resolve(scopes, raw),
            _ => None,
        };
        // Inside a block whose scope we can't follow (block params `as |c|`, a scope from a
        // subexpression), nothing is checked: better a misspelling found at 9 am than a valid
        // template refused.
        let scope_known =
            helper.block_param.is_none() && (entered.is_some() || !matches!(name, "each" | "with"));
        if let Some(template) = helper.template.as_ref().filter(|_| scope_known) {
            if let Some(scope) = entered {
                scopes.push(scope);
                unknown.extend(unknown_paths(&template.elements, scopes));
                scopes.pop();
            } else {
                unknown.extend(unknown_paths(&template.elements, scopes));
            }
        }
        if let Some(inverse) = &helper.inverse {
            unknown.extend(unknown_paths(&inverse.elements, scopes));
        }
    }
    unknown.dedup();
    unknown
}

/// A Handlebars path (`totals.visitors`, `../team`, `@root.date`, `this`) in a scope stack.
fn resolve<'a>(scopes: &[&'a Value], raw: &str) -> Option<&'a Value> {
    if raw.starts_with('@') && !raw.starts_with("@root") {
        return scopes.last().copied(); // @index, @first: the helper's own
    }
    let mut depth = scopes.len().checked_sub(1)?;
    let mut rest = raw;
    while let Some(up) = rest.strip_prefix("../") {
        depth = depth.checked_sub(1)?;
        rest = up;
    }
    if let Some(below_root) = rest.strip_prefix("@root") {
        depth = 0;
        rest = below_root;
    }
    let mut value = scopes[depth];
    for field in rest
        .split(['.', '/'])
        .map(|p| p.trim_start_matches('[').trim_end_matches(']'))
        .filter(|p| !p.is_empty() && *p != "this")
    {
        value = match value {
            Value::Object(fields) => fields.get(field)?,
            Value::Array(items) => items.get(field.parse::<usize>().ok()?)?,
            _ => return None,
        }
    }
    Some(value)
}

/// Renders from a context built once: `Handlebars::render` would serialize the data again.
fn render(registry: &Handlebars, name: &str, data: Value) -> Result<String, RenderError> {
    let context = Context::from(data);
    registry
        .render_with_context(name, &context)
        .map_err(|e| RenderError {
            template: name.to_owned(),
            reason: plain_reason(&e),
        })
}

fn plain_reason(e: &handlebars::RenderError) -> String {
    let mut reason = e.to_string();
    if let Some(line) = e.line_no {
        reason = format!("line {line}: {}", e.reason());
    }
    reason
}

fn registry() -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    registry.register_helper("number", Box::new(number));
    registry.register_helper("percent", Box::new(percent));
    registry.register_helper("plural", Box::new(plural));
    registry.register_helper("truncate", Box::new(truncate));
    registry.register_helper("strip", Box::new(strip));
    registry.register_helper("longdate", Box::new(longdate));
    registry.register_helper("daterange", Box::new(daterange));
    registry
}

// The helpers used on every line write straight to the output: `handlebars_helper!` wraps
// each result in a JSON value that is rendered and copied again (8% of a Slack digest).

fn number(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(&thousands(number_param(h, 0)?))?;
    Ok(())
}

fn percent(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(&format!("{:.1}%", number_param(h, 0)?))?;
    Ok(())
}

fn plural(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let n = number_param(h, 0)?;
    let word = text_param(h, if n == 1.0 { 1 } else { 2 })?;
    out.write(&thousands(n))?;
    out.write(" ")?;
    out.write(word)?;
    Ok(())
}

fn truncate(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let max = number_param(h, 1)?;
    out.write(&cut(text_param(h, 0)?, max as usize))?;
    Ok(())
}

fn number_param(h: &Helper, index: usize) -> Result<f64, handlebars::RenderError> {
    h.param(index)
        .and_then(|p| p.value().as_f64())
        .ok_or_else(|| param_error(h, index, "a number"))
}

fn text_param<'a>(h: &'a Helper, index: usize) -> Result<&'a str, handlebars::RenderError> {
    h.param(index)
        .and_then(|p| p.value().as_str())
        .ok_or_else(|| param_error(h, index, "text"))
}

fn param_error(h: &Helper, index: usize, what: &str) -> handlebars::RenderError {
    handlebars::RenderErrorReason::Other(format!(
        "{} needs {what} as argument {}",
        h.name(),
        index + 1
    ))
    .into()
}

handlebars_helper!(strip: |hours: array| activity_strip(hours));
handlebars_helper!(longdate: |date: str| {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map(|d| d.format("%a %-d %b %Y").to_string())
        .unwrap_or_else(|_| date.to_owned())
});

handlebars_helper!(daterange: |first: str, last: str| date_range(first, last));

/// "Thu 18 Mar 2021" for one day; "Fri 20 – Sun 22 Nov 2026" for a span, naming the month and
/// year only where they change.
pub fn date_range(first: &str, last: &str) -> String {
    let parse = |text: &str| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d");
    let (Ok(a), Ok(b)) = (parse(first), parse(last)) else {
        return if first == last {
            first.to_owned()
        } else {
            format!("{first} – {last}")
        };
    };
    use chrono::Datelike;
    let start = if a == b {
        return a.format("%a %-d %b %Y").to_string();
    } else if a.year() != b.year() {
        a.format("%a %-d %b %Y")
    } else if a.month() != b.month() {
        a.format("%a %-d %b")
    } else {
        a.format("%a %-d")
    };
    format!("{start} – {}", b.format("%a %-d %b %Y"))
}

/// `1234567` → `1,234,567`; fractions keep one decimal.
pub fn thousands(n: f64) -> String {
    let whole = n.trunc().abs() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if n.fract() != 0.0 {
        out.push_str(&format!("{:.1}", n.fract().abs())[1..]);
    }
    if n < 0.0 { format!("-{out}") } else { out }
}

/// Twenty-four bars, one per hour from midnight; an hour with no activity is a dot so it is
/// never confused with a quiet one.
pub fn activity_strip(hours: &[Value]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let values: Vec<f64> = hours.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect();
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|&v| {
            if v <= 0.0 || max <= 0.0 {
                '·'
            } else {
                BARS[(((v / max) * 8.0).ceil() as usize).clamp(1, 8) - 1]
            }
        })
        .collect()
}

/// The digest as Slack templates see it: every string (visitor text, and the team name too)
/// passed through [`slack_escape`].
pub fn slack_safe(digest: &Digest) -> Value {
    fn escape_all(value: &mut Value) {
        match value {
            Value::String(text) if needs_escape(text) => *text = slack_escape(text),
            Value::Array(items) => items.iter_mut().for_each(escape_all),
            Value::Object(fields) => fields.values_mut().for_each(escape_all),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(digest).expect("the digest serializes");
    escape_all(&mut value);
    value
}

fn needs_escape(text: &str) -> bool {
    text.chars()
        .any(|c| matches!(c, '&' | '<' | '>') || c.is_control())
}

/// Escapes what Slack's mrkdwn treats as markup (`&`, `<`, `>`) and nothing else, so text reads
/// as the visitor wrote it but can't form `<!channel>`, `<@U…>` or `<url|label>`. Control
/// characters become spaces: a visitor's newline must not start a line of its own in the
/// template's output, where it could pose as a block marker.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Length as Slack counts it.
pub fn slack_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Cuts on a character boundary so the result, with its "…", fits in `max` units. Never
/// leaves half an escape (`&am…`) behind.
pub fn cut(text: &str, max: usize) -> String {
    if slack_len(text) <= max {
        return text.to_owned();
    }
    let mut used = 1; // the ellipsis
    let mut out = String::new();
    for c in text.chars() {
        used += c.len_utf16();
        if used > max {
            break;
        }
        out.push(c);
    }
    if let Some(amp) = out.rfind('&') {
        let tail = &out[amp..];
        if ["&amp;", "&lt;", "&gt;"]
            .iter()
            .any(|entity| entity.starts_with(tail) && entity.len() > tail.len())
        {
            out.truncate(amp);
        }
    }
    out.push('…');
    out
}

/// Keeps whole lines while they fit, then says how many were left out.
fn fit_lines(text: &str, max: usize) -> String {
    if slack_len(text) <= max {
        return text.to_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    let reserve = "_…and 99999 more_".len() + 1;
    let mut kept = Vec::new();
    let mut used = 0;
    for line in &lines {
        let line = cut(line, max - reserve);
        let len = slack_len(&line) + 1;
        if used + len + reserve > max {
            break;
        }
        used += len;
        kept.push(line);
    }
    let mut left = lines.len() - kept.len();
    // The template's own "…and N more" line stands for N entries, not one.
    if left > 0
        && let Some(n) = lines.last().and_then(|line| more_count(line))
    {
        left = left.saturating_add(n - 1);
    }
    if left > 0 {
        kept.push(format!("_…and {left} more_"));
    }
    kept.join("\n")
}

/// N from a "…and N more" line.
fn more_count(line: &str) -> Option<usize> {
    let rest = line.trim().trim_matches('_').strip_prefix("…and ")?;
    rest.strip_suffix(" more")?.parse().ok().filter(|&n| n > 0)
}

/// Builds a Block Kit message from the template's marked-up output (see templates/slack.hbs).
pub fn slack_payload(rendered: &str) -> Value {
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut kind = "section".to_owned();
    let mut lines: Vec<&str> = Vec::new();
    let mut flush = |kind: &str, lines: &mut Vec<&str>| {
        let text = lines.join("\n").trim().to_owned();
        lines.clear();
        if !text.is_empty() || kind == "divider" {
            blocks.push((kind.to_owned(), text));
        }
    };
    for line in rendered.lines() {
        match line.trim() {
            marker @ ("<header>" | "<section>" | "<context>" | "<divider>" | "<text>") => {
                flush(&kind, &mut lines);
                kind = marker.trim_matches(['<', '>']).to_owned();
            }
            _ => lines.push(line),
        }
    }
    flush(&kind, &mut lines);

    let mut fallback = None;
    let mut header = None;
    let mut out = Vec::new();
    let mut budget = MESSAGE_BUDGET;
    let mut dropped = 0;
    for (kind, text) in blocks {
        let block = match kind.as_str() {
            "text" => {
                fallback.get_or_insert(fit_lines(&text, SECTION_LIMIT));
                continue;
            }
            "header" => {
                let text = cut(&text.replace('\n', " "), HEADER_LIMIT);
                header.get_or_insert(text.clone());
                json!({"type": "header", "text": {"type": "plain_text", "text": text, "emoji": true}})
            }
            "context" => context(fit_lines(&text, SECTION_LIMIT)),
            "divider" => json!({"type": "divider"}),
            _ => {
                let mut section = json!({"type": "section", "text": null});
                section["text"] = mrkdwn(fit_lines(&text, SECTION_LIMIT));
                section
            }
        };
        let size = json_size(&block);
        if out.len() + 1 >= MAX_BLOCKS || size > budget {
            dropped += 1;
            continue;
        }
        budget -= size;
        out.push(block);
    }
    if dropped > 0 {
        out.push(context(format!(
            "_…and {dropped} more sections that did not fit in one Slack message_"
        )));
    }
    let text = fallback
        .or(header)
        .unwrap_or_else(|| "Visitor digest".to_owned());
    // Blocks are moved in afterwards: `json!` would serialize every one of them again.
    let mut message = json!({
        "text": text,
        "blocks": null,
        "unfurl_links": false,
        "unfurl_media": false,
    });
    message["blocks"] = Value::Array(out);
    message
}

fn context(text: String) -> Value {
    let mut block = json!({"type": "context", "elements": null});
    block["elements"] = Value::Array(vec![mrkdwn(text)]);
    block
}

/// A block's size as JSON, in bytes (never fewer than the UTF-16 units Slack counts),
/// measured without building the string.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("counting can't fail");
    count.0
}

/// A mrkdwn text object. `verbatim` stops Slack from turning bare URLs into links and from
/// parsing mentions on its own: the only markup in it is what the template wrote.
fn mrkdwn(text: String) -> Value {
    let mut object = json!({"type": "mrkdwn", "text": null, "verbatim": true});
    object["text"] = Value::String(text);
    object
}

/// A Slack message as it reads in a terminal: for `demo` and `once --dry-run` readers.
pub fn terminal(message: &Value) -> String {
    let unescape = |s: &str| {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    let mut out = String::new();
    for block in message["blocks"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("header") => {
                let text = unescape(block["text"]["text"].as_str().unwrap_or_default());
                out.push_str(&format!("{text}\n{}\n", "═".repeat(text.chars().count())));
            }
            Some("section") => {
                out.push_str(&unescape(
                    block["text"]["text"].as_str().unwrap_or_default(),
                ));
                out.push_str("\n\n");
            }
            Some("context") => {
                for element in block["elements"].as_array().into_iter().flatten() {
                    out.push_str(&unescape(element["text"].as_str().unwrap_or_default()));
                    out.push('\n');
                }
            }
            Some("divider") => out.push_str(&format!("{}\n", "─".repeat(40))),
            _ => {}
        }
    }
    out
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
    sample(&report, 1)
}

fn empty_digest() -> Digest {
    sample(&DayReport::default(), 5)
}

fn sample(report: &DayReport, top: usize) -> Digest {
    let zone = Zone::parse("Asia/Kolkata").expect("a known zone");
    let audience = Audience {
        team: "sample",
        account_id: "sample",
        zone,
        top,
    };
    let date = chrono::NaiveDate::from_ymd_opt(2021, 3, 18).expect("a real date");
    rank(&audience, &Window::for_date(zone, date), report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(12.5), "12.5");
    }

    #[test]
    fn the_strip_scales_to_the_busiest_hour() {
        let hours: Vec<Value> = (0..24)
            .map(|h| json!(if h == 12 { 80 } else { h % 3 * 10 }))
            .collect();
        let bars = activity_strip(&hours);
        assert_eq!(bars.chars().count(), 24);
        assert_eq!(bars.chars().nth(12), Some('█'));
        assert_eq!(bars.chars().next(), Some('·'));
        assert_eq!(bars.chars().nth(1), Some('▁'));
        assert_eq!(bars.chars().nth(2), Some('▂'));
    }

    #[test]
    fn escaping_defuses_mentions_and_links_and_nothing_else() {
        assert_eq!(slack_escape("<!channel>"), "&lt;!channel&gt;");
        assert_eq!(
            slack_escape("<https://evil.example|Click> & co"),
            "&lt;https://evil.example|Click&gt; &amp; co"
        );
        assert_eq!(
            slack_escape("*bold* _it_ @here \"q\" 'a'"),
            "*bold* _it_ @here \"q\" 'a'"
        );
        assert_eq!(slack_escape("a\nb"), "a b");
    }

    #[test]
    fn cutting_respects_character_boundaries() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("😀😀😀", 5), "😀😀…");
        assert_eq!(slack_len(&cut(&"é".repeat(200), 150)), 150);
        assert_eq!(cut("ab &amp; c", 6), "ab …");
        assert_eq!(cut("ab &lt;", 7), "ab &lt;");
    }

    #[test]
    fn long_sections_end_with_and_n_more() {
        let text = (0..400)
            .map(|i| format!("line {i:03} xxxxxxxxxx"))
            .collect::<Vec<_>>()
            .join("\n");
        let fitted = fit_lines(&text, SECTION_LIMIT);
        assert!(slack_len(&fitted) <= SECTION_LIMIT);
        let last = fitted.lines().last().unwrap();
        let kept = fitted.lines().count() - 1;
        assert_eq!(last, format!("_…and {} more_", 400 - kept));

        let with_more = format!("{text}\n_…and 600 more_");
        let fitted = fit_lines(&with_more, SECTION_LIMIT);
        let last = fitted.lines().last().unwrap();
        assert_eq!(last, format!("_…and {} more_", 1000 - kept));
    }

    #[test]
    fn markers_become_blocks() {
        let payload = slack_payload(
            "<text>\nfallback\n<header>\nHello\n<section>\nbody\n\n<divider>\n<context>\nsmall",
        );
        assert_eq!(payload["text"], "fallback");
        let kinds: Vec<_> = payload["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["header", "section", "divider", "context"]);
        assert_eq!(payload["unfurl_links"], false);
        assert_eq!(payload["unfurl_media"], false);
    }

    #[test]
    fn too_many_blocks_are_summarised() {
        let rendered = (0..80)
            .map(|i| format!("<section>\ns{i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let payload = slack_payload(&rendered);
        let blocks = payload["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), MAX_BLOCKS);
        assert!(
            blocks
                .last()
                .unwrap()
                .to_string()
                .contains("and 31 more sections")
        );
    }

    #[test]
    fn a_custom_slack_template_cannot_unescape_visitor_text() {
        let source = "<section>\n{{#each countries}}{{{name}}} {{&cca3}} {{truncate name 9}}{{/each}}\n{{#each pages}}{{{url}}}{{/each}}";
        let hook = Webhook {
            name: "slack".into(),
            kind: WebhookKind::Slack,
            url: crate::config::WebhookUrl::parse("https://hooks.slack.com/x").unwrap(),
            template: Some(TemplateOverride {
                path: "raw.hbs".into(),
                source: source.into(),
            }),
        };
        let renderer = Renderer::new([&hook]).unwrap();
        let mut digest = sample_digest();
        digest.countries[0].name = "<!channel>\n<section>\n<@U1>".into();
        digest.countries[0].cca3 = "<!here>".into();
        digest.pages[0].url = "<https://evil.example|Click me> & more".into();
        let message = renderer.body(&hook, &digest).unwrap().to_string();
        assert!(
            !message.contains("<!") && !message.contains("<@"),
            "{message}"
        );
        assert!(!message.contains("<https"), "{message}");
        assert!(
            message.contains("&lt;!channel&gt; &lt;section&gt; &lt;@U1&gt;"),
            "{message}"
        );
        assert!(message.contains("&lt;!here&gt;"), "{message}");
        assert!(message.contains("&lt;!cha…"), "{message}");
        assert!(message.contains("Click me&gt; &amp; more"), "{message}");
        assert_eq!(
            message.matches("\"type\":\"section\"").count(),
            1,
            "{message}"
        );
    }

    #[test]
    fn every_path_a_template_reads_is_checked_in_its_scope() {
        let busy = serde_json::to_value(sample_digest()).unwrap();
        let unknown = |source: &str| {
            let template = Template::compile(source).unwrap();
            unknown_paths(&template.elements, &mut vec![&busy])
        };
        assert_eq!(unknown(SLACK_TEMPLATE), Vec::<String>::new());
        assert_eq!(unknown(TEXT_TEMPLATE), Vec::<String>::new());
        let fine = "{{#each countries}}{{@index}} {{name}} {{../team}} {{@root.date}}{{/each}}\
                    {{#each hours}}{{this}}{{/each}}{{#with totals}}{{visitors}}{{/with}}\
                    {{#if more.pages}}{{number more.pages}}{{else}}{{team}}{{/if}}";
        assert_eq!(unknown(fine), Vec::<String>::new());
        let unusual = "{{#each countries as |c i|}}{{c.name}}{{i}}{{/each}}{{[team]}}\
                       {{#with (lookup countries 0)}}{{name}}{{/with}}{{#each pages}}{{@key}}{{/each}}";
        assert_eq!(unknown(unusual), Vec::<String>::new());
        assert_eq!(
            unknown(
                "{{#if totals.visiters}}{{/if}}{{#each pages}}{{#unless urll}}{{/unless}}{{/each}}"
            ),
            ["totals.visiters", "urll"]
        );
        assert_eq!(
            unknown("{{plural totals.chatz \"a\" \"b\"}}"),
            ["totals.chatz"]
        );
        assert_eq!(unknown("{{#each countries}}{{team}}{{/each}}"), ["team"]);
    }

    #[test]
    fn the_builtin_templates_render_both_samples_strictly() {
        let renderer = Renderer::builtin();
        for digest in [sample_digest(), empty_digest()] {
            renderer.slack_message(&digest, None).unwrap();
            renderer.text(&digest, None).unwrap();
        }
        let empty = renderer.text(&empty_digest(), None).unwrap();
        assert!(empty.contains("No visitors on Thu 18 Mar 2021"), "{empty}");
    }
}
