//! Slack incoming webhooks: a Block Kit message. Visitor text has `& < >` escaped (and nothing
//! else, so it reads as written): no mention (`<!channel>`, `<@U…>`) or link (`<url|label>`)
//! can form. Every mrkdwn text is `verbatim`, so Slack neither links bare URLs nor parses a
//! typed `@here`; unfurling is off.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::text::{cut, fit_lines, fit_parts, fit_text};
use super::{Answer, Kind};

pub struct Slack;

/// Slack's documented limits, in UTF-16 units (what Slack counts).
const HEADER_LIMIT: usize = 150;
const SECTION_LIMIT: usize = 3000;
const MAX_BLOCKS: usize = 50;
/// Far below Slack's 40,000 so the JSON overhead never matters.
const MESSAGE_BUDGET: usize = 30_000;

impl Kind for Slack {
    fn template(&self) -> &'static str {
        include_str!("../../templates/slack.hbs")
    }

    fn escape<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !text.contains(['&', '<', '>']) {
            return Cow::Borrowed(text);
        }
        Cow::Owned(
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;"),
        )
    }

    fn fit(&self, mut body: Value) -> Result<Value, String> {
        let has_text = body["text"].as_str().is_some_and(|t| !t.trim().is_empty());
        if !has_text && !body["blocks"].is_array() {
            return Err("a Slack message needs a \"text\" or a \"blocks\" list".into());
        }
        if !body["blocks"].is_array() && !body["blocks"].is_null() {
            return Err("\"blocks\" must be a list of Block Kit blocks".into());
        }
        fit_text(body.get_mut("text"), SECTION_LIMIT, fit_lines);
        for block in body
            .get_mut("blocks")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if block["type"] == "header"
                && let Some(text) = block["text"]["text"].as_str()
            {
                block["text"]["text"] = cut(&text.replace('\n', " "), HEADER_LIMIT).into();
            }
            // Not `pointer_mut`, which makes a string of each step: a tenth of fitting a message.
            let text = block.get_mut("text").and_then(|t| t.get_mut("text"));
            fit_text(text, SECTION_LIMIT, fit_lines);
            for element in block
                .get_mut("elements")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                fit_text(element.get_mut("text"), SECTION_LIMIT, fit_lines);
            }
        }
        verbatim(&mut body);
        fit_parts(&mut body, "/blocks", MAX_BLOCKS, MESSAGE_BUDGET, |n| {
            json!({"type": "context", "elements": [{"type": "mrkdwn", "verbatim": true,
                "text": format!("_…and {n} more sections that did not fit in one Slack message_")}]})
        });
        body["unfurl_links"] = false.into();
        body["unfurl_media"] = false.into();
        Ok(body)
    }

    fn answer(&self, status: u16, body: &str) -> Answer {
        if status == 200 && body.trim() == "ok" {
            Answer::Delivered
        } else {
            Answer::Failed {
                message: body.to_owned(),
                after: None,
            }
        }
    }

    fn preview(&self, message: &Value) -> String {
        let unescape = |s: &str| {
            s.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        };
        let mut out = String::new();
        for block in message["blocks"].as_array().into_iter().flatten() {
            let text = unescape(block["text"]["text"].as_str().unwrap_or_default());
            match block["type"].as_str() {
                Some("header") => {
                    out.push_str(&format!("{text}\n{}\n", "═".repeat(text.chars().count())))
                }
                Some("section") => out.push_str(&format!("{text}\n\n")),
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
}

/// Every mrkdwn text object, wherever a template put it, gets `verbatim`.
fn verbatim(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            if fields.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                fields.insert("verbatim".into(), true.into());
            }
            fields.values_mut().for_each(verbatim);
        }
        Value::Array(items) => items.iter_mut().for_each(verbatim),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_body_keeps_its_footer_and_summarises_what_did_not_fit() {
        let sections: Vec<Value> = (0..80)
            .map(
                |i| json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("s{i}")}}),
            )
            .collect();
        let body = Slack
            .fit(json!({"text": "x", "blocks": sections, "unfurl_links": true}))
            .unwrap();
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), MAX_BLOCKS);
        assert_eq!(blocks[49]["text"]["text"], "s79");
        assert!(blocks[48].to_string().contains("and 31 more sections"));
        assert_eq!(blocks[0]["text"]["verbatim"], true);
        assert_eq!(body["unfurl_links"], false);
        assert!(Slack.fit(json!({"blocks": 3})).is_err());
    }
}
