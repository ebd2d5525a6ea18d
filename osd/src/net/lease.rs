//! The OSD's etcd lease: keep-alives on their own timer, the fencing deadline, and
//! getting a new lease when etcd lost the old one.
//!
//! ```text
//!  every report interval (or sooner after a failure, 100 ms doubling to 1 quick timeout):
//!    send keep-alive at t (one attempt = at most etcd_quick_timeout)
//!      answered, TTL > 0 ----> deadline = t + TTL - margin  (the Osd serves until then;
//!      |                        past it, it stops every PG by itself; a new deadline
//!      |                        after that resumes it and it re-claims its PGs)
//!      no answer / error ----> try again; the deadline stays where it was
//!      answered, lease gone --> stop every PG, grant a new lease, create /osd/state/<n>
//!                               again (only if absent: someone else in it = exit),
//!                               hand the lease to the action executor, new deadline
//! ```
//!
//! Flap dampening: an OSD that keeps losing its lease (revoked by peers that see it miss
//! pings while it is overloaded, or a link that keeps breaking) would make every one of
//! its PGs repeer on each return. The first loss in [`FLAP_WINDOW`] re-registers at once
//! (a frozen OSD that resumes should come back fast); each further loss in the window
//! stays out twice as long before registering again (2 s, 4 s, ... [`FLAP_HOLD_MAX`]),
//! so the cluster settles on serving its PGs without it (Ceph's answer to the same
//! problem is `osd_max_markdown_count`).
//!
//! A keep-alive whose answer did not come in time is abandoned together with its stream,
//! so a late answer can never be taken for the answer to a newer request (which would
//! move the deadline past the lease's real expiry).

use super::etcd::{limited, Etcd};
use super::Node;
use etcd_client::{Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};
use vitastor_proto::etcd::watch::Backoff;

/// Lease losses further apart than this are not counted as flapping.
const FLAP_WINDOW: Duration = Duration::from_secs(600);
/// The longest an OSD stays out after losing its lease again and again.
const FLAP_HOLD_MAX: Duration = Duration::from_secs(64);

/// Recent lease losses, to decide how long to stay out before registering again.
#[derive(Default)]
struct FlapDamper {
    losses: VecDeque<Instant>,
}

impl FlapDamper {
    /// Records a loss at `now`; returns how long to wait before registering again.
    fn lost_at(&mut self, now: Instant) -> Duration {
        while self
            .losses
            .front()
            .is_some_and(|&at| now.duration_since(at) > FLAP_WINDOW)
        {
            self.losses.pop_front();
        }
        self.losses.push_back(now);
        let repeats = self.losses.len() as u32 - 1;
        if repeats == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs(1u64 << repeats.min(6)).min(FLAP_HOLD_MAX)
    }
}

/// What one keep-alive found out.
enum LeaseStatus {
    Alive,
    Gone,
}

/// `/osd/state/<n>` and its value, re-created under a new lease when the old one is gone.
pub struct Registration {
    pub osd_num: u64,
    pub key: String,
    pub value: String,
}

/// Keeps the lease alive and the Osd's deadline current, for ever. Returns only on a
/// fatal condition: another process registered this OSD number while our lease was gone.
pub async fn lease_loop(
    node: Rc<Node>,
    mut etcd: Etcd,
    registration: Registration,
) -> Result<(), String> {
    let timing = etcd.timing.clone();
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut next_attempt = Instant::now();
    let mut deadline: Option<Instant> = None;
    let mut retry = Backoff::new(
        Duration::from_millis(100),
        timing.quick_timeout.max(Duration::from_millis(100)),
    );
    let mut failing_since: Option<Instant> = None;
    // Whether /osd/state/<n> exists under the current lease (false after a new grant).
    let mut registered = true;
    let mut damper = FlapDamper::default();
    loop {
        // Wake at the deadline too: the Osd sees the time and stops its PGs even when no
        // other event comes (so the stop is logged when it happens).
        let wake = deadline.map_or(next_attempt, |d| d.min(next_attempt));
        tokio::time::sleep_until(wake.into()).await;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            deadline = None;
            node.with_osd(|_| {});
        }
        if Instant::now() < next_attempt {
            continue;
        }
        let sent = Instant::now();
        let lease = etcd.lease.get();
        let attempt = tokio::time::timeout(
            timing.quick_timeout,
            keep_alive(&mut etcd, &mut stream, lease),
        )
        .await;
        let status = match attempt {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(format!("no answer in {:?}", timing.quick_timeout)),
        };
        let failure = match status {
            Ok(LeaseStatus::Alive) if registered => None,
            Ok(LeaseStatus::Alive) => match ensure_registered(&mut etcd, &registration).await {
                Ok(true) => {
                    tracing::info!(lease, "registered again under a new lease");
                    registered = true;
                    None
                }
                Ok(false) => {
                    return Err(format!(
                        "OSD {} was registered by another process while this one's lease was gone ({} exists under another lease); exiting",
                        registration.osd_num, registration.key
                    ));
                }
                Err(error) => Some(error),
            },
            Ok(LeaseStatus::Gone) => {
                stream = None;
                // Count a loss once, not again for every failed attempt to get a new one.
                let hold = if registered {
                    damper.lost_at(Instant::now())
                } else {
                    Duration::ZERO
                };
                registered = false;
                deadline = None;
                tracing::error!(
                    lease,
                    "etcd no longer has this OSD's lease: stopping every PG and registering again"
                );
                node.with_osd(|osd| {
                    if osd.lease_ok() {
                        osd.on_lease_lost();
                    }
                });
                if !hold.is_zero() {
                    let losses = damper.losses.len();
                    tracing::warn!(
                        "lost the etcd lease {losses} times in {} s: staying out {hold:?} before registering again",
                        FLAP_WINDOW.as_secs()
                    );
                    tokio::time::sleep(hold).await;
                }
                match etcd.grant_lease().await {
                    // Keep it alive (and register under it) right away.
                    Ok(_) => {
                        next_attempt = Instant::now();
                        continue;
                    }
                    Err(error) => Some(error),
                }
            }
            Err(error) => {
                stream = None;
                Some(error)
            }
        };
        match failure {
            None => {
                if let Some(since) = failing_since.take() {
                    tracing::info!("etcd renewed the lease again after {:?}", since.elapsed());
                }
                set_deadline(&node, &timing, sent, &mut deadline);
                retry.reset();
                next_attempt = sent + timing.report_interval;
            }
            Some(error) => {
                note_failure(&mut failing_since, &error);
                next_attempt = Instant::now() + retry.next_delay();
            }
        }
    }
}

