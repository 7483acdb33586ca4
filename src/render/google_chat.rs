//! Google Chat incoming webhooks: a `cardsV2` card plus a notification `text`. Visitor text is
//! HTML-escaped (cards take a subset of HTML) with links broken, so `<users/all>` or a link
//! can't come from the data, in the card or in `text`.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::Kind;
use super::text::{fit_lines, fit_parts, fit_text, html};

pub struct GoogleChat;

/// Below Google Chat's 32,000 bytes for a message.
const MAX_BYTES: usize = 30_000;
const MAX_TEXT: usize = 8000;

impl Kind for GoogleChat {
    fn template(&self) -> &'static str {
        include_str!("../../templates/google_chat.hbs")
    }

    fn escape<'a>(&self, text: &'a str) -> Cow<'a, str> {
        html(text)
    }

    fn fit(&self, mut body: Value) -> Result<Value, String> {
        let has_text = body["text"].as_str().is_some_and(|t| !t.trim().is_empty());
        let has_card = body["cardsV2"][0]["card"].is_object();
        if !has_text && !has_card {
            return Err("a Google Chat message needs \"text\" or a card in \"cardsV2\"".into());
        }
        fit_text(body.get_mut("text"), MAX_TEXT, fit_lines);
        for card in body
            .get_mut("cardsV2")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            for section in card
                .pointer_mut("/card/sections")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                for widget in section
                    .get_mut("widgets")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    let text = (widget.get_mut("textParagraph")).and_then(|p| p.get_mut("text"));
                    fit_text(text, MAX_TEXT, fit_lines);
                }
            }
        }
        fit_parts(
            &mut body,
            "/cardsV2/0/card/sections",
            usize::MAX,
            MAX_BYTES,
            |n| {
                json!({"widgets": [{"textParagraph": {"text":
                format!("<i>…and {n} more sections that did not fit in one Google Chat message</i>")}}]})
            },
        );
        Ok(body)
    }

    fn preview(&self, body: &Value) -> String {
        let card = &body["cardsV2"][0]["card"];
        let title = plain(card["header"]["title"].as_str().unwrap_or_default());
        let mut out = format!("{title}\n{}\n", "═".repeat(title.chars().count()));
        if let Some(subtitle) = card["header"]["subtitle"].as_str() {
            out.push_str(&format!("{}\n", plain(subtitle)));
        }
        for section in card["sections"].as_array().into_iter().flatten() {
            out.push('\n');
            if let Some(header) = section["header"].as_str() {
                out.push_str(&format!("{}\n", plain(header)));
            }
            for widget in section["widgets"].as_array().into_iter().flatten() {
                if let Some(text) = widget["textParagraph"]["text"].as_str() {
                    out.push_str(&format!("{}\n", plain(text).trim_end()));
                }
            }
        }
        out
    }
}

/// Card HTML as it reads: tags dropped, entities decoded.
fn plain(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}
