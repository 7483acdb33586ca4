//! Mattermost incoming webhooks: one Markdown `text`. Visitor text is Markdown-escaped, and
//! `@` gets a zero-width joiner after it, so `@channel`, `@here`, `@all` and `@someone` read as
//! written but notify nobody; `<!channel>` is escaped too. With every link from the data
//! broken there is nothing to unfurl.

use std::borrow::Cow;

use serde_json::Value;

use super::Kind;
use super::text::{fit_lines, fit_text, markdown, unmarkdown};

pub struct Mattermost;

/// Mattermost's limit for a post, in characters.
const MAX_TEXT: usize = 16_383;

impl Kind for Mattermost {
    fn template(&self) -> &'static str {
        include_str!("../../templates/mattermost.hbs")
    }

    fn escape<'a>(&self, text: &'a str) -> Cow<'a, str> {
        markdown(text)
    }

    fn fit(&self, mut body: Value) -> Result<Value, String> {
        if body["text"].as_str().is_none_or(|t| t.trim().is_empty()) {
            return Err("a Mattermost message needs a \"text\"".into());
        }
        fit_text(body.get_mut("text"), MAX_TEXT, fit_lines);
        Ok(body)
    }

    fn preview(&self, body: &Value) -> String {
        let text = unmarkdown(body["text"].as_str().unwrap_or_default());
        format!("{}\n", text.replace("**", "").trim_start_matches("#### "))
    }
}
