//! What `check`, `once` and a reload accept: the config, and then every webhook's template
//! rendered by its kind. Composed here so that `config` knows nothing of rendering.

use std::path::Path;

use crate::config::{self, Config, ConfigErrors, Problem};
use crate::render::Renderer;

/// [`config::load`], then each template tried on a busy and an empty sample day.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    config::load(path).and_then(|config| templates(path, config))
}

/// A loaded config, if every template in it works; `path` names the file in errors.
pub fn templates(path: &Path, config: Config) -> Result<Config, ConfigErrors> {
    let mut problems = template_problems(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        config::locate(
            &std::fs::read_to_string(path).unwrap_or_default(),
            &mut problems,
        );
        Err(ConfigErrors {
            file: path.to_owned(),
            problems,
        })
    }
}

fn template_problems(config: &Config) -> Vec<Problem> {
    let hooks = config.teams.iter().flat_map(|t| &t.webhooks);
    let renderer = Renderer::new(hooks);
    let mut problems = Vec::new();
    for team in &config.teams {
        for (i, hook) in team.webhooks.iter().enumerate() {
            if let (Some(template), Some(message)) = (&hook.template, renderer.problem(hook)) {
                problems.push(Problem {
                    // By index, as the file has it: so `locate` finds this webhook's line.
                    place: format!("team {:?}.webhooks[{i}].template", team.name),
                    message: format!(
                        "{}: {message}; variables are the fields of the digest listed in README.md",
                        template.path.display()
                    ),
                    at: None,
                });
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[[teams]]
name = "support-apac"
account_id = "acme"
api_key = "key-1234"
timezone = "Asia/Kolkata"
schedule = "0 9 * * *"

[[teams.webhooks]]
kind = "slack"
url = "https://hooks.slack.com/services/T0/B0/X"
template = "t.hbs"
"#;

    /// The config's problems, else its templates'.
    fn parse(text: &str, dir: &Path) -> Result<Config, Vec<Problem>> {
        let config = config::parse(text, dir, &|_| None)?;
        let problems = template_problems(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    fn problems_with(template: &str) -> Vec<Problem> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.hbs"), template).unwrap();
        parse(CONFIG, dir.path()).err().unwrap_or_default()
    }

    #[test]
    fn a_broken_template_is_located_at_its_own_webhook() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.hbs"), "{\"text\": \"{{team}}\"}").unwrap();
        std::fs::write(dir.path().join("t.hbs"), "{{#each countries}}\n").unwrap();
        let text = CONFIG.replace(
            "[[teams.webhooks]]",
            "[[teams.webhooks]]\nname = \"first\"\nkind = \"generic\"\nurl = \"https://example.com/in\"\ntemplate = \"good.hbs\"\n\n[[teams.webhooks]]",
        );
        let mut problems = parse(&text, dir.path()).unwrap_err();
        config::locate(&text, &mut problems);
        let line = text
            .lines()
            .position(|l| l == "template = \"t.hbs\"")
            .unwrap()
            + 1;
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(
            problems[0].at.map(|at| at.line),
            Some(line),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_broken_or_misspelt_template_is_caught_before_9am() {
        for (template, words) in [
            ("{\"text\": \"{{totals.visiters}}\"}", "visiters"),
            ("{{#each countries}}\n", "t.hbs"),
            (
                "{\"text\": \"{{#each countries}}{{nmae}}{{/each}}\"}",
                "nmae",
            ),
            ("{{#if totals.visiters}}{}{{/if}}", "no totals.visiters"),
            (
                "{\"text\": \"{{#each countries}}{{#if shar}}{{name}}{{/if}}{{/each}}\"}",
                "no shar",
            ),
            ("{\"blocks\": 3}", "blocks"),
        ] {
            let problems = problems_with(template);
            assert!(
                problems
                    .iter()
                    .any(|p| p.place == "team \"support-apac\".webhooks[0].template"
                        && p.message.contains(words)),
                "{template}: {problems:#?}"
            );
        }
        assert_eq!(
            problems_with("{\"text\": \"{{team}}: {{number totals.visitors}}\"}"),
            []
        );
    }

    #[test]
    fn a_template_must_be_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.hbs");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        for (path, words) in [
            (fifo.to_str().unwrap(), "not a regular file"),
            ("/dev/urandom", "not a regular file"),
            ("nowhere.hbs", "cannot read"),
        ] {
            let text = CONFIG.replace("t.hbs", path);
            let started = std::time::Instant::now();
            let problems = parse(&text, dir.path()).unwrap_err();
            assert!(started.elapsed() < std::time::Duration::from_secs(2));
            assert!(problems[0].message.contains(words), "{problems:?}");
        }
        std::fs::write(dir.path().join("big.hbs"), "x".repeat(300 * 1024)).unwrap();
        let problems = parse(&CONFIG.replace("t.hbs", "big.hbs"), dir.path());
        assert!(
            problems.unwrap_err()[0]
                .message
                .contains("larger than 256 KiB")
        );
    }
}
