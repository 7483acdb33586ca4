//! acquire-digest: yesterday's visitor analytics, ranked and posted to each team's Slack.
//!
//! The data's way through the code is one line, one module per stage:
//!
//! ```text
//! config → schedule → fetch → rank → render → deliver
//!                       ↑                        ↕
//!                   simulator                  ledger
//! ```
//!
//! - [`config`]: `config.toml` parsed once into types that can't hold an invalid value.
//! - [`schedule`]: timezones, cron firings and the reporting window, all pure functions.
//! - [`fetch`]: the Acquire API client; [`simulator`] is a local stand-in for the API.
//! - [`rank`]: the day's reports become the [`rank::Digest`] model (pure).
//! - [`render`]: the digest through a template into a Slack or generic webhook body (pure).
//! - [`deliver`]: posting to webhooks; [`ledger`] records what was delivered so nothing is
//!   sent twice.
//! - [`pipeline`] runs the line for a set of teams (`once`, `demo`); [`daemon`] runs it on
//!   each team's schedule (`run`).

pub mod clock;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod demo;
pub mod fetch;
pub mod http;
pub mod ledger;
pub mod pipeline;
pub mod rank;
pub mod render;
pub mod schedule;
pub mod simulator;
