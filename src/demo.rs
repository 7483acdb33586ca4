//! `demo`: the main job on an embedded default. Starts the simulator in-process, builds
//! yesterday's digest for a few example teams in different timezones, and renders each as it
//! would read in Slack. Nothing is posted.

use std::path::Path;

use chrono::Utc;

use crate::config;
use crate::pipeline::Pipeline;
use crate::render::terminal;
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

/// The demo's whole output.
pub async fn run() -> anyhow::Result<String> {
    let simulator = simulator::spawn(SimulatorOptions::default()).await?;
    let text = DEMO_CONFIG.replace("{simulator}", &simulator.base_url());
    let config = config::parse(&text, Path::new("."), &|_| None)
        .map_err(|problems| anyhow::anyhow!("the demo config is invalid: {problems:?}"))?;
    let pipeline = Pipeline::new(&config, None);
    let now = Utc::now();
    let mut out = String::new();
    for team in &config.teams {
        let date = Window::yesterday(team.zone, now).date;
        let digest = pipeline.digest(team, date).await?;
        let message = config.renderer.slack_message(&digest, None)?;
        out.push_str(&format!(
            "┌─ #{} · account {} · {} · schedule \"{}\"\n\n",
            team.name,
            team.account_id,
            team.zone,
            team.schedule.as_str()
        ));
        out.push_str(&terminal(&message));
        out.push('\n');
    }
    out.push_str(
        "These digests came from the built-in simulator. To post real ones, copy config.toml,\n\
         fill in your account and Slack webhook, run `acquire-digest check`, then `acquire-digest once`.\n",
    );
    Ok(out)
}
