//! One PG this OSD is the primary of: its place in the lifecycle, its members, and the
//! per-object write queues that keep writes to one object in order.
//!
//! Lifecycle: `starting` (claiming `/pg/state` in etcd) -> `peering` (listing versions on
//! every reachable member and history peer, deciding the newest version of each object,
//! recording the live set in `/pg/history`) -> `active` (copying objects to members that
//! lack them in the background, `recovery.rs`), or
//! `incomplete` when the activation rule (`history.rs`) fails: a set that may hold the
//! newest writes has no reachable member, or fewer than `pg_minsize` members are
//! reachable. An incomplete PG peers again whenever an OSD it waits for connects. A change
//! of members, of their reachability or of the PG map sends an active PG to `repeering`
//! (new ops get -EPIPE, ops in flight finish) and then back to `peering`. `stopping` does
//! the same and then releases the PG.

use super::cleanup::Cleanup;
use super::peering::Peering;
use super::recovery::RecoveryQueue;

/// Why the PG writes `/pg/history` (every write is conditioned on the value it replaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HistoryWrite {
    /// Peering decided: the new epoch and live set (the PG activates when it is taken).
    Activation,
    /// Recovery finished: only the live set is recorded.
    Trim,
    /// Copies outside the set were dropped: this is the history without those OSDs.
    ForgetPeers(vitastor_proto::etcd::PgHistory),
    /// A scrub finished: this is the history with the new `next_scrub`.
    Scrubbed(vitastor_proto::etcd::PgHistory),
}
use std::collections::{HashMap, VecDeque};
use vitastor_proto::ObjectId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgBase {
    Starting,
    Peering,
    Incomplete,
    Active,
    Repeering,
    Stopping,
    Offline,
}

impl PgBase {
    pub fn as_str(self) -> &'static str {
        match self {
            PgBase::Starting => "starting",
            PgBase::Peering => "peering",
            PgBase::Incomplete => "incomplete",
            PgBase::Active => "active",
            PgBase::Repeering => "repeering",
            PgBase::Stopping => "stopping",
            PgBase::Offline => "offline",
        }
    }
}

/// A PG's state as published in `/pg/state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgStatus {
    pub base: PgBase,
    /// Some members of the PG's set are not reachable.
    pub degraded: bool,
    /// Some live member lacks objects (they are being copied in the background).
    pub has_degraded: bool,
    /// Objects were found on OSDs outside the current set.
    pub has_misplaced: bool,
    /// Copies still to make, the history trim after them, or copies outside the set to
    /// drop (not published: the flags above say it the way Vitastor does).
    pub recovering: bool,
    /// A scrub runs (`scrub.rs`).
    pub scrubbing: bool,
    /// The last scrub found copies that differ with no majority to repair from.
    pub has_inconsistent: bool,
}

impl PgStatus {
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.base.as_str().to_string()];
        for (flag, name) in [
            (self.degraded, "degraded"),
            (self.has_degraded, "has_degraded"),
            (self.has_misplaced, "has_misplaced"),
            (self.has_inconsistent, "has_inconsistent"),
            (self.scrubbing, "scrubbing"),
        ] {
            if flag {
                names.push(name.to_string());
            }
        }
        names
    }
}

