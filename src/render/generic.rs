//! Generic webhooks: the digest itself as JSON (a public contract, its strings unaltered for
//! the receiver to escape for its own medium), plus `text` rendered from a plain-text template
//! over the cleaned digest.

use std::borrow::Cow;

use serde_json::Value;

use super::Kind;
use crate::rank::Digest;

pub struct Generic;

impl Kind for Generic {
    fn template(&self) -> &'static str {
        include_str!("../../templates/text.hbs")
    }

    fn escape<'a>(&self, text: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(text)
    }

    fn writes_json(&self) -> bool {
        false
    }

    fn body(&self, rendered: &str, digest: &Digest) -> Result<Value, String> {
        let mut body = serde_json::to_value(digest).expect("the digest serializes");
        body["text"] = Value::String(rendered.to_owned());
        Ok(body)
    }

    fn fit(&self, body: Value) -> Result<Value, String> {
        Ok(body)
    }

    fn preview(&self, body: &Value) -> String {
        body["text"].as_str().unwrap_or_default().to_owned()
    }
}
