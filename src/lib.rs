//! acquire-digest: the visitor analytics each team's schedule covers, ranked and posted to its
//! Slack channel and webhooks.
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
//! - [`schedule`]: timezones, cron firings, the days a firing covers and their exact window,
//!   all pure functions; [`clock`] is the time as an input.
//! - [`fetch`]: the Acquire API client; [`simulator`] is a local stand-in for the API.
//! - [`rank`]: the day's reports become the [`rank::Digest`] model (pure).
//! - [`render`]: the digest through its kind's template into the body each destination takes
//!   (Slack, Discord, Teams, Google Chat, Mattermost, generic), one module per kind (pure);
//!   [`check`] composes config and templates, [`trial`] is `test` and `preview`.
//! - [`deliver`]: one POST and what its answer means; [`ledger`] records each (team, span,
//!   webhook) and leases it to one process at a time, and [`history`] keeps fetched reports
//!   for comparisons, both in [`db`]: a SQLite file or a PostgreSQL database that replicas
//!   share.
//! - [`pipeline`] runs the line for one team's span (`once`, `demo`, the daemon); [`daemon`]
//!   is the reconciler that decides what is due (`run`).
//! - Around the line, for operators: [`telemetry`] (metrics and log formats), [`server`]
//!   (`run`'s HTTP endpoint), [`status`] (the ledger read back) and [`alerts`] (a message
//!   when a digest is given up).

/// glibc's malloc was a quarter of a digest's instructions (callgrind, rendering); every
/// binary linking this crate, benches included, gets the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the allocator's free pages back to the system. After start-up most of the config
/// parse's peak is free, and without this it stays resident until the allocator is busy
/// again, which for an idle daemon may be hours: about 25 MiB at 100,000 teams.
pub fn release_free_memory() {
    // SAFETY: takes no pointers; mimalloc allows it from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

pub mod alerts;
pub mod check;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod db;
pub mod deliver;
pub mod demo;
pub mod fetch;
pub mod history;
pub mod http;
pub mod insight;
pub mod ledger;
pub mod pipeline;
pub mod rank;
pub mod render;
pub mod schedule;
pub mod server;
pub mod simulator;
pub mod status;
pub mod telemetry;
pub mod trial;
