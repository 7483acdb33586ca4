use super::*;
use std::path::PathBuf;

use crate::schedule::Window;

use crate::clock::WallClock;
use crate::config::DatabaseUrl;
use crate::db::testing::{execute_at, scratch_database, sqlite_file_url};

impl Entry {
    /// An entry nobody holds, for the tests of what is decided from one.
    pub(crate) fn settled_as(state: State, attempts: u32, last_error: Option<&str>) -> Entry {
        let last_error = last_error.map(str::to_owned);
        Entry {
            state,
            attempts,
            last_error,
            ..Entry::pending()
        }
    }
}

/// Every test here runs against both stores.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// A PostgreSQL test lease is short, since only real time moves the server's clock.
const POSTGRES_TTL: Duration = Duration::from_secs(4);

struct Fixture {
    kind: Kind,
    _dir: tempfile::TempDir,
    location: StateStore,
    clock: Arc<WallClock>,
}

impl Fixture {
    /// None when PostgreSQL isn't there outside CI (the tests say so and pass); in CI a
    /// missing PostgreSQL fails them.
    async fn new(kind: Kind) -> Option<Fixture> {
        let dir = tempfile::tempdir().unwrap();
        let location = match kind {
            Kind::Sqlite => StateStore::Sqlite(dir.path().join("nested/l.db")),
            Kind::Postgres => {
                let url = test_database_url()?;
                let scratch = scratch_database(&url).await.unwrap();
                StateStore::Postgres(DatabaseUrl::parse(&scratch).unwrap())
            }
        };
        Some(Fixture {
            kind,
            _dir: dir,
            location,
            clock: WallClock::new(),
        })
    }

    /// Another process's handle on the same ledger.
    async fn open(&self) -> Ledger {
        let ttl = match self.kind {
            Kind::Sqlite => lease_ttl(),
            Kind::Postgres => POSTGRES_TTL,
        };
        Ledger::open_with(&self.location, self.clock.clone(), ttl, Access::Write)
            .await
            .unwrap()
    }

    fn ttl(&self) -> Duration {
        match self.kind {
            Kind::Sqlite => lease_ttl(),
            Kind::Postgres => POSTGRES_TTL,
        }
    }

    /// Lets `time` pass for the leases: SQLite's are judged by the process's clock, which
    /// jumps; PostgreSQL's by the server's, so the test waits.
    async fn pass(&self, time: Duration) {
        match self.kind {
            Kind::Sqlite => {
                self.clock.jump(chrono::Duration::from_std(time).unwrap());
                // Renewals wake on the jump; let them write.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Kind::Postgres => tokio::time::sleep(time).await,
        }
    }

    /// Writes behind the ledger's back, as a person with a SQL shell would.
    async fn tamper(&self, sql: &str) {
        execute_at(&url_of(&self.location), sql).await.unwrap();
    }
}

fn url_of(location: &StateStore) -> String {
    match location {
        StateStore::Sqlite(path) => sqlite_file_url(path),
        StateStore::Postgres(url) => url.expose().to_string(),
    }
}

fn test_database_url() -> Option<String> {
    match std::env::var("ACQUIRE_DIGEST_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
            "ACQUIRE_DIGEST_TEST_DATABASE_URL is not set: in CI the ledger tests need PostgreSQL (run them through scripts/with-postgres)"
        ),
        Err(_) => {
            eprintln!(
                "PostgreSQL ledger tests skipped: run through scripts/with-postgres to include them"
            );
            None
        }
    }
}

/// Each test, once per store.
macro_rules! on_both_stores {
        ($($test:ident),* $(,)?) => {
            mod sqlite_store {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(fx) = super::Fixture::new(super::Kind::Sqlite).await {
                        super::$test(fx).await
                    }
                })*
            }
            mod postgres_store {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(fx) = super::Fixture::new(super::Kind::Postgres).await {
                        super::$test(fx).await
                    }
                })*
            }
        };
    }

on_both_stores!(
    a_lease_keeps_others_off_until_finished_and_a_dead_holders_expires,
    a_live_holder_keeps_its_lease_however_far_the_clock_moves,
    a_live_holder_keeps_its_lease_when_the_clock_steps_back,
    how_a_lease_ends_is_recorded,
    a_stalled_holder_posts_nothing_once_the_digest_is_given_up,
    a_row_this_version_cannot_read_stops_only_itself,
    a_row_read_leniently_is_still_written,
    a_missed_digest_is_recorded_once_and_sent_only_by_an_admin,
    watermarks_only_move_forward,
    a_digest_gets_at_most_ten_posts_that_reached_the_receiver,
    a_panicking_holder_stops_renewing_and_its_lease_expires,
    an_expired_holder_records_nothing_over_the_new_one,
    at_most_two_posts_go_unanswered_whatever_asks,
    a_holder_writes_against_the_row_as_it_is_not_as_it_last_wrote_it,
    a_refusal_holds_for_the_daemon_until_the_url_changes_and_never_for_once,
    spans_and_webhooks_key_entries_apart,
    processes_racing_for_one_digest_get_one_lease,
    opening_a_new_ledger_is_safe_to_race,
    reports_are_remembered_by_exact_window_and_forgotten_when_old,
    each_alert_is_recorded_once_across_processes,
    a_skipped_digest_is_settled_for_all_but_a_forced_admin,
    a_schema_newer_than_this_version_is_refused_naming_both_versions,
    a_digest_waiting_for_data_is_pending_unleased_and_remembers_its_read,
    totals_are_kept_by_exact_window_and_provisional_ones_are_not_trusted,
    a_pass_reads_its_teams_rows_and_older_ones_only_if_pending,
    each_webhooks_last_delivery_is_kept_as_deliveries_are_recorded,
    a_lease_rule_that_writes_nothing_over_no_row_still_gets_the_row_there,
    all_but_the_last_days_are_forgotten_with_their_alerts,
    an_unforced_lease_makes_no_row_for_a_forgotten_day,
    rows_read_ahead_refuse_a_lease_once_and_only_while_fresh,
);

fn not_delivered() -> Posted {
    Posted::NotDelivered {
        error: "HTTP 503: maintenance".into(),
        after: None,
    }
}

fn key(webhook: &str) -> Key {
    Key::new("apac", Span::day("2021-03-18".parse().unwrap()), webhook)
}

async fn lease(ledger: &Ledger, key: &Key, requester: Requester) -> Claim {
    ledger.lease(key, requester, "url-1").await.unwrap()
}

/// A digest tried once and not delivered: a pending row with a retry, and no lease.
async fn tried_once(fx: &Fixture, ledger: &Ledger, key: &Key) {
    let Claim::Leased(held) = lease(ledger, key, Requester::Daemon).await else {
        panic!("a lease of {key}")
    };
    let retry_at = fx.clock.now();
    held.finish(Finish::Posted(not_delivered(), retry_at))
        .await
        .unwrap();
}

async fn entry(ledger: &Ledger, key: &Key) -> Option<Entry> {
    let mut entries = ledger.recent(key.span.last).await.unwrap();
    entries
        .remove(&(key.team.clone(), key.span))?
        .remove(&key.webhook)
}

async fn a_lease_keeps_others_off_until_finished_and_a_dead_holders_expires(fx: Fixture) {
    let (ours, theirs) = (fx.open().await, fx.open().await);
    let slack = key("slack");
    let Claim::Leased(held) = lease(&ours, &slack, Requester::Daemon).await else {
        panic!("the first lease")
    };
    assert!(matches!(
        lease(&theirs, &slack, Requester::Daemon).await,
        Claim::Busy(_)
    ));
    assert!(matches!(
        lease(&theirs, &slack, Requester::Admin { force: true }).await,
        Claim::Busy(_)
    ));
    let retry_at = fx.clock.now();
    held.finish(Finish::Posted(not_delivered(), retry_at))
        .await
        .unwrap();
    let Claim::Leased(held) = lease(&theirs, &slack, Requester::Daemon).await else {
        panic!("freed by its finish")
    };
    // Killed mid-POST: no finish, no pid to look at; only the expiry frees it.
    drop(held);
    assert!(matches!(
        lease(&ours, &slack, Requester::Daemon).await,
        Claim::Busy(_)
    ));
    fx.pass(fx.ttl() + Duration::from_secs(1)).await;
    match lease(&ours, &slack, Requester::Daemon).await {
        Claim::Leased(_) => {}
        Claim::Busy(until) => panic!("still held until {until}, now {}", fx.clock.now()),
        Claim::Settled(entry) => panic!("settled: {entry:?}"),
    }
}

async fn a_live_holder_keeps_its_lease_however_far_the_clock_moves(fx: Fixture) {
    let ours = fx.open().await;
    let slack = key("slack");
    let Claim::Leased(_held) = lease(&ours, &slack, Requester::Daemon).await else {
        panic!()
    };
    // Three steps of three quarters of the lease outlast it unless it is renewed.
    for _ in 0..3 {
        fx.pass(fx.ttl() * 3 / 4).await;
        assert!(matches!(
            lease(&ours, &slack, Requester::Daemon).await,
            Claim::Busy(_)
        ));
    }
}

async fn a_live_holder_keeps_its_lease_when_the_clock_steps_back(fx: Fixture) {
    let ours = fx.open().await;
    let slack = key("slack");
    let Claim::Leased(_held) = lease(&ours, &slack, Requester::Daemon).await else {
        panic!()
    };
    fx.clock.jump(-chrono::Duration::seconds(600));
    // Real time passes; on PostgreSQL the server's clock judges the lease. (On SQLite the
    // step back lengthens the lease: that run holds whatever renewal does.)
    tokio::time::sleep(POSTGRES_TTL + Duration::from_secs(1)).await;
    fx.clock.jump(chrono::Duration::seconds(600));
    assert!(matches!(
        lease(&ours, &slack, Requester::Daemon).await,
        Claim::Busy(_)
    ));
}

