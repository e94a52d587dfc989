//! The one clock postbus keeps time by: PostgreSQL's.
//!
//! Delivery times, expiry, dedup windows and leases are stored as epoch milliseconds and
//! compared by every broker and by the SQL API (`postbus.now_ms()`), so they must all read
//! the same clock, or a message's expiry would depend on which host looked at it. That clock
//! is the database server's: it is the one thing every broker and every SQL caller shares.
//!
//! Reading it per message would cost a round trip, so a broker keeps its own estimate: the
//! database time it last observed plus the time since then on this host's *monotonic* clock.
//! A step of this host's wall clock (an NTP correction, a wrong `date`) therefore changes
//! nothing; a step of the database's clock is followed at the next observation (the node
//! heartbeat, a quarter of the node lease).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Instant;

/// The process's monotonic origin.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn monotonic_ms() -> i64 {
    origin().elapsed().as_millis() as i64
}

/// An estimate of a remote clock: its epoch ms minus monotonic ms since [`origin`]. Until
/// the first observation it is this host's wall clock, so timestamps are sensible even before
/// the database answered.
pub(crate) struct Clock {
    offset_ms: AtomicI64,
    observed: AtomicBool,
}

/// The database's clock, shared by everything in this process.
static DATABASE: Clock = Clock::new();

/// Now, in epoch milliseconds on the database's clock (as last observed).
pub fn now_ms() -> i64 {
    DATABASE.now_ms()
}

/// What one observation of the database's clock changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockChange {
    /// The first observation: how far the database's clock is ahead of this host's (ms).
    FirstSkew(i64),
    /// A later observation: how far the database's clock moved against the estimate (ms).
    Moved(i64),
}

/// How far the database's clock is ahead of this host's wall clock now (ms; negative when
/// behind). For the metrics: postbus does not use the host's clock, but a large skew means
/// one of the two is wrong.
pub fn skew_ms() -> i64 {
    DATABASE.now_ms() - postbus_model::now_ms()
}

/// Records that the database said `db_ms` for a query sent at `sent` and answered at
/// `received`, and says in the log when its clock is far from this host's or stepped.
pub(crate) fn observed(db_ms: i64, sent: Instant, received: Instant) {
    /// Round trips and the drift of the monotonic clock stay far below this.
    const NOTABLE_MS: i64 = 1_000;
    match DATABASE.observe(db_ms, sent, received) {
        ClockChange::FirstSkew(ms) if ms.abs() >= NOTABLE_MS => tracing::warn!(
            skew_ms = ms,
            "the database's clock differs from this host's; postbus keeps time by the database's (delivery times, expiry, leases)"
        ),
        ClockChange::FirstSkew(ms) => tracing::debug!(skew_ms = ms, "database clock observed"),
        ClockChange::Moved(ms) if ms.abs() >= NOTABLE_MS => tracing::warn!(
            moved_ms = ms,
            "the database's clock stepped; scheduled delivery and expiry follow it"
        ),
        ClockChange::Moved(_) => {}
    }
}

impl Clock {
    const UNSET: i64 = i64::MIN;

    pub(crate) const fn new() -> Clock {
        Clock {
            offset_ms: AtomicI64::new(Self::UNSET),
            observed: AtomicBool::new(false),
        }
    }

    fn offset(&self) -> i64 {
        let o = self.offset_ms.load(Ordering::Relaxed);
        if o != Self::UNSET {
            return o;
        }
        let host = postbus_model::now_ms() - monotonic_ms();
        // Another thread may have set it meanwhile; theirs wins.
        match self.offset_ms.compare_exchange(
            Self::UNSET,
            host,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => host,
            Err(set) => set,
        }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        monotonic_ms() + self.offset()
    }

    /// The answer is taken to be from the middle of the round trip.
    pub(crate) fn observe(&self, db_ms: i64, sent: Instant, received: Instant) -> ClockChange {
        let mid =
            sent.saturating_duration_since(origin()) + received.saturating_duration_since(sent) / 2;
        let new = db_ms - mid.as_millis() as i64;
        if !self.observed.swap(true, Ordering::Relaxed) {
            let host = postbus_model::now_ms() - monotonic_ms();
            self.offset_ms.store(new, Ordering::Relaxed);
            return ClockChange::FirstSkew(new - host);
        }
        let old = self.offset_ms.swap(new, Ordering::Relaxed);
        ClockChange::Moved(new - old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn follows_the_observed_clock_and_reports_its_moves() {
        let clock = Clock::new();
        let sent = Instant::now();
        let received = sent + Duration::from_millis(10);
        let db = postbus_model::now_ms() + 3_600_000;
        assert!(matches!(
            clock.observe(db, sent, received),
            ClockChange::FirstSkew(s) if (3_599_000..=3_601_000).contains(&s)
        ));
        let ahead = clock.now_ms() - postbus_model::now_ms();
        assert!((3_599_000..=3_601_000).contains(&ahead), "{ahead}");
        // The database's clock steps back a day.
        let later = Instant::now();
        match clock.observe(db - 86_400_000, later, later) {
            ClockChange::Moved(m) => assert!((-86_402_000..=-86_398_000).contains(&m), "{m}"),
            other => panic!("{other:?}"),
        }
        let behind = postbus_model::now_ms() - clock.now_ms();
        assert!((82_799_000..=82_801_000).contains(&behind), "{behind}");
    }
}
