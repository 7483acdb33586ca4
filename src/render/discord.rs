//! Discord incoming webhooks: `content` plus embeds. Posted with `?wait=true`, so a 200 means
//! Discord stored the message. `allowed_mentions` is empty whatever a template says; visitor
//! text is Markdown-escaped, with `@` and links broken ([`super::text::defang`]), so no link
//! from the data is embedded either.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::{Value, json};

use super::text::{cut, fit_lines, fit_text, unmarkdown};
use super::{Answer, Kind, receiver_message};

pub struct Discord;

// Discord's documented limits, in characters.
const CONTENT: usize = 2000;
const MAX_EMBEDS: usize = 10;
const TITLE: usize = 256;
const DESCRIPTION: usize = 4096;
const MAX_FIELDS: usize = 25;
const FIELD_NAME: usize = 256;
const FIELD_VALUE: usize = 1024;
const FOOTER: usize = 2048;
const ALL_EMBEDS: usize = 6000;
/// `SUPPRESS_EMBEDS`: no link previews. Only without our own embeds, which it would hide too.
const SUPPRESS_EMBEDS: u64 = 1 << 2;

impl Kind for Discord {
    fn template(&self) -> &'static str {
        include_str!("../../templates/discord.hbs")
    }

    fn escape<'a>(&self, text: &'a str) -> Cow<'a, str> {
        super::text::markdown(text)
    }

    fn message(&self, text: &str) -> Result<Value, String> {
        let content = self.escape(&super::text::clean(text)).into_owned();
        self.fit(serde_json::json!({ "content": content }))
    }

    fn fit(&self, mut body: Value) -> Result<Value, String> {
        let content = body["content"]
            .as_str()
            .is_some_and(|c| !c.trim().is_empty());
        let embeds = body["embeds"].as_array().is_some_and(|e| !e.is_empty());
        if !content && !embeds {
            return Err("a Discord message needs content or embeds".into());
        }
        fit_text(body.get_mut("content"), CONTENT, fit_lines);
        if let Some(embeds) = body.get_mut("embeds").and_then(Value::as_array_mut) {
            embeds.truncate(MAX_EMBEDS);
            for embed in embeds.iter_mut() {
                fit_text(embed.get_mut("title"), TITLE, cut);
                fit_text(embed.get_mut("description"), DESCRIPTION, fit_lines);
                for (object, key, max) in [("footer", "text", FOOTER), ("author", "name", TITLE)] {
                    if let Some(object) = embed.get_mut(object) {
                        fit_text(object.get_mut(key), max, cut);
                    }
                }
                if let Some(fields) = embed.get_mut("fields").and_then(Value::as_array_mut) {
                    fields.truncate(MAX_FIELDS);
                    for field in fields {
                        fit_text(field.get_mut("name"), FIELD_NAME, cut);
                        fit_text(field.get_mut("value"), FIELD_VALUE, fit_lines);
                    }
                }
            }
            fit_total(embeds);
        }
        body["allowed_mentions"] = json!({"parse": []});
        if !embeds {
            let flags = body["flags"].as_u64().unwrap_or(0);
            body["flags"] = (flags | SUPPRESS_EMBEDS).into();
        }
        Ok(body)
    }

    fn url(&self, url: &url::Url) -> url::Url {
        let mut url = url.clone();
        let others: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "wait")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(others)
            .append_pair("wait", "true");
        url
    }

    /// 200 with the stored message (because of `wait=true`); a 429 says in its body how long
    /// to wait, in seconds.
    fn answer(&self, status: u16, body: &str) -> Answer {
        if (200..300).contains(&status) {
            return Answer::Delivered;
        }
        let after = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|b| b["retry_after"].as_f64())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        Answer::Failed {
            message: receiver_message(body),
            after,
        }
    }

    fn preview(&self, body: &Value) -> String {
        let text = |v: &Value| unmarkdown(&v.as_str().unwrap_or_default().replace("**", ""));
        let mut out = format!("{}\n\n", text(&body["content"]));
        for embed in body["embeds"].as_array().into_iter().flatten() {
            let title = text(&embed["title"]);
            out.push_str(&format!(
                "┃ {title}\n┃ {}\n",
                "═".repeat(title.chars().count())
            ));
            for line in text(&embed["description"]).lines() {
                out.push_str(&format!("┃ {line}\n"));
            }
            for field in embed["fields"].as_array().into_iter().flatten() {
                out.push_str(&format!("┃\n┃ {}\n", text(&field["name"])));
                for line in text(&field["value"]).lines() {
                    out.push_str(&format!("┃ {line}\n"));
                }
            }
            if let Some(footer) = embed["footer"]["text"].as_str() {
                out.push_str(&format!("┃ {footer}\n"));
            }
        }
        out
    }
}