async fn how_a_lease_ends_is_recorded(fx: Fixture) {
    let ledger = fx.open().await;
    // The round's last answer is recorded by its finish, and settles the digest.
    let slack = key("slack");
    let Claim::Leased(l) = lease(&ledger, &slack, Requester::Daemon).await else {
        panic!()
    };
    assert_eq!(l.before_post().await.unwrap(), Permit::Go);
    l.finish(Finish::Posted(Posted::Delivered, fx.clock.now()))
        .await
        .unwrap();
    let delivered = entry(&ledger, &slack).await.unwrap();
    assert_eq!(delivered.state, State::Delivered);
    assert!(delivered.delivered_at.is_some());
    assert!(matches!(
        lease(&ledger, &slack, Requester::Daemon).await,
        Claim::Settled(_)
    ));
    // Failed before any POST: an attempt, with its reason, tried again later.
    let generic = key("generic");
    let Claim::Leased(l) = lease(&ledger, &generic, Requester::Daemon).await else {
        panic!()
    };
    let retry_at = fx.clock.now() + chrono::Duration::minutes(10);
    let error = "API key rejected (HTTP 401)".to_owned();
    l.finish(Finish::FailedBefore { error, retry_at })
        .await
        .unwrap();
    let failed = entry(&ledger, &generic).await.unwrap();
    assert_eq!((failed.state, failed.attempts), (State::Pending, 1));
    assert_eq!(
        failed.last_error.as_deref(),
        Some("API key rejected (HTTP 401)")
    );
    assert_eq!(
        failed.next_attempt.map(|t| t.timestamp()),
        Some(retry_at.timestamp())
    );
}

async fn a_stalled_holder_posts_nothing_once_the_digest_is_given_up(fx: Fixture) {
    let ledger = fx.open().await;
    let slack = key("slack");
    let Claim::Leased(stalled) = lease(&ledger, &slack, Requester::Daemon).await else {
        panic!()
    };
    stalled.stall();
    fx.pass(fx.ttl() + Duration::from_secs(1)).await;
    // The reconciler finds its window closed and the lease run out: the stopped heartbeat
    // renewed nothing since.
    assert!(
        ledger.expire(&slack).await.unwrap(),
        "{:?}",
        entry(&ledger, &slack).await
    );
    assert_eq!(stalled.before_post().await.unwrap(), Permit::Lost);
    assert_eq!(entry(&ledger, &slack).await.unwrap().state, State::Expired);
    // A job that was queued for a slot when it was given up finds it settled, not due...
    let queued = lease(&ledger, &slack, Requester::Daemon).await;
    assert!(
        matches!(&queued, Claim::Settled(e) if e.state == State::Expired),
        "a given-up digest was leased to the daemon"
    );
    // ...while an admin's `once` may still send it.
    let admin = lease(&ledger, &slack, Requester::Admin { force: false }).await;
    assert!(matches!(admin, Claim::Leased(_)));
}

async fn a_row_this_version_cannot_read_stops_only_itself(fx: Fixture) {
    let ledger = fx.open().await;
    for webhook in ["slack", "generic"] {
        let Claim::Leased(l) = lease(&ledger, &key(webhook), Requester::Daemon).await else {
            panic!()
        };
        l.finish(Finish::Skipped).await.unwrap();
    }
    fx.tamper("UPDATE digests SET state = 'done' WHERE webhook = 'slack'")
        .await;
    let entries = ledger.recent("2021-01-01".parse().unwrap()).await.unwrap();
    let hooks = &entries[&("apac".to_owned(), key("slack").span)];
    // Never read as pending: that would send again what a newer version marked otherwise.
    let foreign = &hooks["slack"];
    assert_eq!(foreign.state, State::Unreadable);
    let said = foreign.last_error.as_deref().unwrap();
    assert!(
        said.contains("\"done\"") && said.contains("not one this version knows"),
        "{said}"
    );
    assert!(foreign.settled_for(Requester::Admin { force: true }, "u"));
    assert_eq!(hooks["generic"].state, State::Skipped);
    // Nobody may lease it, while the row beside it is still served.
    let refused = ledger
        .lease(&key("slack"), Requester::Admin { force: true }, "u")
        .await;
    assert!(refused.is_err());
    let other = ledger
        .lease(&key("generic"), Requester::Admin { force: true }, "u")
        .await;
    assert!(matches!(other, Ok(Claim::Leased(_))));
}

/// A write applies only while the row is as read, judged on what it holds, not on what was
/// understood of it: a count edited below zero (read as 0) or a time out of range (read as
/// none) must not make every write look like a lost race.
async fn a_row_read_leniently_is_still_written(fx: Fixture) {
    let ledger = fx.open().await;
    let slack = key("slack");
    tried_once(&fx, &ledger, &slack).await;
    let now = fx.clock.now();
    fx.tamper("UPDATE digests SET attempts = -3, next_attempt = 99999999999999999")
        .await;
    let Claim::Leased(second) = lease(&ledger, &slack, Requester::Daemon).await else {
        panic!("a lease of the edited row")
    };
    assert_eq!(second.before_post().await.unwrap(), Permit::Go);
    let recorded = second.finish(Finish::Posted(Posted::Delivered, now)).await;
    assert_eq!(recorded.unwrap().unwrap().state, State::Delivered);
    assert_eq!(
        entry(&ledger, &slack).await.unwrap().state,
        State::Delivered
    );
}

async fn a_missed_digest_is_recorded_once_and_sent_only_by_an_admin(fx: Fixture) {
    let (ledger, other) = (fx.open().await, fx.open().await);
    let slack = key("slack");
    assert!(ledger.miss(&slack).await.unwrap());
    assert!(
        !other.miss(&slack).await.unwrap(),
        "reported by one process only"
    );
    // Only a digest nothing was recorded of can be missed.
    let Claim::Leased(l) = lease(&ledger, &key("generic"), Requester::Daemon).await else {
        panic!()
    };
    l.finish(Finish::Skipped).await.unwrap();
    assert!(!ledger.miss(&key("generic")).await.unwrap());
    assert_eq!(
        entry(&ledger, &key("generic")).await.unwrap().state,
        State::Skipped
    );

    let daemon = lease(&ledger, &slack, Requester::Daemon).await;
    assert!(matches!(&daemon, Claim::Settled(e) if e.state == State::Missed));
    let admin = lease(&ledger, &slack, Requester::Admin { force: false }).await;
    let Claim::Leased(admin) = admin else {
        panic!("`once --date` sends a missed digest")
    };
    admin.before_post().await.unwrap();
    let posted = Finish::Posted(Posted::Delivered, fx.clock.now());
    assert_eq!(
        admin.finish(posted).await.unwrap().unwrap().state,
        State::Delivered
    );
}

async fn watermarks_only_move_forward(fx: Fixture) {
    let (ledger, other) = (fx.open().await, fx.open().await);
    assert!(ledger.watermarks().await.unwrap().is_empty());
    let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
    ledger
        .advance(&[("apac".into(), at("2026-11-25T05:30:00.250Z"))])
        .await
        .unwrap();
    // A replica that is behind (its own copy older) can't move it back.
    let earlier = at("2026-11-24T05:30:00Z");
    other
        .advance(&[("apac".into(), earlier), ("emea".into(), earlier)])
        .await
        .unwrap();
    // Hundreds at once, across statements.
    let many: Vec<(String, DateTime<Utc>)> =
        (0..1_000).map(|i| (format!("team-{i}"), earlier)).collect();
    other.advance(&many).await.unwrap();
    assert_eq!(other.watermarks().await.unwrap().len(), 1_002);
    let marks = other.watermarks().await.unwrap();
    assert_eq!(marks["apac"], at("2026-11-25T05:30:00.250Z"));
    assert_eq!(marks["emea"], at("2026-11-24T05:30:00Z"));
}

async fn a_digest_gets_at_most_ten_posts_that_reached_the_receiver(fx: Fixture) {
    let ledger = fx.open().await;
    let slack = key("slack");
    let bad_gateway = || Posted::ServerError {
        error: "HTTP 502: bad gateway".into(),
        after: None,
    };
    let refused_connection = || Posted::NotDelivered {
        error: "could not connect (nothing was sent)".into(),
        after: None,
    };
    // Fourteen `once` runs of three POSTs each against a gateway that forwards and answers
    // 502: ten go out in all; the rounds after the limit post nothing.
    let mut posted = 0;
    for _ in 0..14 {
        let claim = lease(&ledger, &slack, Requester::Admin { force: false }).await;
        let Claim::Leased(round) = claim else {
            continue;
        };
        let mut last = None;
        for _ in 0..3 {
            if round.before_post().await.unwrap() != Permit::Go {
                break;
            }
            // What never reached the receiver gives its post back.
            round.answered(&refused_connection()).await.unwrap();
            assert_eq!(round.before_post().await.unwrap(), Permit::Go);
            posted += 1;
            if let Some(previous) = last.replace(bad_gateway()) {
                round.answered(&previous).await.unwrap();
            }
        }
        let finish = match last {
            Some(answer) => Finish::Posted(answer, fx.clock.now()),
            None => Finish::Exhausted,
        };
        round.finish(finish).await.unwrap();
    }
    assert_eq!(posted, MAX_POSTS);
    let given_up = entry(&ledger, &slack).await.unwrap();
    assert_eq!(
        (given_up.state, given_up.posts),
        (State::TooManyAttempts, MAX_POSTS)
    );
    let daemon = lease(&ledger, &slack, Requester::Daemon).await;
    assert!(matches!(daemon, Claim::Settled(e) if e.state == State::TooManyAttempts));
    // An admin's --force may send one more, and only one.
    let Claim::Leased(forced) = lease(&ledger, &slack, Requester::Admin { force: true }).await
    else {
        panic!("--force sends one more")
    };
    assert_eq!(forced.before_post().await.unwrap(), Permit::Go);
    forced.answered(&bad_gateway()).await.unwrap();
    assert_eq!(forced.before_post().await.unwrap(), Permit::Exhausted);
    let finished = forced.finish(Finish::Exhausted).await.unwrap().unwrap();
    assert_eq!(finished.state, State::TooManyAttempts);
}

