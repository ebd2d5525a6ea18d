//! When the OSD next needs the clock. Its event loop has no periodic tick: it sleeps until
//! a socket or the disk has an event, or until [`Osd::next_timer_ms`], whichever is first.
//! Every time-based decision of the daemon (in [`Osd::set_clock`]) has its deadline here.

use super::scrub::DUE_CHECK_EVERY_MS;
use super::Osd;
use crate::blockstore::Disk;

/// Longest sleep without an event. Every deadline the daemon keeps is listed in
/// [`Osd::next_timer_ms`]; this bounds the harm of one that someone adds to `set_clock`
/// and forgets here (noticed within a second, not never). Not on the I/O path: requests
/// and disk completions wake the loop themselves.
pub const MAX_SLEEP_MS: u64 = 1000;

impl<D: Disk> Osd<D> {
    /// The monotonic millisecond at which [`Osd::set_clock`] next has something to do:
    /// the lease deadline (fencing), peering and cleanup retries, the recovery pause, the
    /// end of a full-disk pause, scrub checks. Never earlier than now + 1 (a deadline
    /// already passed was handled by the `set_clock` that the caller just made).
    pub fn next_timer_ms(&self) -> u64 {
        let now = self.now_ms;
        let mut next = now + MAX_SLEEP_MS;
        let mut at = |deadline_ms: u64| {
            if deadline_ms > now {
                next = next.min(deadline_ms);
            }
        };
        if let Some(deadline) = self.lease_deadline_ms.filter(|_| !self.lease_lost) {
            at(deadline);
        }
        let mut recovering = false;
        for pg in self.pgs.values() {
            pg.retry_at_ms.map(&mut at);
            pg.cleanup_retry_at_ms.map(&mut at);
            at(pg.scrub_not_before_ms);
            recovering |= pg.recovery.as_ref().is_some_and(|queue| !queue.is_empty());
        }
        if recovering {
            at(self.recovery_tuner.next_copy_at_us.div_ceil(1000));
            at(self.full_until_ms);
        }
        if !self.pgs.is_empty() && self.view.global.no_scrub != Some(true) {
            at(self.scrub_checked_at_ms + DUE_CHECK_EVERY_MS);
        }
        if self.scrubbing_pgs > 0 {
            at(self.scrub_next_at_ms);
        }
        debug_assert!(next > now && next <= now + MAX_SLEEP_MS);
        next
    }
}