pub(super) struct Pg {
    pub base: PgBase,
    /// The PG map's set (0 = empty slot) and minimum members to serve writes.
    pub osd_set: Vec<u64>,
    pub pg_minsize: u32,
    pub pg_count: u32,
    pub pg_stripe_size: u64,
    /// Stripe geometry and codec of an EC/XOR pool's PG (`None`: replicated).
    pub ec: Option<std::sync::Arc<super::ec_primary::EcInfo>>,
    /// Members that take writes: the reachable members of `osd_set` when it activated.
    pub live: Vec<u64>,
    /// `live` in the slots of `osd_set`, 0 for absent members (what `/pg/history` records).
    pub live_slots: Vec<u64>,
    /// Every OSD peering looked at.
    pub peers: Vec<u64>,
    /// Every OSD peering would like to hear from (members, recorded sets, all_peers): an
    /// incomplete PG peers again when one of them connects.
    pub wanted: std::collections::BTreeSet<u64>,
    /// The `/pg/history` value the last peering started from.
    pub seen_history: Option<vitastor_proto::etcd::PgHistory>,
    /// When a failed peering is tried again (monotonic ms).
    pub retry_at_ms: Option<u64>,
    /// The last retry delay (0: the last peering did not fail), doubled per failure.
    pub retry_delay_ms: u64,
    /// The history write whose answer is awaited: its id, the peering generation it
    /// belongs to, and what it is for.
    pub history_write: Option<(u64, u64, HistoryWrite)>,
    /// Copies outside the set being dropped (`cleanup.rs`).
    pub cleanup: Option<Cleanup>,
    /// When a cleanup that left copies behind is tried again (monotonic ms).
    pub cleanup_retry_at_ms: Option<u64>,
    /// Members that had no room for a copy, left out of the live set until then (ms).
    pub full_until: std::collections::BTreeMap<u64, u64>,
    /// The `/pg/state` value last written (unchanged states are not written again).
    pub published: Option<String>,
    /// Version epoch of this activation (versions are `epoch << 16 | counter`).
    pub epoch: u64,
    pub degraded: bool,
    pub has_degraded: bool,
    pub has_misplaced: bool,
    /// Bumped at every (re)peering so late answers to an earlier one are ignored.
    pub generation: u64,
    pub peering: Option<Peering>,
    /// Copies still to make while active (background recovery and rebalance).
    pub recovery: Option<RecoveryQueue>,
    /// Objects peering found (the base of `/pg/stats`).
    pub object_count: u64,
    /// When `/pg/stats` was last written (monotonic ms).
    pub stats_at_ms: u64,
    /// Tombstones to purge everywhere (see `peering.rs`).
    pub purges: VecDeque<(ObjectId, u64)>,
    /// Objects with a write or delete in flight, and the client ops queued behind it.
    pub busy: HashMap<ObjectId, VecDeque<u64>>,
    /// Objects with a repair queued or running (`repair.rs`).
    pub repairing: std::collections::BTreeSet<ObjectId>,
    /// The running scrub, the `next_scrub` the last one served, and the objects it found
    /// inconsistent (`scrub.rs`).
    pub scrub: Option<super::scrub::Scrub>,
    pub scrub_served: Option<u64>,
    /// The `next_scrub` a finished scrub still has to write to the history.
    pub scrub_record: Option<Option<u64>>,
    /// A scrub that could not judge every object is not started again before this (ms).
    pub scrub_not_before_ms: u64,
    pub inconsistent: std::collections::BTreeSet<ObjectId>,
    /// Client ops of this PG in flight.
    pub inflight: u64,
    /// Whether `/pg/state` has been created by us, or a claim is on its way.
    pub claimed: bool,
    pub claiming: bool,
    /// Set when the PG must be released once ops drain (no longer ours).
    pub stop: bool,
}

impl Pg {
    /// Whether the PG reports `has_inconsistent`.
    pub fn has_inconsistent(&self) -> bool {
        !self.inconsistent.is_empty()
    }

    pub fn new() -> Pg {
        Pg {
            base: PgBase::Starting,
            osd_set: Vec::new(),
            pg_minsize: 1,
            pg_count: 1,
            pg_stripe_size: 0,
            ec: None,
            live: Vec::new(),
            live_slots: Vec::new(),
            peers: Vec::new(),
            wanted: Default::default(),
            seen_history: None,
            retry_at_ms: None,
            retry_delay_ms: 0,
            history_write: None,
            cleanup: None,
            cleanup_retry_at_ms: None,
            published: None,
            full_until: Default::default(),
            epoch: 0,
            degraded: false,
            has_degraded: false,
            has_misplaced: false,
            generation: 0,
            peering: None,
            recovery: None,
            object_count: 0,
            stats_at_ms: 0,
            purges: VecDeque::new(),
            busy: HashMap::new(),
            repairing: Default::default(),
            scrub: None,
            scrub_served: None,
            scrub_record: None,
            scrub_not_before_ms: 0,
            inconsistent: Default::default(),
            inflight: 0,
            claimed: false,
            claiming: false,
            stop: false,
        }
    }

    pub fn status(&self) -> PgStatus {
        PgStatus {
            base: self.base,
            degraded: self.degraded,
            has_degraded: self.has_degraded,
            has_misplaced: self.has_misplaced,
            recovering: self.recovery.is_some()
                || self.cleanup.is_some()
                || self.cleanup_retry_at_ms.is_some(),
            scrubbing: self.scrub.is_some(),
            has_inconsistent: !self.inconsistent.is_empty(),
        }
    }

    /// The `/pg/state` JSON for this PG.
    pub fn state_json(&self, primary: u64) -> String {
        let state = vitastor_proto::etcd::PgState {
            primary,
            state: self.status().names(),
            peers: self.peers.clone(),
        };
        serde_json::to_string(&state).expect("invariant: the state serializes")
    }

    /// Members of the set other than `me` that take writes.
    pub fn write_peers(&self, me: u64) -> impl Iterator<Item = u64> + '_ {
        self.live.iter().copied().filter(move |&osd| osd != me)
    }
}