async fn a_panicking_holder_stops_renewing_and_its_lease_expires(fx: Fixture) {
    let ledger = fx.open().await;
    let slack = key("slack");
    let (l, k) = (ledger.clone(), slack.clone());
    let crashed = tokio::spawn(async move {
        let _lease = lease(&l, &k, Requester::Daemon).await;
        panic!("a bug mid-delivery");
    })
    .await;
    assert!(crashed.unwrap_err().is_panic());
    assert!(matches!(
        lease(&ledger, &slack, Requester::Daemon).await,
        Claim::Busy(_)
    ));
    // Longer than the lease: a heartbeat still running would have renewed it.
    fx.pass(fx.ttl() * 3 / 4).await;
    fx.pass(fx.ttl() * 3 / 4).await;
    assert!(matches!(
        lease(&ledger, &slack, Requester::Daemon).await,
        Claim::Leased(_)
    ));
}

async fn an_expired_holder_records_nothing_over_the_new_one(fx: Fixture) {
    let ledger = fx.open().await;
    let slack = key("slack");
    let Claim::Leased(stale) = lease(&ledger, &slack, Requester::Daemon).await else {
        panic!()
    };
    assert_eq!(stale.before_post().await.unwrap(), Permit::Go);
    // Stalled: its renewals stop, as a process paused by the kernel or a debugger.
    stale.stall();
    fx.pass(fx.ttl() + Duration::from_secs(1)).await;
    let Claim::Leased(fresh) = lease(&ledger, &slack, Requester::Daemon).await else {
        panic!("the expired lease is taken over")
    };
    let late = Posted::Refused {
        status: 404,
        body: "late".into(),
    };
    assert!(!stale.answered(&late).await.unwrap(), "fenced off");
    assert_eq!(stale.before_post().await.unwrap(), Permit::Lost);
    assert!(fresh.answered(&not_delivered()).await.unwrap());
    let now = fx.clock.now();
    let recorded = fresh.finish(Finish::Posted(Posted::Delivered, now)).await;
    assert_eq!(recorded.unwrap().unwrap().state, State::Delivered);
    assert_eq!(stale.finish(Finish::Exhausted).await.unwrap(), None);
    let entry = entry(&ledger, &slack).await.unwrap();
    assert_eq!(entry.state, State::Delivered);
    assert!(matches!(
        lease(&ledger, &slack, Requester::Daemon).await,
        Claim::Settled(_)
    ));
}

/// A holder on SQLite writes against the row as it last wrote it instead of reading it first
/// (on PostgreSQL it always reads); either way, a row another process changed meanwhile is
/// the one its rules judge.
async fn a_holder_writes_against_the_row_as_it_is_not_as_it_last_wrote_it(fx: Fixture) {
    let ledger = fx.open().await;
    let hook = key("generic");
    let Claim::Leased(held) = lease(&ledger, &hook, Requester::Daemon).await else {
        panic!("a lease of {hook}")
    };
    // An earlier holder's POSTs, recorded as unanswered after this lease was taken.
    fx.tamper(&format!("UPDATE digests SET unanswered = {MAX_UNANSWERED}"))
        .await;
    assert_eq!(held.before_post().await.unwrap(), Permit::Exhausted);
    fx.tamper("UPDATE digests SET unanswered = 0").await;
    assert_eq!(held.before_post().await.unwrap(), Permit::Go);
    // A count this holder's rule would not refuse on: only the write's check sees it.
    fx.tamper("UPDATE digests SET attempts = 7").await;
    let retry_at = fx.clock.now();
    let finished = held.finish(Finish::Posted(not_delivered(), retry_at));
    let finished = finished.await.unwrap().unwrap();
    assert_eq!((finished.attempts, finished.unanswered), (8, 0));
}

async fn at_most_two_posts_go_unanswered_whatever_asks(fx: Fixture) {
    let ledger = fx.open().await;
    let hook = key("generic");
    for round in 0..3 {
        let Claim::Leased(lease) = lease(&ledger, &hook, Requester::Daemon).await else {
            panic!("round {round}")
        };
        let permit = lease.before_post().await.unwrap();
        if round < 2 {
            assert_eq!(permit, Permit::Go, "round {round}");
            let timed_out = Posted::Unknown("timed out".into());
            let finished = lease
                .finish(Finish::Posted(timed_out, fx.clock.now()))
                .await;
            let state = finished.unwrap().unwrap().state;
            // The second unanswered POST settles it: it may have arrived.
            let expected = [State::Pending, State::Unknown][round];
            assert_eq!(state, expected, "round {round}");
            if round == 1 {
                // As a process killed after the first POST would leave it: still pending.
                fx.tamper("UPDATE digests SET state = 'pending'").await;
            }
        } else {
            assert_eq!(permit, Permit::Exhausted);
            let finished = lease.finish(Finish::Exhausted).await.unwrap().unwrap();
            assert_eq!(finished.state, State::Unknown);
        }
    }
    assert!(
        matches!(lease(&ledger, &hook, Requester::Daemon).await, Claim::Settled(e) if e.state == State::Unknown)
    );
    assert!(matches!(
        lease(&ledger, &hook, Requester::Admin { force: false }).await,
        Claim::Settled(_)
    ));
    // Only an admin's --force sends it again, and resets the count.
    let Claim::Leased(forced) = lease(&ledger, &hook, Requester::Admin { force: true }).await
    else {
        panic!()
    };
    assert_eq!(forced.before_post().await.unwrap(), Permit::Go);
    // An answered POST (even a 503) does not count as unanswered.
    assert!(forced.answered(&not_delivered()).await.unwrap());
    assert_eq!(entry(&ledger, &hook).await.unwrap().unanswered, 0);
}

async fn a_refusal_holds_for_the_daemon_until_the_url_changes_and_never_for_once(fx: Fixture) {
    let ledger = fx.open().await;
    let slack = key("slack");
    let Claim::Leased(l) = lease(&ledger, &slack, Requester::Daemon).await else {
        panic!()
    };
    l.before_post().await.unwrap();
    let refused = Posted::Refused {
        status: 404,
        body: "no_service".into(),
    };
    l.finish(Finish::Posted(refused, fx.clock.now()))
        .await
        .unwrap();
    // A new process: still refused with the same URL.
    let reopened = fx.open().await;
    assert!(
        matches!(lease(&reopened, &slack, Requester::Daemon).await, Claim::Settled(e) if e.state == State::Refused)
    );
    assert!(matches!(
        reopened
            .lease(&slack, Requester::Daemon, "url-2")
            .await
            .unwrap(),
        Claim::Leased(_)
    ));
    fx.pass(fx.ttl() + Duration::from_secs(1)).await;
    assert!(matches!(
        lease(&reopened, &slack, Requester::Admin { force: false }).await,
        Claim::Leased(_)
    ));
}

async fn a_skipped_digest_is_settled_for_all_but_a_forced_admin(fx: Fixture) {
    let ledger = fx.open().await;
    let slack = key("slack");
    let Claim::Leased(l) = lease(&ledger, &slack, Requester::Daemon).await else {
        panic!()
    };
    l.finish(Finish::Skipped).await.unwrap();
    let recorded = entry(&ledger, &slack).await.unwrap();
    assert_eq!(recorded.state, State::Skipped);
    assert_eq!((recorded.attempts, recorded.leased_until), (0, None));
    let reopened = fx.open().await;
    for requester in [Requester::Daemon, Requester::Admin { force: false }] {
        assert!(
            matches!(lease(&reopened, &slack, requester).await, Claim::Settled(e) if e.state == State::Skipped)
        );
    }
    assert!(matches!(
        lease(&reopened, &slack, Requester::Admin { force: true }).await,
        Claim::Leased(_)
    ));
}

/// A digest leased and delivered now: when the ledger says it was.
async fn delivered(fx: &Fixture, ledger: &Ledger, key: &Key) -> DateTime<Utc> {
    let Claim::Leased(held) = lease(ledger, key, Requester::Daemon).await else {
        panic!("a lease of {key}")
    };
    held.finish(Finish::Posted(Posted::Delivered, fx.clock.now()))
        .await
        .unwrap();
    let entry = entry(ledger, key).await.unwrap();
    entry.delivered_at.expect("delivered")
}

