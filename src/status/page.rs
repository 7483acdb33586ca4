//! The status page `run` serves at `/`: the same [`Status`] as `acquire-digest status`, as one
//! self-contained HTML page (no scripts, styles inline, no external assets) that refreshes
//! itself, for an operator without a shell on the host.
//!
//! Only config names and the daemon's own words reach it, escaped; an upstream's body excerpt
//! (which can quote what visitors typed) is cut from errors: `status` shows errors whole.

use chrono::{DateTime, Utc};
use handlebars::html_escape;

use crate::render::thousands;

use super::{SpanStatus, Status, TeamStatus};

/// Seconds between the page's own reloads.
const REFRESH_SECS: u32 = 30;

/// Teams shown on the page, those needing attention first. Every team's section at 100,000
/// teams was 33 MB of HTML, rebuilt on each refresh, that no browser shows usefully; `status`
/// lists them all.
const TEAMS_SHOWN: usize = 200;

/// The page for `status`, with `alarms` (the ledger unreachable, a reload rejected) as red
/// banners above it. No status (the ledger not open or unreachable) claims nothing: not that
/// everything was delivered, nor that anything is pending, nor that no team is configured.
pub fn page(status: Option<&Status>, alarms: &[String], now: DateTime<Utc>) -> String {
    let mut html = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECS}">
