//! `demo`: the main job on an embedded default. Starts the simulator in-process, builds
//! yesterday's digest for a few example teams in different timezones, and renders each as it
//! would read in Slack. Nothing is posted.

use std::path::Path;

use chrono::Utc;

use crate::clock::WallClock;
use crate::config;
use crate::pipeline::Pipeline;
use crate::schedule::Window;
use crate::simulator::{self, SimulatorOptions};

const DEMO_CONFIG: &str = r#"
[acquire]
base_url = "{simulator}"

[[teams]]
name = "support-apac"
account_id = "acme"
api_key = "demo-key"
timezone = "Asia/Kolkata"
schedule = "0 9 * * *"

[[teams.webhooks]]
kind = "slack"
url = "https://hooks.slack.com/services/DEMO"

[[teams]]
name = "sales-emea"
account_id = "globex"
api_key = "demo-key"
timezone = "Europe/Berlin"
schedule = "30 8 * * 1-5"
top = 3

[[teams.webhooks]]
kind = "slack"
url = "https://hooks.slack.com/services/DEMO"

[[teams]]
name = "growth-americas"
account_id = "initech"
api_key = "demo-key"
timezone = "America/New_York"
schedule = "0 9 * * *"

[[teams.webhooks]]
kind = "slack"
url = "https://hooks.slack.com/services/DEMO"
"#;

/// The demo's whole output; `bold` shows Slack's `*bold*` as a terminal's bold.
pub async fn run(bold: bool) -> anyhow::Result<String> {
    let simulator = simulator::spawn(SimulatorOptions::default()).await?;
    let text = DEMO_CONFIG.replace("{simulator}", &simulator.base_url());
    let config = config::parse(&text, Path::new("."), &|_| None)
        .map_err(|problems| anyhow::anyhow!("the demo config is invalid: {problems:?}"))?;
    let pipeline = Pipeline::new(&config, None, WallClock::new());
    let now = Utc::now();
    let mut out = String::new();
    for team in &config.teams {
        let span = Window::yesterday(team.zone, now).span;
        let digest = pipeline.digest(team, span).await?;
        let hook = &team.webhooks[0];
        let message = pipeline.renderer.body(hook, &digest)?;
        out.push_str(&format!(
            "┌─ #{} · account {} · {} · schedule \"{}\"\n\n",
            team.name,
            team.account_id,
            team.zone,
            team.schedule.as_str()
        ));
        let text = pipeline.renderer.preview(hook, &message);
        out.push_str(&if bold { ansi_bold(&text) } else { text });
        out.push('\n');
    }
    out.push_str(
        "These digests came from the built-in simulator. To post real ones, copy config.toml,\n\
         fill in your account and Slack webhook, run `acquire-digest check`, then `acquire-digest once`.\n",
    );
    Ok(out)
}

/// `*x*` → x in ANSI bold, pair by pair within a line; a lone `*` stays as it is.
fn ansi_bold(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let parts: Vec<&str> = line.split('*').collect();
            let pairs = (parts.len() - 1) / 2 * 2;
            let mut out = String::with_capacity(line.len() + 16);
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    out.push_str(match i {
                        i if i > pairs => "*",
                        i if i % 2 == 1 => "\x1b[1m",
                        _ => "\x1b[22m",
                    });
                }
                out.push_str(part);
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bold_pairs_become_ansi_and_a_lone_star_stays() {
        assert_eq!(
            ansi_bold("*131 visitors* · *200 chats*\nplain\n"),
            "\x1b[1m131 visitors\x1b[22m · \x1b[1m200 chats\x1b[22m\nplain\n"
        );
        assert_eq!(ansi_bold("a *b* c * d"), "a \x1b[1mb\x1b[22m c * d");
    }
}