/// `[state] keep_days`: all but the last days' digests are forgotten, with their alerts, a batch
/// at a time; a live lease (an admin's forced `once` of an old day) and each webhook's last
/// delivery stay. A young ledger forgets nothing, whatever the clock says; how far it has
/// forgotten is recorded, and never moves back.
async fn all_but_the_last_days_are_forgotten_with_their_alerts(fx: Fixture) {
    let day = |text: &str| -> NaiveDate { text.parse().unwrap() };
    let ledger = fx.open().await;
    // More than two batches, a month before the day the tests' digests cover.
    fx.tamper(
        "WITH RECURSIVE t(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM t WHERE i < 4499)
         INSERT INTO digests (team, first_day, last_day, webhook, state)
         SELECT 'old-' || i, '2021-02-17', '2021-02-17', 'slack', 'delivered' FROM t",
    )
    .await;
    let old = Key::new("old-0", Span::day(day("2021-02-17")), "slack");
    assert!(ledger.first_alert(&old, "missed", "").await.unwrap());
    assert!(
        ledger
            .first_alert(&key("slack"), "missed", "")
            .await
            .unwrap()
    );
    let forced = Key::new("apac", Span::day(day("2021-02-01")), "generic");
    let force = Requester::Admin { force: true };
    let Claim::Leased(_held) = lease(&ledger, &forced, force).await else {
        panic!("a lease of {forced}")
    };
    let last_delivery = delivered(&fx, &ledger, &key("slack")).await;
    let half_a_day = Duration::from_secs(12 * 3600);
    // Three days of digests, years ago by the clock: none is forgotten.
    assert_eq!(ledger.forget_all_but(14, half_a_day).await.unwrap().0, 0);
    assert_eq!(ledger.forgotten_before().await.unwrap(), None);

    // Fourteen days up to 2021-03-18: what ended before the fourteenth newest goes, less the
    // two days a clock ahead may have delivered within a catch_up of 12 hours.
    let recent = (1..=17)
        .map(|d| format!("('recent', '2021-03-{d:02}', '2021-03-{d:02}', 'slack', 'delivered')"));
    // And the firings a clock that jumped a month ahead skipped, missed: they hold nothing.
    let skipped = (1..=30).map(|d| {
        let on = day("2021-03-18") + chrono::Days::new(d);
        format!("('ahead', '{on}', '{on}', 'slack', 'missed')")
    });
    let rows: Vec<String> = recent.chain(skipped).collect();
    fx.tamper(&format!(
        "INSERT INTO digests (team, first_day, last_day, webhook, state) VALUES {}",
        rows.join(", ")
    ))
    .await;
    let (forgotten, first_kept) = ledger.forget_all_but(14, half_a_day).await.unwrap();
    assert_eq!(first_kept, day("2021-03-03"));
    assert_eq!(forgotten, 4500 + 2 + 1, "the rows and their alert");
    assert_eq!(ledger.forgotten_before().await.unwrap(), Some(first_kept));
    let left = ledger.recent(day("2021-01-01")).await.unwrap();
    assert_eq!(left.len(), 2 + 15 + 30, "{:?}", left.keys());
    assert!(
        left.contains_key(&("apac".to_owned(), forced.span)),
        "leased"
    );
    assert!(
        ledger.first_alert(&old, "missed", "").await.unwrap(),
        "forgotten"
    );
    assert!(
        !ledger
            .first_alert(&key("slack"), "missed", "")
            .await
            .unwrap(),
        "kept"
    );
    let last = vec![("apac".to_owned(), "slack".to_owned(), last_delivery)];
    assert_eq!(ledger.last_deliveries().await.unwrap(), last);
    assert_eq!(
        ledger.forget_all_but(14, half_a_day).await.unwrap(),
        (1, first_kept),
        "the alert again"
    );
    // Keeping more from now on forgets nothing more, and the record doesn't move back.
    assert_eq!(ledger.forget_all_but(30, half_a_day).await.unwrap().0, 0);
    assert_eq!(ledger.forgotten_before().await.unwrap(), Some(first_kept));
}

/// The daemon may forget a day after `once --date` looked and before it leases: the insert
/// that makes an unforced admin's row asks too, so such a day is refused, not sent again. A
/// forced lease, the daemon's, and a day still remembered make their rows as ever.
async fn an_unforced_lease_makes_no_row_for_a_forgotten_day(fx: Fixture) {
    let ledger = fx.open().await;
    fx.tamper("INSERT INTO forgotten (id, before_day) VALUES (1, '2021-03-18')")
        .await;
    let old = |webhook: &str| Key::new("apac", Span::day("2021-03-17".parse().unwrap()), webhook);
    let unforced = Requester::Admin { force: false };
    refused_as_forgotten(&ledger, &old("slack"), "2021-03-18").await;
    let everything = "2000-01-01".parse().unwrap();
    assert!(ledger.recent(everything).await.unwrap().is_empty());
    let Claim::Leased(_remembered) = lease(&ledger, &key("slack"), unforced).await else {
        panic!("the first day remembered is leased")
    };
    // A week forgotten in part is judged by its last day, as the forget takes spans.
    let week = Span {
        first: "2021-03-15".parse().unwrap(),
        last: "2021-03-21".parse().unwrap(),
    };
    let Claim::Leased(_week) = lease(&ledger, &Key::new("apac", week, "slack"), unforced).await
    else {
        panic!("a week whose last day is remembered is leased")
    };
    let force = Requester::Admin { force: true };
    let Claim::Leased(_forced) = lease(&ledger, &old("slack"), force).await else {
        panic!("a forced lease of a forgotten day")
    };
    let Claim::Leased(_daemon) = lease(&ledger, &old("generic"), Requester::Daemon).await else {
        panic!("the daemon's lease")
    };
    // A row that is there is read as ever, the forgotten day's too.
    let Claim::Busy(_) = lease(&ledger, &old("slack"), unforced).await else {
        panic!("the forced lease's row, busy")
    };
    let rows = ledger.recent(everything).await.unwrap();
    let webhooks = |span: Span| {
        let mut names: Vec<String> = rows[&("apac".to_owned(), span)].keys().cloned().collect();
        names.sort();
        names
    };
    assert_eq!(webhooks(old("slack").span), ["generic", "slack"]);
    assert_eq!(webhooks(key("slack").span), ["slack"]);
}

/// An unforced admin's lease of `key` is refused: the ledger forgot the days before `before`.
async fn refused_as_forgotten(ledger: &Ledger, key: &Key, before: &str) {
    let unforced = Requester::Admin { force: false };
    let refused = (ledger.lease(key, unforced, "url-1").await)
        .err()
        .unwrap_or_else(|| panic!("a lease of {key}, forgotten, is refused"));
    let said = format!("forgot the digests that ended before {before} ([state] keep_days)");
    assert!(refused.to_string().contains(&said), "{refused}");
}

/// A lease's first round guesses that there is no row, and writes before it reads; a rule
/// that would write nothing over no row is given the row that is there after all.
async fn a_lease_rule_that_writes_nothing_over_no_row_still_gets_the_row_there(fx: Fixture) {
    let ledger = fx.open().await;
    let slack = key("slack");
    tried_once(&fx, &ledger, &slack).await;
    let last_write = LastWrite::default();
    let said = ledger
        .update(
            &slack,
            Reach::Lease(Insert::Any),
            Some(&last_write),
            |record, _| {
                let Some(mut record) = record else {
                    return (None, None);
                };
                record.entry.attempts += 1;
                let attempts = record.entry.attempts;
                (Some(record), Some(attempts))
            },
        )
        .await
        .unwrap();
    assert_eq!(said, Some(2));
    assert_eq!(entry(&ledger, &slack).await.unwrap().attempts, 2);
}

/// What a daemon's metrics start from: each webhook's latest delivery, kept as deliveries are
/// recorded by any process, and nothing for a webhook never delivered to.
async fn each_webhooks_last_delivery_is_kept_as_deliveries_are_recorded(fx: Fixture) {
    let (ledger, other) = (fx.open().await, fx.open().await);
    assert!(ledger.last_deliveries().await.unwrap().is_empty());
    let first = delivered(&fx, &ledger, &key("slack")).await;
    tried_once(&fx, &ledger, &key("generic")).await;
    let slack = |at| vec![("apac".to_owned(), "slack".to_owned(), at)];
    assert_eq!(ledger.last_deliveries().await.unwrap(), slack(first));
    // Times are kept in seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let weekend = Span {
        first: "2021-03-16".parse().unwrap(),
        last: "2021-03-18".parse().unwrap(),
    };
    let later = delivered(&fx, &other, &Key::new("apac", weekend, "slack")).await;
    assert!(later > first);
    assert_eq!(ledger.last_deliveries().await.unwrap(), slack(later));
    // A delivery recorded last with an earlier time (a clock behind) leaves the latest one.
    let behind = later.timestamp() - 600;
    fx.tamper(&format!(
        "UPDATE digests SET delivered_at = {behind}
         WHERE team = 'apac' AND webhook = 'slack' AND first_day = '2021-03-18'"
    ))
    .await;
    assert_eq!(ledger.last_deliveries().await.unwrap(), slack(later));
}

async fn spans_and_webhooks_key_entries_apart(fx: Fixture) {
    let ledger = fx.open().await;
    let day = key("slack");
    let Claim::Leased(l) = lease(&ledger, &day, Requester::Daemon).await else {
        panic!()
    };
    l.finish(Finish::Posted(Posted::Delivered, fx.clock.now()))
        .await
        .unwrap();
    let weekend = Key::new(
        "apac",
        Span {
            first: "2021-03-16".parse().unwrap(),
            last: "2021-03-18".parse().unwrap(),
        },
        "slack",
    );
    assert!(matches!(
        lease(&ledger, &weekend, Requester::Daemon).await,
        Claim::Leased(_)
    ));
    assert!(matches!(
        lease(&ledger, &key("generic"), Requester::Daemon).await,
        Claim::Leased(_)
    ));
    let recent = ledger.recent(day.span.first).await.unwrap();
    assert_eq!(recent[&("apac".to_owned(), day.span)].len(), 2);
    assert_eq!(recent[&("apac".to_owned(), weekend.span)].len(), 1);
    assert_ne!(day.webhook_id(), weekend.webhook_id());
    assert_eq!(day.webhook_id(), key("slack").webhook_id());
}