<title>acquire-digest status</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 60rem; padding: 0 1rem; color: #1d1d1f; }}
h1 {{ font-size: 1.4rem; margin: 0; }}
h2 {{ font-size: 1.1rem; margin: 1.6rem 0 .2rem; }}
.meta, .next {{ color: #555; margin: .2rem 0; }}
.alarm {{ background: #b3261e; color: #fff; padding: .7rem 1rem; border-radius: 6px; margin: 1rem 0; font-weight: 600; }}
table {{ border-collapse: collapse; width: 100%; margin-top: .4rem; }}
th, td {{ text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #ddd; vertical-align: top; }}
th {{ font-weight: 600; color: #555; }}
.state {{ font-weight: 600; white-space: nowrap; }}
.ok .state {{ color: #1b7f3a; }}
.bad .state {{ color: #b3261e; }}
.wait .state {{ color: #8a5a00; }}
a {{ color: #0b57d0; }}
</style>
</head>
<body>
<h1>acquire-digest</h1>
<p class="meta">As of {} · {} · refreshes every {REFRESH_SECS} s · <a href="/metrics">metrics</a> · <a href="/-/healthy">healthy</a> · <a href="/-/ready">ready</a></p>
"#,
        now.format("%Y-%m-%d %H:%M:%S UTC"),
        match status {
            Some(status) if status.ok => "everything due was delivered",
            Some(_) => "not everything due was delivered",
            None => "what was delivered is not known",
        }
    );
    for alarm in alarms {
        html.push_str(&format!(
            "<div class=\"alarm\" role=\"alert\">{}</div>\n",
            html_escape(alarm)
        ));
    }
    let Some(status) = status else {
        html.push_str("</body>\n</html>\n");
        return html;
    };
    if status.teams.is_empty() {
        html.push_str("<p>No teams are configured.</p>\n");
    }
    let mut teams: Vec<(&'static str, &TeamStatus)> = (status.teams.iter())
        .map(|team| (worst(team), team))
        .collect();
    // Stable: within each state, teams keep the config's order.
    teams.sort_by_key(|(class, _)| urgency(class));
    let count = |wanted: &str| teams.iter().filter(|(class, _)| *class == wanted).count();
    let (failed, waiting) = (count("bad"), count("wait"));
    if teams.len() > 1 {
        html.push_str(&format!(
            "<p class=\"meta\">{} teams: {} needing attention, {} pending or waiting, the rest delivered, skipped or not due yet.</p>\n",
            thousands(teams.len() as f64),
            thousands(failed as f64),
            thousands(waiting as f64)
        ));
    }
    for (_, team) in teams.iter().take(TEAMS_SHOWN) {
        html.push_str(&format!(
            "<section>\n<h2>{}</h2>\n<p class=\"next\">Next digest: {}</p>\n",
            html_escape(&team.team),
            html_escape(&team.next_digest)
        ));
        html.push_str("<table>\n<tr><th>webhook</th><th>digest</th><th>what happened</th></tr>\n");
        for hook in &team.webhooks {
            // The newest digest, and each older one not delivered: what counts a team as
            // needing attention is on its row.
            let spans = hook.spans.iter().enumerate();
            let shown = spans.filter(|(i, span)| *i == 0 || class(span) != "ok");
            let mut rows: Vec<(&str, String, String)> = shown
                .map(|(_, span)| (class(span), days(span), last(span)))
                .collect();
            if rows.is_empty() {
                rows.push(("", "—".to_owned(), "nothing recorded yet".to_owned()));
            }
            for (class, days, said) in rows {
                html.push_str(&format!(
                    "<tr class=\"{class}\"><td>{}</td><td>{}</td><td class=\"state\">{}</td></tr>\n",
                    html_escape(&hook.webhook),
                    html_escape(&days),
                    html_escape(&said)
                ));
            }
        }
        html.push_str("</table>\n</section>\n");
    }
    if let Some(hidden) = teams.get(TEAMS_SHOWN..).filter(|rest| !rest.is_empty()) {
        let attention = hidden.iter().filter(|(class, _)| *class != "ok").count();
        let which = match attention {
            0 => "none of them needing attention, pending or waiting".to_owned(),
            n => format!(
                "{} of them needing attention, pending or waiting",
                thousands(n as f64)
            ),
        };
        html.push_str(&format!(
            "<p class=\"more\">…and {} more teams, {which}: <code>acquire-digest status</code> lists every team.</p>\n",
            thousands(hidden.len() as f64)
        ));
    }
    html.push_str("</body>\n</html>\n");
    html
}

/// A team's state on the page: the worst of its digests shown (`ok` when it has none), so
/// a team counts as fine only when `status` would say so of it.
fn worst(team: &TeamStatus) -> &'static str {
    let spans = (team.webhooks.iter()).flat_map(|hook| &hook.spans);
    (spans.map(class))
        .min_by_key(|class| urgency(class))
        .unwrap_or("ok")
}

fn urgency(class: &str) -> u8 {
    match class {
        "bad" => 0,
        "wait" => 1,
        _ => 2,
    }
}

fn class(span: &SpanStatus) -> &'static str {
    match span.state {
        "delivered" | "skipped" => "ok",
        "pending" | "waiting" => "wait",
        _ => "bad",
    }
}

fn days(span: &SpanStatus) -> String {
    if span.date == span.end_date {
        span.date.to_string()
    } else {
        format!("{} to {}", span.date, span.end_date)
    }
}

/// What happened, with the error's own words but not what the upstream sent back.
fn last(span: &SpanStatus) -> String {
    span.said(span.last_error.as_deref().map(without_excerpt))
}

/// An error up to where it quotes an answer: "rejected with HTTP 400: {body}" keeps
/// "rejected with HTTP 400", "…; it began: {body}" its start, "the API answered success:
/// false ({message})" and "unexpected shape: {detail}" their first words.
fn without_excerpt(error: &str) -> &str {
    let mut end = error.len();
    if let Some(at) = error.find("; it began") {
        end = end.min(at);
    }
    for quoting in ["success: false", "unexpected shape"] {
        if let Some(at) = error.find(quoting) {
            end = end.min(at + quoting.len());
        }
    }
    if let Some(at) = error.find("HTTP ") {
        let code_end = at
            + 5
            + error[at + 5..]
                .chars()
                .take_while(char::is_ascii_digit)
                .count();
        if error[code_end..].starts_with(": ") {
            end = end.min(code_end);
        }
    }
    error[..end].trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::WebhookStatus;

    /// Escaping and cutting, without a browser: the browser test covers the rest.
    #[test]
    fn names_are_escaped_and_answers_stay_off_the_page() {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let status = Status {
            ok: false,
            teams: vec![TeamStatus {
                team: "<script>alert(1)</script>".into(),
                next_digest: "Sat 5 Dec 09:00:00 UTC (09:00:00 UTC), covering 2026-12-04".into(),
                next_digest_at: None,
                webhooks: vec![WebhookStatus {
                    webhook: "ops & \"sales\"".into(),
                    host: "https://hooks.example:443 #0123abcd".into(),
                    spans: vec![SpanStatus {
                        date,
                        end_date: date,
                        state: "refused",
                        attempts: 1,
                        last_error: Some(
                            "rejected with HTTP 400: <img src=x onerror=alert(1)>".into(),
                        ),
                        next_attempt: None,
                        delivered_at: None,
                        leased_until: None,
                    }],
                }],
            }],
        };
        let now = chrono::Utc::now();
        let html = page(
            Some(&status),
            &["The ledger is unreachable: <x>".into()],
            now,
        );
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("ops &amp; &quot;sales&quot;"), "{html}");
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
        assert!(
            html.contains(
                "REFUSED (not sent again until its URL changes): rejected with HTTP 400<"
            ),
            "{html}"
        );
        assert!(
            html.contains("role=\"alert\">The ledger is unreachable: &lt;x&gt;</div>"),
            "{html}"
        );
        // The host stays with `status`: the page names webhooks, not where they point.
        assert!(!html.contains("hooks.example"), "{html}");
    }

    fn team_in(name: String, state: &'static str) -> TeamStatus {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        TeamStatus {
            team: name,
            next_digest: "Sat 5 Dec 09:00:00 UTC".into(),
            next_digest_at: None,
            webhooks: vec![WebhookStatus {
                webhook: "slack".into(),
                host: "https://hooks.example:443 #0123abcd".into(),
                spans: vec![SpanStatus {
                    date,
                    end_date: date,
                    state,
                    attempts: 1,
                    last_error: (state == "failed").then(|| "HTTP 503".into()),
                    next_attempt: None,
                    delivered_at: None,
                    leased_until: None,
                }],
            }],
        }
    }

    fn sections(html: &str) -> Vec<&str> {
        let names = html.split("<h2>").skip(1);
        names
            .map(|rest| &rest[..rest.find("</h2>").unwrap()])
            .collect()
    }

    #[test]
    fn many_teams_show_those_needing_attention_first_and_the_rest_counted() {
        let state = |i: usize| match i {
            250 => "failed",
            260 => "pending",
            7 => "expired",
            _ => "delivered",
        };
        let teams = (0..300).map(|i| team_in(format!("team-{i}"), state(i)));
        let status = Status {
            ok: false,
            teams: teams.collect(),
        };
        let html = page(Some(&status), &[], chrono::Utc::now());
        let shown = sections(&html);
        assert_eq!(shown.len(), TEAMS_SHOWN);
        assert_eq!(shown[..4], ["team-7", "team-250", "team-260", "team-0"]);
        assert!(
            html.contains(
                "300 teams: 2 needing attention, 1 pending or waiting, the rest delivered, skipped"
            ),
            "{html}"
        );
        assert!(
            html.contains(
                "…and 100 more teams, none of them needing attention, pending or waiting:"
            ),
            "{html}"
        );

        let many = (0..1_500).map(|i| team_in(format!("team-{i}"), "pending"));
        let many = Status {
            ok: false,
            teams: many.collect(),
        };
        let html = page(Some(&many), &[], chrono::Utc::now());
        assert!(
            html.contains("1,500 teams: 0 needing attention, 1,500 pending or waiting")
                && html.contains("…and 1,300 more teams, 1,300 of them needing attention"),
            "{html}"
        );

        let failing = (0..250).map(|i| team_in(format!("team-{i}"), "failed"));
        let status = Status {
            ok: false,
            teams: failing
                .chain([team_in("quiet".into(), "delivered")])
                .collect(),
        };
        let html = page(Some(&status), &[], chrono::Utc::now());
        assert_eq!(sections(&html).len(), TEAMS_SHOWN);
        assert!(!sections(&html).contains(&"quiet"), "{html}");
        assert!(
            html.contains("…and 51 more teams, 50 of them needing attention, pending"),
            "{html}"
        );

        let one = Status {
            ok: true,
            teams: vec![team_in("solo".into(), "delivered")],
        };
        let html = page(Some(&one), &[], chrono::Utc::now());
        assert_eq!(sections(&html), ["solo"]);
        assert!(
            !html.contains("more teams") && !html.contains("1 teams"),
            "{html}"
        );
    }

    /// A team is fine only if every digest shown of every webhook is: an older refusal behind
    /// a newer delivery still needs a look, and shows on the team's row.
    #[test]
    fn a_team_counts_by_its_worst_digest_of_any_webhook() {
        let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let span = |date, state: &'static str| SpanStatus {
            date,
            end_date: date,
            state,
            attempts: 1,
            last_error: (state == "refused").then(|| "HTTP 404".into()),
            next_attempt: None,
            delivered_at: None,
            leased_until: None,
        };
        let hook = |name: &str, spans| WebhookStatus {
            webhook: name.into(),
            host: "https://hooks.example:443 #0123abcd".into(),
            spans,
        };
        let team = |name: &str, webhooks| TeamStatus {
            team: name.into(),
            next_digest: "Sat 5 Dec 09:00:00 UTC".into(),
            next_digest_at: None,
            webhooks,
        };
        let status = Status {
            ok: false,
            teams: vec![
                team("quiet", vec![hook("slack", vec![span(day(4), "skipped")])]),
                team("new", vec![hook("slack", vec![])]),
                team(
                    "earlier",
                    vec![hook(
                        "slack",
                        vec![
                            span(day(4), "delivered"),
                            span(day(3), "delivered"),
                            span(day(2), "refused"),
                        ],
                    )],
                ),
                team(
                    "second",
                    vec![
                        hook("slack", vec![span(day(4), "delivered")]),
                        hook("ops", vec![span(day(4), "waiting")]),
                    ],
                ),
            ],
        };
        let html = page(Some(&status), &[], chrono::Utc::now());
        assert_eq!(sections(&html), ["earlier", "second", "quiet", "new"]);
        assert!(html.contains("4 teams: 1 needing attention, 1 pending or waiting"));
        let earlier = &html[html.find("<h2>earlier").unwrap()..html.find("<h2>second").unwrap()];
        assert!(earlier.contains("<td>2026-12-04</td>"), "{earlier}");
        assert!(!earlier.contains("<td>2026-12-03</td>"), "{earlier}");
        assert!(
            earlier.contains("<tr class=\"bad\"><td>slack</td><td>2026-12-02</td>"),
            "{earlier}"
        );
        assert!(html.contains("nothing recorded yet"), "{html}");

        // Without a status (the ledger unreadable), nothing is claimed.
        let html = page(
            None,
            &["The ledger is unreachable".into()],
            chrono::Utc::now(),
        );
        assert!(html.contains("what was delivered is not known"), "{html}");
        assert!(!html.contains("No teams are configured") && !html.contains("<h2>"));
    }

    #[test]
    fn upstream_excerpts_are_cut_from_errors() {
        assert_eq!(
            without_excerpt("rejected with HTTP 400: <script>alert(1)</script>"),
            "rejected with HTTP 400"
        );
        assert_eq!(without_excerpt("HTTP 503: maintenance"), "HTTP 503");
        assert_eq!(
            without_excerpt("the response is not JSON (expected value); it began: <html>"),
            "the response is not JSON (expected value)"
        );
        assert_eq!(
            without_excerpt("acme visitor-reference: the API answered success: false (<b>x</b>)"),
            "acme visitor-reference: the API answered success: false"
        );
        assert_eq!(
            without_excerpt("acme pages: unexpected shape: row 3: not an object: \"<@U1>\""),
            "acme pages: unexpected shape"
        );
        assert_eq!(
            without_excerpt("could not connect: Connection refused (nothing was sent)"),
            "could not connect: Connection refused (nothing was sent)"
        );
    }
}
