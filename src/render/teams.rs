//! Microsoft Teams Workflows (Power Automate) webhooks: an Adaptive Card in `attachments`.
//! Visitor text belongs in TextRuns, which Teams shows as plain text; it arrives with links
//! broken in case a template puts it in a (Markdown) TextBlock. `msteams.entities`, the only
//! way a card can mention anyone, is removed whatever a template wrote.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::Kind;
use super::text::{cut, defang, fit_parts, fit_text};

pub struct Teams;

const CARD: &str = "application/vnd.microsoft.card.adaptive";
/// Below Teams' 28 KB for a message, leaving room for what the Workflow adds.
const MAX_BYTES: usize = 20_000;
const MAX_TEXT: usize = 4000;

impl Kind for Teams {
    fn template(&self) -> &'static str {
        include_str!("../../templates/teams.hbs")
    }

    fn escape<'a>(&self, text: &'a str) -> Cow<'a, str> {
        defang(text)
    }

    fn message(&self, text: &str) -> Result<Value, String> {
        let block = json!({"type": "TextBlock", "wrap": true, "text": self.escape(&super::text::clean(text))});
        self.fit(
            json!({"type": "message", "attachments": [{"contentType": CARD, "content": {
            "type": "AdaptiveCard", "version": "1.4", "body": [block]}}]}),
        )
    }

    fn fit(&self, mut body: Value) -> Result<Value, String> {
        let card = &body["attachments"][0];
        if card["contentType"] != CARD || card["content"]["type"] != "AdaptiveCard" {
            return Err(format!(
                "a Teams message needs an Adaptive Card in attachments[0] (contentType \"{CARD}\", content.type \"AdaptiveCard\")"
            ));
        }
        if !card["content"]["body"].is_array() {
            return Err("the Adaptive Card needs a \"body\" list".into());
        }
        inert(&mut body);
        fit_parts(
            &mut body,
            "/attachments/0/content/body",
            usize::MAX,
            MAX_BYTES,
            |n| {
                json!({"type": "TextBlock", "isSubtle": true, "wrap": true,
                "text": format!("…and {n} more lines that did not fit in one Teams message")})
            },
        );
        Ok(body)
    }

    fn preview(&self, body: &Value) -> String {
        let mut out = String::new();
        for element in body["attachments"][0]["content"]["body"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let line = match element["type"].as_str() {
                Some("TextBlock") => element["text"]
                    .as_str()
                    .unwrap_or_default()
                    .replace("**", ""),
                Some("RichTextBlock") => element["inlines"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|run| run["text"].as_str().or(run.as_str()))
                    .collect(),
                _ => continue,
            };
            if element["weight"] == "Bolder" && !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&line);
            out.push('\n');
            if element["size"] == "Large" {
                out.push_str(&format!("{}\n", "═".repeat(line.chars().count())));
            }
        }
        out
    }
}

/// No mention entities anywhere, and no text longer than a card shows.
fn inert(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                match (key.as_str(), &mut *field) {
                    ("msteams", Value::Object(msteams)) => _ = msteams.remove("entities"),
                    ("text", text) => fit_text(Some(text), MAX_TEXT, cut),
                    _ => {}
                }
                inert(field);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(inert),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_is_cut_under_20_kb_and_mentions_nobody() {
        let runs: Vec<Value> = (0..500)
            .map(|i| json!({"type": "TextBlock", "text": format!("{i} {}", "x".repeat(100))}))
            .chain([json!({"type": "TextBlock", "text": "footer"})])
            .collect();
        let body = json!({"type": "message", "attachments": [{"contentType": CARD, "content": {
            "type": "AdaptiveCard", "body": runs,
            "msteams": {"entities": [{"type": "mention", "text": "<at>All</at>"}]}}}]});
        let body = Teams.fit(body).unwrap();
        assert!(super::super::text::json_size(&body) <= MAX_BYTES);
        let card = &body["attachments"][0]["content"];
        assert_eq!(card["msteams"], json!({}));
        let elements = card["body"].as_array().unwrap();
        assert_eq!(elements.last().unwrap()["text"], "footer");
        let note = elements[elements.len() - 2]["text"].as_str().unwrap();
        assert!(
            note.ends_with("more lines that did not fit in one Teams message"),
            "{note}"
        );
        assert!(Teams.fit(json!({"text": "plain"})).is_err());
    }
}