async fn processes_racing_for_one_digest_get_one_lease(fx: Fixture) {
    let mut ledgers = Vec::new();
    for _ in 0..6 {
        ledgers.push(fx.open().await);
    }
    for round in 0..20 {
        let hook = key(&format!("hook-{round}"));
        // Odd rounds race for a digest the ledger already has a row of (a retry).
        if round % 2 == 1 {
            tried_once(&fx, &ledgers[0], &hook).await;
        }
        let claims = futures::future::join_all(
            ledgers
                .iter()
                .map(|ledger| ledger.lease(&hook, Requester::Daemon, "u")),
        )
        .await;
        let leased = claims
            .into_iter()
            .filter(|c| matches!(c.as_ref().unwrap(), Claim::Leased(_)))
            .count();
        assert_eq!(leased, 1, "round {round}");
    }
}

async fn opening_a_new_ledger_is_safe_to_race(fx: Fixture) {
    let opened = futures::future::join_all((0..8).map(|_| {
        let (location, clock) = (fx.location.clone(), fx.clock.clone());
        // Each on a thread of its own, as separate processes would.
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(Ledger::open(&location, clock))
                .map(drop)
        })
    }))
    .await;
    for result in opened {
        result.unwrap().unwrap();
    }
}

async fn reports_are_remembered_by_exact_window_and_forgotten_when_old(fx: Fixture) {
    use crate::schedule::Zone;
    let ledger = fx.open().await.history();
    let kolkata = Zone::parse("Asia/Kolkata").unwrap();
    let day = |d: &str| Window::for_date(kolkata, d.parse().unwrap());
    assert_eq!(
        ledger.recalled("acme", &day("2026-11-20")).await.unwrap(),
        None
    );
    ledger
        .remember("acme", &day("2026-11-20"), "{\"v\":1}".into())
        .await
        .unwrap();
    ledger
        .remember("acme", &day("2026-11-20"), "{\"v\":2}".into())
        .await
        .unwrap();
    ledger
        .remember("acme", &day("2026-10-01"), "{}".into())
        .await
        .unwrap();
    let recalled = ledger.recalled("acme", &day("2026-11-20")).await.unwrap();
    assert_eq!(recalled.as_deref(), Some("{\"v\":2}"));
    // Another account, another zone's window of the same date: not the same report.
    assert_eq!(
        ledger.recalled("globex", &day("2026-11-20")).await.unwrap(),
        None
    );
    let utc = Window::for_date(
        Zone::parse("+00:00").unwrap(),
        "2026-11-20".parse().unwrap(),
    );
    assert_eq!(ledger.recalled("acme", &utc).await.unwrap(), None);
    // Another process sees it too.
    let other = fx.open().await.history();
    assert!(
        other
            .recalled("acme", &day("2026-11-20"))
            .await
            .unwrap()
            .is_some()
    );
    let forgotten = ledger.forget_before("2026-11-01".parse().unwrap()).await;
    assert_eq!(forgotten.unwrap(), 1);
    assert_eq!(
        ledger.recalled("acme", &day("2026-10-01")).await.unwrap(),
        None
    );
    assert!(
        ledger
            .recalled("acme", &day("2026-11-20"))
            .await
            .unwrap()
            .is_some()
    );
}

async fn each_alert_is_recorded_once_across_processes(fx: Fixture) {
    let (ours, theirs) = (fx.open().await, fx.open().await);
    let slack = key("slack");
    assert!(ours.first_alert(&slack, "refused", "").await.unwrap());
    assert!(!theirs.first_alert(&slack, "refused", "").await.unwrap());
    assert!(!ours.first_alert(&slack, "refused", "").await.unwrap());
    // Another reason, or another webhook, is another alert.
    assert!(
        theirs
            .first_alert(&slack, "window_closed", "")
            .await
            .unwrap()
    );
    assert!(
        theirs
            .first_alert(&key("generic"), "refused", "")
            .await
            .unwrap()
    );
}

/// SQLite holds a shared lock on a WAL database's file while it has it open; another process
/// closing the file and finding no such lock checkpoints and removes the log under this one,
/// whose reads then fail (522) until it restarts. Closing any other descriptor of the file in
/// this process would drop that lock unseen.
#[tokio::test]
async fn an_open_sqlite_ledger_keeps_its_lock_on_the_file() {
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::new(Kind::Sqlite).await.unwrap();
    let ledger = fx.open().await;
    ledger.recent(key("slack").span.last).await.unwrap();
    let StateStore::Sqlite(path) = &fx.location else {
        unreachable!("a SQLite fixture")
    };
    let inode = format!(":{}", std::fs::metadata(path).unwrap().ino());
    let pid = std::process::id().to_string();
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    let held = locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"POSIX")
            && fields.get(4) == Some(&pid.as_str())
            && fields.get(5).is_some_and(|file| file.ends_with(&inode))
    });
    assert!(
        held,
        "no lock of this process on {}:\n{locks}",
        path.display()
    );
}

#[tokio::test]
async fn an_empty_damaged_or_foreign_sqlite_ledger_is_refused_not_started_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = WallClock::new();
    let open = |path: PathBuf| {
        let clock = clock.clone();
        async move {
            Ledger::open(&StateStore::Sqlite(path), clock)
                .await
                .map(drop)
                .err()
                .unwrap()
                .to_string()
        }
    };
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let err = open(empty).await;
    assert!(err.contains("empty") && err.contains("delete it"), "{err}");

    let good = dir.path().join("good.db");
    let ledger = Ledger::open(&StateStore::Sqlite(good.clone()), clock.clone()).await;
    drop(ledger.unwrap());
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let err = open(truncated).await;
    assert!(
        err.contains("truncated.db") && err.contains("is damaged") && err.contains("delete it"),
        "{err}"
    );

    // A file that isn't SQLite at all is most likely the wrong path: not "delete it" first.
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[acquire]\nbase_url = \"https://example.com\"\n".repeat(200),
    )
    .unwrap();
    let err = open(config).await;
    assert!(
        err.contains("not a SQLite database") && err.contains("check [state] path"),
        "{err}"
    );

    let foreign = dir.path().join("foreign.db");
    let url = sqlite_file_url(&foreign);
    execute_at(&url, "CREATE TABLE notes (x)").await.unwrap();
    let err = open(foreign).await;
    assert!(err.contains("not an acquire-digest ledger"), "{err}");
}

/// The whole file is checked before anything may be written to it, so before anything is
/// sent: beside start-up rather than before it (a year's ledger takes seconds to read), and
/// not for a read (`status`, which monitoring may run each minute, and dry runs).
#[tokio::test]
async fn a_ledger_damaged_in_its_middle_is_refused_for_sending_but_opened_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let location = StateStore::Sqlite(path.clone());
    drop(Ledger::open(&location, WallClock::new()).await.unwrap());
    crate::db::testing::damage_a_middle_page(&path)
        .await
        .unwrap();

    // As a large file's check would take seconds: every kind of write waits for it.
    let hold = crate::db::testing::hold_page_checks().await;
    let ledger = Ledger::open(&location, WallClock::new()).await.unwrap();
    let fresh = Key::new(
        "new-team",
        Span::day("2026-07-16".parse().unwrap()),
        "slack",
    );
    let lease = tokio::spawn({
        let (ledger, fresh) = (ledger.clone(), fresh.clone());
        async move { ledger.lease(&fresh, Requester::Daemon, "u").await.map(drop) }
    });
    let marks = tokio::spawn({
        let ledger = ledger.clone();
        let marks = [("new-team".to_owned(), Utc::now())];
        async move { ledger.advance(&marks).await }
    });
    let alert = tokio::spawn({
        let (ledger, fresh) = (ledger.clone(), fresh.clone());
        async move { ledger.first_alert(&fresh, "missed", "").await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (what, write) in [("lease", &lease), ("watermark", &marks), ("alert", &alert)] {
        assert!(
            !write.is_finished(),
            "the {what} was written before the check"
        );
    }
    drop(hold);
    let refused = ledger.checked().await.err().unwrap();
    assert!(refused.to_string().contains("is damaged"), "{refused}");
    for write in [lease, marks, alert] {
        let refused = (write.await.unwrap()).expect_err("a write to a damaged ledger");
        assert!(refused.to_string().contains("is damaged"), "{refused}");
    }
    drop(ledger);
    let reader = Ledger::open_to_read(&location, WallClock::new())
        .await
        .unwrap();
    let entries = reader.recent("2026-07-16".parse().unwrap()).await.unwrap();
    assert!(entries.is_empty(), "nothing was written: {entries:?}");
    assert!(reader.watermarks().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_ledger_that_cannot_be_opened_names_the_cause_and_is_never_advised_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let open = |path: PathBuf| async move {
        let opened = Ledger::open(&StateStore::Sqlite(path), WallClock::new()).await;
        opened.map(drop).err().unwrap().to_string()
    };
    let folder = dir.path().join("folder.db");
    std::fs::create_dir(&folder).unwrap();
    let err = open(folder).await;
    assert!(
        err.contains("cannot be opened") && err.contains("directory"),
        "{err}"
    );
    assert!(!err.contains("delete"), "{err}");

    let locked = dir.path().join("locked.db");
    drop(
        Ledger::open(&StateStore::Sqlite(locked.clone()), WallClock::new())
            .await
            .unwrap(),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o400)).unwrap();
    // Root reads and writes whatever the mode says: nothing to see there.
    if std::fs::OpenOptions::new()
        .write(true)
        .open(&locked)
        .is_err()
    {
        let err = open(locked).await;
        assert!(
            err.contains("Permission denied") && err.contains("access"),
            "{err}"
        );
        assert!(!err.contains("delete"), "{err}");
    }
}

#[tokio::test]
async fn a_sqlite_ledger_deleted_or_replaced_under_a_running_process_stops_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let location = StateStore::Sqlite(path.clone());
    let ledger = Ledger::open(&location, WallClock::new()).await.unwrap();
    let since: NaiveDate = "2021-01-01".parse().unwrap();
    ledger.recent(since).await.unwrap();
    std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
    let err = ledger
        .lease(&key("slack"), Requester::Daemon, "u")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("disappeared"), "{err}");
    drop(Ledger::open(&location, WallClock::new()).await.unwrap());
    let err = ledger.recent(since).await.unwrap_err();
    assert!(err.to_string().contains("replaced"), "{err}");
    std::fs::rename(dir.path().join("moved.db"), &path).unwrap();
    ledger.recent(since).await.unwrap();
}

