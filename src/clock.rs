//! Time as an input: the daemon and the ledger read the time and wait for it through a
//! [`Clock`], so a test can jump it forward three days or back an hour and watch what happens.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once `now()` has reached `at`, also when the clock got there by a jump.
    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The wall clock, optionally shifted. Waits in steps of at most a minute and re-reads the
/// time after each, so a suspended laptop or an NTP step is noticed within a minute; a test's
/// [`WallClock::jump`] wakes every sleeper at once.
#[derive(Default)]
pub struct WallClock {
    shift: Mutex<chrono::Duration>,
    jumped: Notify,
}

impl WallClock {
    pub fn new() -> Arc<WallClock> {
        Arc::new(WallClock::default())
    }

    /// A clock that reads `at` now and runs on from there.
    pub fn starting_at(at: DateTime<Utc>) -> Arc<WallClock> {
        let clock = WallClock::new();
        *clock.shift.lock().expect("clock lock") = at - Utc::now();
        clock
    }

    /// Steps the clock by `by`, forward or back, as suspend/resume or NTP would.
    pub fn jump(&self, by: chrono::Duration) {
        *self.shift.lock().expect("clock lock") += by;
        self.jumped.notify_waiters();
    }
}

impl Clock for WallClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.shift.lock().expect("clock lock")
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                // Registered before the time is read: a jump in between still wakes us.
                let jumped = self.jumped.notified();
                tokio::pin!(jumped);
                jumped.as_mut().enable();
                let left = (at - self.now()).to_std().unwrap_or_default();
                if left.is_zero() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(left.min(Duration::from_secs(60))) => {}
                    () = jumped => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_jump_wakes_a_sleeper_at_once() {
        let clock = WallClock::starting_at("2026-03-01T00:00:00Z".parse().unwrap());
        let target = clock.now() + chrono::Duration::days(3);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(target).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sleeper.is_finished());
        clock.jump(chrono::Duration::days(3));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken by the jump")
            .unwrap();
        assert!(clock.now() >= target);
    }
}