fn note_failure(failing_since: &mut Option<Instant>, error: &str) {
    if failing_since.is_none() {
        *failing_since = Some(Instant::now());
        tracing::warn!("cannot renew the etcd lease ({error}); retrying");
    } else {
        tracing::debug!("cannot renew the etcd lease ({error}); retrying");
    }
}

fn set_deadline(
    node: &Node,
    timing: &super::etcd::EtcdTiming,
    sent: Instant,
    deadline: &mut Option<Instant>,
) {
    let sent_ms = node.clock_ms_at(sent);
    let deadline_ms = timing.lease_deadline_ms(sent_ms);
    *deadline = Some(node.instant_at_ms(deadline_ms));
    node.with_osd(|osd| osd.set_lease_deadline(Some(deadline_ms)));
}

/// One keep-alive on the open stream, or on a new stream when there is none or it broke.
async fn keep_alive(
    etcd: &mut Etcd,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    lease: i64,
) -> Result<LeaseStatus, String> {
    if let Some((keeper, responses)) = stream {
        let answer = match keeper.keep_alive().await {
            Ok(()) => responses.message().await,
            Err(error) => Err(error),
        };
        match answer {
            Ok(Some(response)) if response.ttl() > 0 => return Ok(LeaseStatus::Alive),
            Ok(Some(_)) => return Ok(LeaseStatus::Gone),
            // The stream broke (etcd restarted): open a new one right away.
            Ok(None) | Err(_) => *stream = None,
        }
    }
    match etcd.client.lease_keep_alive(lease).await {
        Ok(pair) => {
            *stream = Some(pair);
            Ok(LeaseStatus::Alive)
        }
        // Opening the stream sends a keep-alive; a TTL of 0 comes back as this error.
        Err(etcd_client::Error::LeaseKeepAliveError(message)) if message.contains("not found") => {
            Ok(LeaseStatus::Gone)
        }
        Err(error) => Err(error.to_string()),
    }
}

/// `/osd/state/<n>` created again under the current (new) lease. `Ok(false)`: the key
/// exists under a lease that is not ours (another process took this OSD number).
async fn ensure_registered(etcd: &mut Etcd, registration: &Registration) -> Result<bool, String> {
    if etcd
        .create_leased(&registration.key, &registration.value)
        .await?
    {
        return Ok(true);
    }
    // Created by an earlier attempt of ours whose answer was lost?
    let key = registration.key.as_str();
    let lease = etcd.lease.get();
    let ours = Txn::new()
        .when([Compare::lease(key, CompareOp::Equal, lease)])
        .and_then([TxnOp::get(key, None)]);
    let response = limited(etcd.timing.slow_timeout, "etcd txn", etcd.client.txn(ours)).await?;
    Ok(response.succeeded())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_loss_comes_back_at_once_repeats_stay_out_longer() {
        let mut damper = FlapDamper::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(damper.lost_at(at(0)), Duration::ZERO);
        assert_eq!(damper.lost_at(at(10)), Duration::from_secs(2));
        assert_eq!(damper.lost_at(at(20)), Duration::from_secs(4));
        for s in 3..20 {
            assert!(damper.lost_at(at(20 + s)) <= FLAP_HOLD_MAX);
        }
        assert_eq!(damper.lost_at(at(100)), FLAP_HOLD_MAX);
        // Quiet for longer than the window: forgiven.
        assert_eq!(damper.lost_at(at(100 + 601)), Duration::ZERO);
    }
}