async fn a_schema_newer_than_this_version_is_refused_naming_both_versions(fx: Fixture) {
    drop(fx.open().await);
    let checksum = match fx.kind {
        Kind::Sqlite => "X'00'",
        Kind::Postgres => "'\\x00'::bytea",
    };
    fx.tamper(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99, 'from the future', true, {checksum}, 0)"
    ))
    .await;
    let err = Ledger::open(&fx.location, fx.clock.clone())
        .await
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("schema version 99") && err.contains("newer than this version"),
        "{err}"
    );
    assert!(err.contains("upgrade acquire-digest"), "{err}");
}

/// A ledger of the last version before sqlx kept its schema version in `user_version`
/// and SQLite's leases in seconds: adopted as it is, its rows kept, its lease read right.
#[tokio::test]
async fn a_sqlite_ledger_from_before_the_migrations_is_adopted_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    let held_until = Utc::now().timestamp() + 1000;
    let schema = include_str!("../../migrations/1_ledger.sql");
    execute_at(
            &sqlite_file_url(&path),
            &format!(
                "{schema}
                 INSERT INTO digests (team, first_day, last_day, webhook, state, attempts, delivered_at)
                     VALUES ('apac', '2021-03-18', '2021-03-18', 'slack', 'delivered', 1, 1616124600);
                 INSERT INTO digests (team, first_day, last_day, webhook, state, lease_owner, lease_until)
                     VALUES ('apac', '2021-03-18', '2021-03-18', 'generic', 'pending', 'x', {held_until});
                 PRAGMA user_version = 3;"
            ),
        )
        .await
        .unwrap();
    let ledger = Ledger::open(&StateStore::Sqlite(path), WallClock::new())
        .await
        .unwrap();
    let delivered = entry(&ledger, &key("slack")).await.unwrap();
    assert_eq!(delivered.state, State::Delivered);
    let held = entry(&ledger, &key("generic")).await.unwrap();
    assert_eq!(
        held.leased_until.map(|t| t.timestamp()),
        Some(held_until),
        "a lease in seconds is read in milliseconds"
    );
}

#[tokio::test]
async fn a_version_1_sqlite_ledger_keeps_its_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    execute_at(
            &sqlite_file_url(&path),
            "CREATE TABLE deliveries (team TEXT, date TEXT, webhook TEXT, delivered_at TEXT, PRIMARY KEY (team, date, webhook));
             INSERT INTO deliveries VALUES ('apac', '2021-03-18', 'slack', '2021-03-19T03:30:00+00:00');
             CREATE TABLE claims (team TEXT);",
        )
        .await
        .unwrap();
    let ledger = Ledger::open(&StateStore::Sqlite(path), WallClock::new())
        .await
        .unwrap();
    let entry = entry(&ledger, &key("slack")).await.unwrap();
    assert_eq!(entry.state, State::Delivered);
    assert_eq!(
        entry.delivered_at,
        Some("2021-03-19T03:30:00Z".parse().unwrap())
    );
    // Brought up to the current schema, alerts and history included.
    assert!(
        ledger
            .first_alert(&key("slack"), "refused", "")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn sslmode_require_encrypts_unverified_and_verify_full_refuses_an_unknown_certificate() {
    let Some(server) = test_database_url() else {
        return;
    };
    if std::env::var("ACQUIRE_DIGEST_TEST_DATABASE_TLS").is_err() {
        eprintln!("skipped: the test server has no TLS (scripts/with-postgres needs openssl)");
        return;
    }
    let scratch = scratch_database(&server).await.unwrap();
    let name = scratch.rsplit('/').next().unwrap().to_owned();
    let with = |mode: &str| {
        StateStore::Postgres(DatabaseUrl::parse(&format!("{scratch}?sslmode={mode}")).unwrap())
    };
    let asked = |sql: &'static str| {
        let (server, name) = (server.clone(), name.clone());
        async move {
            use sqlx::Connection;
            let mut admin = sqlx::AnyConnection::connect(&server).await.unwrap();
            let row = sqlx::query(sql)
                .bind(name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            let count = row.try_get::<i64, _>(0).unwrap();
            (count, row.try_get::<Option<bool>, _>(1).unwrap())
        }
    };
    let encrypted = || {
        asked(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s
                 JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
        )
    };

    // The server's certificate is self-signed: require takes it, and encrypts.
    let ledger = Ledger::open(&with("require"), WallClock::new())
        .await
        .unwrap();
    ledger.recent("2021-01-01".parse().unwrap()).await.unwrap();
    let (connections, all_tls) = encrypted().await;
    assert!(
        connections >= 1 && all_tls == Some(true),
        "{connections} {all_tls:?}"
    );
    drop(ledger);

    // verify-full checks it against the system's roots, which don't know it.
    let err = Ledger::open(&with("verify-full"), WallClock::new())
        .await
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");

    // And disable is plain text.
    let plain = Ledger::open(&with("disable"), WallClock::new())
        .await
        .unwrap();
    plain.recent("2021-01-01".parse().unwrap()).await.unwrap();
    let (_, any_tls) = asked(
        "SELECT count(*), bool_or(s.ssl) FROM pg_stat_ssl s
             JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
    )
    .await;
    assert_eq!(any_tls, Some(false));
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://digest:hunter2-secret@127.0.0.1:{port}/ledger");
    let location = StateStore::Postgres(DatabaseUrl::parse(&url).unwrap());
    let err = Ledger::open(&location, WallClock::new())
        .await
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        err.contains(&format!("postgres://127.0.0.1:{port}/ledger"))
            && err.contains("cannot reach the database"),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_password_is_named_as_such_and_never_shown() {
    let (Some(server), Ok(role)) = (
        test_database_url(),
        std::env::var("ACQUIRE_DIGEST_TEST_PASSWORD_ROLE"),
    ) else {
        return;
    };
    // Tests run in parallel and more than once per cluster: the role may be there already.
    let create = format!("CREATE ROLE {role} LOGIN PASSWORD 'the-right-one'");
    let _ = execute_at(&server, &create).await;
    let with_password = |password: &str| {
        let mut url = url::Url::parse(&server).unwrap();
        url.set_username(&role).unwrap();
        url.set_password(Some(password)).unwrap();
        StateStore::Postgres(DatabaseUrl::parse(url.as_str()).unwrap())
    };
    let err = Ledger::open_to_read(&with_password("hunter2-wrong"), WallClock::new())
        .await
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        err.contains("refused the login") && err.contains("password authentication failed"),
        "{err}"
    );
    // The same role with its password gets in: it was the password that was refused.
    Ledger::open_to_read(&with_password("the-right-one"), WallClock::new())
        .await
        .unwrap();
}

/// Another session holds the row's lock without writing it (as a transaction that only
/// looked does) until the returned sender fires.
async fn lock_row_without_writing(fx: &Fixture, webhook: &str) -> tokio::sync::oneshot::Sender<()> {
    let StateStore::Postgres(url) = &fx.location else {
        unreachable!("PostgreSQL only")
    };
    use sqlx::Connection;
    let mut client = sqlx::AnyConnection::connect(url.expose().as_str())
        .await
        .unwrap();
    let (locked_tx, locked) = tokio::sync::oneshot::channel();
    let (unlock, unlocked) = tokio::sync::oneshot::channel::<()>();
    let webhook = webhook.to_owned();
    tokio::spawn(async move {
        let mut tx = client.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM digests WHERE webhook = $1 FOR UPDATE")
            .bind(webhook)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        locked_tx.send(()).unwrap();
        let _ = unlocked.await;
        tx.commit().await.unwrap();
    });
    locked.await.unwrap();
    unlock
}

/// A lease taken after waiting longer than its ttl for the row's lock still runs its whole
/// ttl from when it was taken, so nobody else takes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_after_a_lock_wait_runs_its_whole_ttl() {
    let Some(fx) = Fixture::new(Kind::Postgres).await else {
        return;
    };
    let (ours, theirs) = (fx.open().await, fx.open().await);
    let slack = key("slack");
    let Claim::Leased(first) = lease(&ours, &slack, Requester::Daemon).await else {
        panic!()
    };
    first.finish(Finish::Exhausted).await.unwrap();
    fx.tamper("UPDATE digests SET state = 'pending'").await;
    let unlock = lock_row_without_writing(&fx, "slack").await;
    let taking = {
        let (ours, slack) = (ours.clone(), slack.clone());
        tokio::spawn(async move { lease(&ours, &slack, Requester::Daemon).await })
    };
    tokio::time::sleep(POSTGRES_TTL + Duration::from_secs(1)).await;
    unlock.send(()).unwrap();
    let Claim::Leased(_held) = taking.await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        lease(&theirs, &slack, Requester::Daemon).await,
        Claim::Busy(_)
    ));
}

/// A digest's first lease is timed by the server's clock like every other, so a replica whose
/// clock is behind does not write a lease that is over as it is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_lease_is_timed_by_the_servers_clock() {
    let Some(fx) = Fixture::new(Kind::Postgres).await else {
        return;
    };
    let (ours, theirs) = (fx.open().await, fx.open().await);
    fx.clock.jump(-chrono::Duration::minutes(10));
    let slack = key("slack");
    let Claim::Leased(_held) = lease(&ours, &slack, Requester::Daemon).await else {
        panic!()
    };
    assert!(matches!(
        lease(&theirs, &slack, Requester::Daemon).await,
        Claim::Busy(_)
    ));
}