/// What Discord counts toward the 6,000 characters of a message's embeds.
fn embed_chars(embed: &Value) -> usize {
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    let fields: usize = embed["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| len(&f["name"]) + len(&f["value"]))
        .sum();
    len(&embed["title"])
        + len(&embed["description"])
        + len(&embed["footer"]["text"])
        + len(&embed["author"]["name"])
        + fields
}

/// Drops fields, then embeds, from the end until all embeds fit in 6,000 characters, and says
/// so in a last field.
fn fit_total(embeds: &mut Vec<Value>) {
    const NOTE: usize = 80;
    let total = |embeds: &Vec<Value>| embeds.iter().map(embed_chars).sum::<usize>();
    let mut dropped = 0;
    while total(embeds) + NOTE > ALL_EMBEDS && !embeds.is_empty() {
        let count = embeds.len();
        let last = embeds.last_mut().expect("not empty");
        match last["fields"].as_array_mut() {
            Some(fields) if !fields.is_empty() => {
                fields.pop();
            }
            _ if count > 1 => {
                embeds.pop();
            }
            // One embed without fields: its description is at most 4,096.
            _ => break,
        }
        dropped += 1;
    }
    if dropped > 0
        && let Some(last) = embeds.last_mut().filter(|last| last.is_object())
    {
        if !last["fields"].is_array() {
            last["fields"] = json!([]);
        }
        if let Some(fields) = last["fields"].as_array_mut() {
            fields.push(json!({"name": "…", "value": format!("…and {dropped} more that did not fit in one Discord message")}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_body_is_cut_to_discords_limits_and_can_mention_nobody() {
        let field = json!({"name": "n".repeat(300), "value": "v\n".repeat(1000)});
        let embed =
            json!({"title": "t".repeat(300), "description": "d", "fields": vec![field; 30]});
        let body = json!({
            "content": "@everyone ".repeat(300),
            "embeds": vec![embed; 12],
            "allowed_mentions": {"parse": ["everyone"]},
        });
        let body = Discord.fit(body).unwrap();
        assert_eq!(body["allowed_mentions"], json!({"parse": []}));
        assert!(body["content"].as_str().unwrap().chars().count() <= CONTENT);
        let embeds = body["embeds"].as_array().unwrap();
        assert!(embeds.len() <= MAX_EMBEDS);
        assert!(embeds.iter().map(embed_chars).sum::<usize>() <= ALL_EMBEDS);
        let last = embeds.last().unwrap()["fields"].as_array().unwrap();
        let note = last.last().unwrap()["value"].as_str().unwrap();
        assert!(note.contains("more that did not fit"), "{note}");
        // Our own embeds stay visible: link previews are only suppressed without them.
        assert!(body.get("flags").is_none());
        let plain = Discord.fit(json!({"content": "hi"})).unwrap();
        assert_eq!(plain["flags"], SUPPRESS_EMBEDS);
    }

    #[test]
    fn discord_is_asked_to_wait_and_its_retry_after_is_read() {
        let url =
            url::Url::parse("https://discord.com/api/webhooks/1/t?thread_id=9&wait=false").unwrap();
        assert_eq!(Discord.url(&url).query(), Some("thread_id=9&wait=true"));
        let answer = Discord.answer(429, r#"{"message": "slow down", "retry_after": 0.25}"#);
        assert_eq!(
            answer,
            Answer::Failed {
                message: "slow down".into(),
                after: Some(Duration::from_millis(250))
            }
        );
    }
}