/// The same for the lease a POST's permit renews: no second holder while the POST is out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_permitted_after_a_lock_wait_is_not_posted_twice() {
    let Some(fx) = Fixture::new(Kind::Postgres).await else {
        return;
    };
    let (ours, theirs) = (fx.open().await, fx.open().await);
    let slack = key("slack");
    let Claim::Leased(held) = lease(&ours, &slack, Requester::Daemon).await else {
        panic!()
    };
    held.stall();
    let unlock = lock_row_without_writing(&fx, "slack").await;
    let permit = tokio::spawn(async move { (held.before_post().await.unwrap(), held) });
    tokio::time::sleep(POSTGRES_TTL + Duration::from_secs(1)).await;
    unlock.send(()).unwrap();
    let (permit, _held) = permit.await.unwrap();
    assert_eq!(permit, Permit::Go);
    if let Claim::Leased(second) = lease(&theirs, &slack, Requester::Daemon).await {
        let permit = second.before_post().await.unwrap();
        panic!("a second holder while our POST is out, its permit: {permit:?}");
    }
}

async fn a_digest_waiting_for_data_is_pending_unleased_and_remembers_its_read(fx: Fixture) {
    let ledger = fx.open().await;
    let slack = key("slack");
    let Claim::Leased(first) = lease(&ledger, &slack, Requester::Daemon).await else {
        panic!()
    };
    assert_eq!(first.reads(), &Reads::default());
    let retry_at = fx.clock.now() + chrono::Duration::minutes(15);
    let read = "0f3a".to_owned();
    first
        .finish(Finish::Waiting { read, retry_at })
        .await
        .unwrap()
        .unwrap();
    let waiting = entry(&ledger, &slack).await.unwrap();
    // Not a failure, not held: pending until the read again, as any process sees it.
    assert_eq!((waiting.state, waiting.attempts), (State::Pending, 0));
    assert_eq!(waiting.leased_until, None);
    assert_eq!(waiting.last_error.as_deref(), Some(WAITING_FOR_DATA));
    assert_eq!(
        waiting.next_attempt.map(|t| t.timestamp()),
        Some(retry_at.timestamp())
    );
    let Claim::Leased(second) = lease(&fx.open().await, &slack, Requester::Daemon).await else {
        panic!()
    };
    assert_eq!(
        second.reads(),
        &Reads {
            count: 1,
            last: Some("0f3a".into())
        }
    );
    second
        .finish(Finish::Posted(Posted::Delivered, retry_at))
        .await
        .unwrap();
    let delivered = entry(&ledger, &slack).await.unwrap();
    assert_eq!((delivered.state, delivered.reads), (State::Delivered, 1));
}

async fn totals_are_kept_by_exact_window_and_provisional_ones_are_not_trusted(fx: Fixture) {
    use crate::history::Totals;
    use crate::schedule::Zone;
    let history = fx.open().await.history();
    let kolkata = Zone::parse("Asia/Kolkata").unwrap();
    let day = |d: &str| Window::for_date(kolkata, d.parse().unwrap());
    let windows = [day("2026-11-18"), day("2026-11-19"), day("2026-11-20")];
    let totals = |visitors| Totals { visitors, chats: 2 };
    history
        .remember_totals("acme", &windows[0], totals(40), false)
        .await
        .unwrap();
    history
        .remember_totals("acme", &windows[2], totals(7), true)
        .await
        .unwrap();
    // Another zone's window of the same date is another window.
    let utc = Window::for_date(
        Zone::parse("+00:00").unwrap(),
        "2026-11-19".parse().unwrap(),
    );
    history
        .remember_totals("acme", &utc, totals(99), false)
        .await
        .unwrap();
    let known = history.totals("acme", &windows).await.unwrap();
    assert_eq!(known, [Some(totals(40)), None, None]);
    // Read again and settled, it is trusted.
    history
        .remember_totals("acme", &windows[2], totals(41), false)
        .await
        .unwrap();
    let known = fx
        .open()
        .await
        .history()
        .totals("acme", &windows)
        .await
        .unwrap();
    assert_eq!(known, [Some(totals(40)), None, Some(totals(41))]);
    assert_eq!(
        history.totals("globex", &windows).await.unwrap(),
        [None, None, None]
    );
    // Forgotten with the reports, by the window's end.
    history
        .forget_before("2026-11-19".parse().unwrap())
        .await
        .unwrap();
    let known = history.totals("acme", &windows).await.unwrap();
    assert_eq!(known, [None, None, Some(totals(41))]);
}

async fn a_pass_reads_its_teams_rows_and_older_ones_only_if_pending(fx: Fixture) {
    let ledger = fx.open().await;
    let on = |team: &str, date: &str| Key::new(team, Span::day(date.parse().unwrap()), "slack");
    let delivered = [
        on("apac", "2021-03-18"),
        on("apac", "2021-03-10"),
        on("emea", "2021-03-18"),
    ];
    for key in &delivered {
        let Claim::Leased(l) = lease(&ledger, key, Requester::Daemon).await else {
            panic!()
        };
        l.finish(Finish::Posted(Posted::Delivered, fx.clock.now()))
            .await
            .unwrap();
    }
    let failed = on("apac", "2021-03-12");
    tried_once(&fx, &ledger, &failed).await;

    let (since, pending_since) = ("2021-03-17".parse().unwrap(), "2021-03-09".parse().unwrap());
    let read = ledger
        .owed_of(since, pending_since, Some(&["apac"]))
        .await
        .unwrap();
    let mut spans: Vec<(String, String)> = (read.keys())
        .map(|(team, span)| (team.clone(), span.to_string()))
        .collect();
    spans.sort();
    // Not emea's (another team), nor apac's delivered 10 March (settled, before `since`).
    assert_eq!(
        spans,
        [
            ("apac".to_owned(), "2021-03-12".to_owned()),
            ("apac".to_owned(), "2021-03-18".to_owned())
        ]
    );
    let everyone = ledger.owed_of(since, pending_since, None).await.unwrap();
    assert_eq!(everyone.len(), 3);
    let pending = ledger.pending_teams(pending_since).await.unwrap();
    assert_eq!(pending.into_iter().collect::<Vec<_>>(), ["apac"]);
}

/// PostgreSQL plans a statement a connection runs again and again once, and keeps that plan:
/// made while the ledger was new and empty, a read of one digest (the read, and a lease's
/// insert that reads the row there) must still find it by its team, not walk every team's row
/// of its day (286 µs a read at 20,000 teams, and growing with them).
#[tokio::test]
async fn reading_one_digest_planned_on_an_empty_ledger_stays_a_lookup_by_team() {
    use sqlx::Connection;
    let Some(server) = test_database_url() else {
        return;
    };
    let scratch = scratch_database(&server).await.unwrap();
    let location = StateStore::Postgres(DatabaseUrl::parse(&scratch).unwrap());
    drop(Ledger::open(&location, WallClock::new()).await.unwrap());
    let mut connection = sqlx::PgConnection::connect(&scratch).await.unwrap();
    // The plans made without the values, as the server keeps after a statement's fifth run,
    // made now, on the empty table: of the read, and of a lease's insert that reads the row
    // when it is there.
    let prepare = format!(
        "SET plan_cache_mode = force_generic_plan;
         PREPARE one(text, text, text, text) AS {};
         EXECUTE one('team-0', '2026-07-15', '2026-07-15', 'slack');
         PREPARE taken AS {};
         EXECUTE taken('team-0', '2026-07-15', '2026-07-15', 'slack', 'pending', 0, 0, NULL,
             NULL, NULL, NULL, 'token', 1, 0, 0, NULL, 90000);",
        *READ_POSTGRES, *INSERT_OR_READ_POSTGRES
    );
    sqlx::raw_sql(&prepare)
        .execute(&mut connection)
        .await
        .unwrap();
    let day = "INSERT INTO digests (team, first_day, last_day, webhook, state)
        SELECT 'team-' || i, '2026-07-15', '2026-07-15', 'slack', 'delivered'
        FROM generate_series(1, 2000) i";
    sqlx::raw_sql(day).execute(&mut connection).await.unwrap();
    for explain in [
        "EXPLAIN EXECUTE one('team-7', '2026-07-15', '2026-07-15', 'slack')",
        "EXPLAIN EXECUTE taken('team-7', '2026-07-15', '2026-07-15', 'slack', 'pending', 0, 0,
             NULL, NULL, NULL, NULL, 'token', 1, 0, 0, NULL, 90000)",
    ] {
        let plan: Vec<String> = sqlx::query_scalar(explain)
            .fetch_all(&mut connection)
            .await
            .unwrap();
        let looked_up_by = plan.iter().find(|line| line.contains("Index Cond"));
        assert!(
            looked_up_by.is_some_and(|condition| condition.contains("team = $1")),
            "{plan:#?}"
        );
    }
}

/// A connection to the database at `url` that can count its statements; None outside CI
/// where the server does not load pg_stat_statements (`scripts/with-postgres` does).
async fn counting_statements(url: &str) -> Option<sqlx::PgConnection> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    let loaded: bool = sqlx::query_scalar(
        "SELECT current_setting('shared_preload_libraries') LIKE '%pg_stat_statements%'",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    if !loaded {
        assert!(
            std::env::var("CI").is_err(),
            "the test server does not load pg_stat_statements"
        );
        eprintln!("skipped: the test server does not load pg_stat_statements");
        return None;
    }
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut connection)
        .await
        .unwrap();
    Some(connection)
}

/// How many statements this database ran that begin as `text` does (`%` for any text).
async fn statements_like(connection: &mut sqlx::PgConnection, text: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND query LIKE $1",
    )
    .bind(format!("{text}%"))
    .fetch_one(connection)
    .await
    .unwrap()
}

/// PostgreSQL's insert sees `forgotten` as it was when the insert began, and one that waited
/// on the forget's delete of the row makes it anew, after the day was forgotten. So an
/// unforced admin's lease asks again once it has made its row, and undoes it. A trigger
/// stands in for that forget, committing between the insert's look and its write.
#[tokio::test]
async fn on_postgresql_a_row_made_as_its_day_is_forgotten_is_undone() {
    let Some(fx) = Fixture::new(Kind::Postgres).await else {
        return;
    };
    let ledger = fx.open().await;
    let Claim::Leased(_before) = lease(&ledger, &key("generic"), Requester::Daemon).await else {
        panic!("a row made before")
    };
    fx.tamper(
        "CREATE FUNCTION forget_now() RETURNS trigger AS $$ BEGIN
            INSERT INTO forgotten (id, before_day) VALUES (1, '2021-03-19')
            ON CONFLICT (id) DO UPDATE SET before_day = excluded.before_day;
            RETURN NEW;
         END $$ LANGUAGE plpgsql",
    )
    .await;
    fx.tamper(
        "CREATE TRIGGER forget_now AFTER INSERT ON digests
         FOR EACH ROW EXECUTE FUNCTION forget_now()",
    )
    .await;
    refused_as_forgotten(&ledger, &key("slack"), "2021-03-19").await;
    // Undone, and nothing else of the span with it.
    let everything = "2000-01-01".parse().unwrap();
    let rows = ledger.recent(everything).await.unwrap();
    let span = &rows[&("apac".to_owned(), key("slack").span)];
    assert_eq!(span.keys().collect::<Vec<_>>(), ["generic"]);
    // The daemon's lease is not asked again: the forget never takes a day it may still send.
    let Claim::Leased(_held) = lease(&ledger, &key("teams"), Requester::Daemon).await else {
        panic!("the daemon's lease")
    };
}

/// A holder writes against the row as it last wrote it, on PostgreSQL too: while nobody else
/// writes the row, its permit, renewals and finish are one statement each, none reads the row
/// first, and the permit's lease runs from the server's time as it wrote.
#[tokio::test]
async fn a_holder_on_postgresql_writes_without_reading_the_row_again() {
    let Some(fx) = Fixture::new(Kind::Postgres).await else {
        return;
    };
    let ledger = fx.open().await;
    let Some(mut stats) = counting_statements(&url_of(&fx.location)).await else {
        return;
    };
    let keyed_reads = format!("SELECT {COLUMNS}, % FROM digests WHERE {KEY}");
    let writes = "UPDATE digests SET ";
    let lease_now = format!(
        "SELECT lease_until, lease_until - {} FROM digests",
        crate::db::Dialect::Postgres.now_ms(0)
    );
    let inserts = "WITH inserted AS (INSERT INTO digests ";
    let reads = statements_like(&mut stats, &keyed_reads).await;
    let inserted = statements_like(&mut stats, inserts).await;
    let key = key("slack");
    let Claim::Leased(held) = lease(&ledger, &key, Requester::Daemon).await else {
        panic!("a lease of {key}")
    };
    // Heartbeats renew from here on, every quarter of the ttl.
    let leased = tokio::time::Instant::now();
    assert_eq!(
        (
            statements_like(&mut stats, &keyed_reads).await,
            statements_like(&mut stats, inserts).await
        ),
        (reads, inserted + 1),
        "a new row's lease is one statement, its insert"
    );
    // Another replica finds the digest taken by that same one statement, with no read.
    let replica = fx.open().await;
    let Claim::Busy(_) = lease(&replica, &key, Requester::Daemon).await else {
        panic!("another replica's lease of {key} finds it taken")
    };
    assert_eq!(
        (
            statements_like(&mut stats, &keyed_reads).await,
            statements_like(&mut stats, inserts).await
        ),
        (reads, inserted + 2),
        "a taken digest's lease is one statement too"
    );
    let writes_before = statements_like(&mut stats, writes).await;

    let (until_by_lease, _): (i64, i64) = sqlx::query_as(&lease_now)
        .fetch_one(&mut stats)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(held.before_post().await.unwrap(), Permit::Go);
    let (until_by_permit, left): (i64, i64) = sqlx::query_as(&lease_now)
        .fetch_one(&mut stats)
        .await
        .unwrap();
    let ttl = i64::try_from(fx.ttl().as_millis()).unwrap();
    assert!(
        until_by_permit - until_by_lease >= 200 && ttl - 1000 < left && left <= ttl,
        "the permit moved the lease by {} ms, and {left} ms of {ttl} are left",
        until_by_permit - until_by_lease
    );
    // Between the first renewal and the second, where none races the finish for the row.
    tokio::time::sleep_until(leased + fx.ttl() * 3 / 8).await;
    held.finish(Finish::Posted(Posted::Delivered, fx.clock.now()))
        .await
        .unwrap()
        .expect("the lease was still this holder's");
    assert_eq!(statements_like(&mut stats, &keyed_reads).await, reads);
    let written = statements_like(&mut stats, writes).await - writes_before;
    assert!(written >= 3, "a permit, a renewal and a finish: {written}");
    let entry = entry(&ledger, &key).await.unwrap();
    assert_eq!((entry.state, entry.posts), (State::Delivered, 1));
    assert!(entry.leased_until.is_none());
}

/// A replica that read ahead which digests another took gets their leases refused without a
/// statement: the database below is emptied behind its back, and what it read still answers,
/// once, and only for an eighth of the ttl, and not once a write failed. A digest read as
/// free, or one the read would not refuse to this requester, is leased from the database.
async fn rows_read_ahead_refuse_a_lease_once_and_only_while_fresh(fx: Fixture) {
    // Leases long enough, and what is read fresh long enough, however slow this machine is.
    let long = Duration::from_secs(80);
    let open_long = || Ledger::open_with(&fx.location, fx.clock.clone(), long, Access::Write);
    let (other, ours) = (open_long().await.unwrap(), open_long().await.unwrap());
    let (held, sent, resent, free) = (
        key("slack"),
        key("teams"),
        key("mattermost"),
        key("generic"),
    );
    let Claim::Leased(_holding) = lease(&other, &held, Requester::Daemon).await else {
        panic!("a lease of {held}")
    };
    delivered(&fx, &other, &sent).await;
    delivered(&fx, &other, &resent).await;
    let keys = [&held, &sent, &resent, &free].map(Key::clone);
    ours.read_ahead(&keys).await.unwrap();
    fx.tamper("DELETE FROM digests").await;

    let Claim::Busy(until) = lease(&ours, &held, Requester::Daemon).await else {
        panic!("{held}, read ahead as held, is refused as held")
    };
    assert!(until > fx.clock.now(), "held until {until}");
    let Claim::Settled(entry) = lease(&ours, &sent, Requester::Daemon).await else {
        panic!("{sent}, read ahead as delivered, is refused as settled")
    };
    assert_eq!(entry.state, State::Delivered);
    // An admin's forced `once` sends a delivered digest again: the read doesn't refuse it.
    let Claim::Leased(_forced) = lease(&ours, &resent, Requester::Admin { force: true }).await
    else {
        panic!("{resent}, forced, is leased from the database")
    };
    let Claim::Leased(_free) = lease(&ours, &free, Requester::Daemon).await else {
        panic!("{free}, read as free, is leased from the database")
    };
    // Used once: the database, emptied, has the held digest free now.
    let Claim::Leased(_ours) = lease(&ours, &held, Requester::Daemon).await else {
        panic!("{held} is asked of the database the second time")
    };

    // Out of date after an eighth of the ttl, long before the other's lease runs out.
    let short = fx.open().await;
    let later = key("discord");
    let Claim::Leased(_later) = lease(&other, &later, Requester::Daemon).await else {
        panic!("a lease of {later}")
    };
    short
        .read_ahead(std::slice::from_ref(&later))
        .await
        .unwrap();
    fx.pass(fx.ttl() / 8 + Duration::from_millis(100)).await;
    fx.tamper("DELETE FROM digests").await;
    let Claim::Leased(_) = lease(&short, &later, Requester::Daemon).await else {
        panic!("{later}, read ahead too long ago, is asked of the database")
    };

    // Once something failed, a lease asks the database, whose answer says whether writes
    // work, until a write applies: one that applies nothing (the expiry of a held digest)
    // doesn't count.
    let (kept, again) = (key("webex"), key("zulip"));
    for held in [&kept, &again] {
        let Claim::Leased(_) = lease(&other, held, Requester::Daemon).await else {
            panic!("a lease of {held}")
        };
    }
    ours.read_ahead(&[kept.clone(), again.clone()])
        .await
        .unwrap();
    fx.tamper("INSERT INTO forgotten (id, before_day) VALUES (1, '2021-03-18')")
        .await;
    let forgotten = Key::new("apac", Span::day("2021-03-17".parse().unwrap()), "slack");
    let unforced = Requester::Admin { force: false };
    assert!(ours.lease(&forgotten, unforced, "url-1").await.is_err());
    assert!(!ours.expire(&kept).await.unwrap(), "{kept} is held");
    fx.tamper("DELETE FROM digests").await;
    let Claim::Leased(_asked) = lease(&ours, &kept, Requester::Daemon).await else {
        panic!("{kept} is asked of the database after a failure")
    };
    // That lease's insert applied: what was read answers again.
    let Claim::Busy(_) = lease(&ours, &again, Requester::Daemon).await else {
        panic!("{again}, read ahead as held, is refused once a write applied")
    };
}
