//! Taking PGs, peering, activation and release.
//!
//! Peering of a claimed PG:
//! 1. Decide whom to ask ([`history::peering_targets`]): the PG's set, every set recorded
//!    in `/pg/history` and `all_peers`. Fence: the listing carries epoch
//!    `history.epoch + 1`, and an OSD that sees it refuses sub-ops of older epochs from
//!    then on, so a deposed primary can no longer change what this peering decides.
//! 2. List every object version (tombstones included) on every reachable target.
//! 3. Check the activation rule ([`history::decide_activation`]); if it fails the PG is
//!    `incomplete` (I/O gets -EPIPE) until a missing OSD connects.
//! 4. Copy the newest version of each object (data, or a tombstone) to every live member
//!    that lacks it (`recovery.rs`).
//! 5. Record the live set and the new epoch in `/pg/history` (an etcd transaction
//!    conditioned on the history we read and on our lease holding `/pg/state`); only when
//!    etcd confirmed it the PG goes `active`. Then, if every OSD that may hold a copy is a
//!    live member, the tombstones found are purged everywhere.
//!
//! Failures (a listing or copy fails, the history transaction loses a race) retry after
//! [`RETRY_MS`], doubling up to [`RETRY_MAX_MS`] while they repeat until the PG is clean,
//! or as soon as the view changes.

use super::history::{self, Blocker};
use super::pg::{HistoryWrite, Pg, PgBase};
use super::{Action, EtcdAction, Osd, Waiter};
use crate::blockstore::{Disk, Op};
use crate::cluster::PgKey;
use std::collections::{BTreeMap, BTreeSet};
use vitastor_proto::errno;
use vitastor_proto::etcd::{PgHistory, PgStats, PoolScheme};
use vitastor_proto::wire::request::{SecDelete, SecList, LIST_PAGED, LIST_TOMBSTONES};
use vitastor_proto::wire::{decode_obj_versions, Reply, ReplyBody, RequestBody};
use vitastor_proto::ObjectId;

pub(super) use super::recovery::RecoveryStep;
use super::recovery::{CopyKind, RecoveryItem, RecoveryQueue};

/// A SEC_LIST of one page of `pg`'s objects (tombstones included) from the cursor
/// (`inode`, `stripe`) on, announcing the peering's `fence` epoch.
fn list_page_request(
    page_objects: usize,
    pg: u32,
    pg_count: u32,
    pg_stripe_size: u64,
    fence: u64,
    inode: u64,
    stripe: u64,
) -> SecList {
    let pool_inodes = inode & !((1 << 48) - 1);
    SecList {
        list_pg: pg,
        pg_count,
        pg_stripe_size,
        min_inode: inode,
        max_inode: pool_inodes | ((1 << 48) - 1),
        min_stripe: stripe,
        max_stripe: u64::MAX,
        stable_limit: page_objects as u32,
        flags: LIST_TOMBSTONES | LIST_PAGED,
        epoch: fence,
    }
}

/// A SEC_DELETE that purges `oid` up to `version` on a peer (tombstone purges here,
/// copies outside the set in `cleanup.rs`).
pub(super) fn purge_request(key: PgKey, oid: ObjectId, version: u64, epoch: u64) -> RequestBody {
    RequestBody::SecDelete(SecDelete {
        oid,
        version,
        purge: true,
        pg: key.1,
        epoch,
    })
}

/// Tombstone purge requests in flight per OSD (local and to peers).
pub(super) const PURGES_IN_FLIGHT: usize = 64;

/// Delay before a failed peering step is tried again (ms), doubled for each failure in
/// a row up to [`RETRY_MAX_MS`].
pub(super) const RETRY_MS: u64 = 500;
pub(super) const RETRY_MAX_MS: u64 = 8_000;

/// One object's state on one OSD, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Listed {
    pub version: u64,
    pub deleted: bool,
}

#[derive(Debug, Default)]
pub(super) struct Peering {
    /// OSDs whose listing has not arrived yet.
    pub pending: BTreeSet<u64>,
    /// OSDs whose listing arrived (the primary included).
    pub listed: BTreeSet<u64>,
    /// Object -> OSD -> newest version there.
    pub versions: BTreeMap<ObjectId, BTreeMap<u64, Listed>>,
    /// EC PGs: stripe -> every listed version of its chunks (`ec_peering.rs`).
    pub ec_held: BTreeMap<ObjectId, Vec<super::ec_decide::HeldChunk>>,
    /// EC PGs: settle actions not finished yet.
    pub ec_settling: usize,
    /// The history this peering decided on (compared by etcd when the new one is written).
    pub based_on: Option<PgHistory>,
    /// The epoch announced to the members (`based_on.epoch + 1`).
    pub fence: u64,
    /// What the PG will copy once active (decided when every listing is in).
    pub plan: BTreeMap<ObjectId, RecoveryItem>,
    /// Objects found on OSDs outside the PG's set.
    pub misplaced_copies: bool,
    /// Set once the history transaction is on its way.
    pub writing_history: Option<PgHistory>,
}

impl<D: Disk> Osd<D> {
    /// Brings the set of PGs we are primary of in line with the PG map.
    pub(super) fn sync_pgs_with_view(&mut self) {
        let me = self.settings.osd_num;
        let block_size = self.store.block_size();
        let mut wanted = BTreeMap::new();
        for (key, item) in &self.view.pg_config {
            if item.primary != me || item.pause {
                continue;
            }
            let Some(pool) = vitastor_proto::PoolId::new(key.0)
                .ok()
                .and_then(|id| self.view.pools.get(&id))
            else {
                continue;
            };
            let pool_block = pool.block_size.unwrap_or(self.view.global.block_size());
            if pool_block != block_size || key.1 > pool.pg_count {
                if pool_block != block_size {
                    tracing::error!(
                        pool = key.0,
                        pool_block,
                        block_size,
                        "pool block_size differs from this OSD's; not serving its PGs"
                    );
                }
                continue;
            }
            let stripe = pool.pg_stripe_size.unwrap_or(0);
            let ec = (pool.scheme != PoolScheme::Replicated)
                .then(|| (pool.scheme, pool.data_chunks(), pool.parity_chunks()));
            wanted.insert(
                *key,
                (
                    item.osd_set.clone(),
                    pool.pg_minsize,
                    pool.pg_count,
                    stripe,
                    ec,
                ),
            );
        }
        let stale: Vec<PgKey> = self
            .pgs
            .keys()
            .filter(|key| !wanted.contains_key(key))
            .copied()
            .collect();
        for key in stale {
            self.stop_pg(key);
        }
        for (key, (osd_set, pg_minsize, pg_count, pg_stripe_size, ec)) in wanted {
            let ec = match ec {
                None => None,
                Some((scheme, k, m)) => match self.ec_info(key.0, scheme, k, m) {
                    Some(info) => Some(info),
                    None => continue,
                },
            };
            let history = self.view.pg_history.get(&key).cloned();
            let pg = self.pgs.entry(key).or_insert_with(Pg::new);
            if pg.stop {
                continue; // being released; taken again once that is done
            }
            let changed = pg.osd_set != osd_set
                || pg.pg_minsize != pg_minsize
                || pg.pg_count != pg_count
                || pg.pg_stripe_size != pg_stripe_size
                || pg.ec.as_ref().map(|e| e.layout) != ec.as_ref().map(|e| e.layout);
            // A history written by someone else (the monitor recording a moved set) while
            // we wait or peer changes what peering must look at.
            // Our own history write showing up in the watch is not a change.
            let writing = pg.peering.as_ref().and_then(|p| p.writing_history.as_ref());
            let history_changed = pg.base != PgBase::Active
                && pg.seen_history != history
                && (writing.is_none() || writing != history.as_ref());
            pg.osd_set = osd_set;
            pg.pg_minsize = pg_minsize;
            pg.pg_count = pg_count;
            pg.pg_stripe_size = pg_stripe_size;
            pg.ec = ec;
            if !pg.claimed {
                self.try_claim(key);
            } else if changed || history_changed {
                self.start_peering(key);
            }
        }
    }

    /// Asks etcd for `/pg/state` of `key` unless another OSD holds it.
    fn try_claim(&mut self, key: PgKey) {
        let me = self.settings.osd_num;
        let held_by = self.view.pg_states.get(&key).map(|state| state.primary);
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        if pg.claiming || pg.claimed {
            return;
        }
        if let Some(holder) = held_by.filter(|&holder| holder != me) {
            tracing::info!(
                pool = key.0,
                pg = key.1,
                holder,
                "PG is still held by another OSD; waiting"
            );
            return;
        }
        pg.claiming = true;
        let value = pg.state_json(me);
        pg.published = Some(value.clone());
        self.actions
            .push(Action::Etcd(EtcdAction::ClaimPg { pg: key, value }));
    }

    /// The answer to [`EtcdAction::ClaimPg`].
    pub fn on_pg_claimed(&mut self, key: PgKey, ok: bool) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            if ok {
                self.actions
                    .push(Action::Etcd(EtcdAction::ReleasePg { pg: key }));
            }
            return;
        };
        pg.claiming = false;
        if !ok {
            tracing::info!(
                pool = key.0,
                pg = key.1,
                "PG is held by another OSD; waiting"
            );
            return;
        }
        pg.claimed = true;
        if pg.stop || self.lease_lost {
            self.stop_pg(key);
            return;
        }
        self.start_peering(key);
    }

    pub(super) fn publish_state(&mut self, key: PgKey) {
        let me = self.settings.osd_num;
        if let Some(pg) = self.pgs.get_mut(&key) {
            if pg.claimed {
                let value = pg.state_json(me);
                // Only changes: every write comes back through the watch as a new view.
                if pg.published.as_ref() == Some(&value) {
                    return;
                }
                pg.published = Some(value.clone());
                self.actions
                    .push(Action::Etcd(EtcdAction::PutPgState { pg: key, value }));
            }
        }
    }

    /// Repeers every claimed PG that has `osd` as a member, a peer or a wanted OSD.
    pub(super) fn repeer_pgs_with(&mut self, osd: u64) {
        let keys: Vec<PgKey> = self
            .pgs
            .iter()
            .filter(|(_, pg)| {
                pg.claimed
                    && !pg.stop
                    && (pg.osd_set.contains(&osd)
                        || pg.peers.contains(&osd)
                        || pg.wanted.contains(&osd))
            })
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.start_peering(key);
        }
    }

    /// Fails the client ops queued behind running writes (they have not started).
    fn fail_queued_ops(&mut self, key: PgKey) {
        let queued: Vec<u64> = match self.pgs.get_mut(&key) {
            Some(pg) => pg
                .busy
                .values_mut()
                .flat_map(|queue| queue.drain(..))
                .collect(),
            None => return,
        };
        for op in queued {
            self.fail_client_op(op, errno::EPIPE);
        }
    }

    /// Runs the peering of PGs whose retry time has come.
    pub(super) fn run_due_retries(&mut self) {
        let now = self.now_ms;
        let due: Vec<PgKey> = self
            .pgs
            .iter()
            .filter(|(_, pg)| {
                pg.retry_at_ms.is_some_and(|at| at <= now)
                    || pg.cleanup_retry_at_ms.is_some_and(|at| at <= now)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            self.start_peering(key);
        }
    }

    /// Peering failed for a reason that may go away: try again a little later.
    pub(super) fn retry_peering_later(&mut self, key: PgKey, problem: &str) {
        self.fail_queued_ops(key);
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        // RETRY_MS, doubling while the PG keeps failing (a source or target that fails
        // every copy must not make it repeer twice a second for ever), reset once clean.
        let delay = match pg.retry_delay_ms {
            0 => RETRY_MS,
            last => (last * 2).min(RETRY_MAX_MS),
        };
        pg.retry_delay_ms = delay;
        let at = self.now_ms + delay;
        tracing::warn!(
            pool = key.0,
            pg = key.1,
            "{problem}; peering again in {delay} ms"
        );
        pg.generation += 1;
        pg.peering = None;
        pg.base = PgBase::Peering;
        pg.retry_at_ms = Some(at);
        self.drop_background_work(key);
    }

    /// (Re)starts peering; waits for ops in flight first.
    pub(super) fn start_peering(&mut self, key: PgKey) {
        self.fail_queued_ops(key);
        let me = self.settings.osd_num;
        if self.lease_lost {
            return;
        }
        let history = self.view.pg_history.get(&key).cloned();
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        if !pg.claimed || pg.stop {
            return;
        }
        pg.generation += 1;
        pg.peering = None;
        pg.retry_at_ms = None;
        pg.seen_history = history.clone();
        self.drop_background_work(key);
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        if pg.inflight > 0 {
            pg.base = PgBase::Repeering;
            self.publish_state(key);
            return;
        }
        let base_history = history.clone().unwrap_or_default();
        let targets = history::peering_targets(&pg.osd_set, &base_history);
        pg.wanted = targets.clone();
        let reachable: Vec<u64> = targets
            .iter()
            .copied()
            .filter(|&osd| osd == me || self.peers.contains_key(&osd))
            .collect();
        // A quick check before listing: without the OSDs it needs, peering cannot decide.
        let reachable_set: BTreeSet<u64> = reachable.iter().copied().collect();
        if let Err(blocker) = history::decide_activation(
            &pg.osd_set,
            &base_history,
            &reachable_set,
            me,
            pg.pg_minsize,
        ) {
            self.mark_incomplete(key, &blocker);
            return;
        }
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        pg.peers = reachable.clone();
        pg.has_degraded = false;
        pg.has_misplaced = false;
        pg.base = PgBase::Peering;
        let gen = pg.generation;
        let fence = base_history.epoch + 1;
        let (pg_count, stripe) = (pg.pg_count, self.pg_stripe_size(key));
        let mut peering = Peering {
            based_on: history,
            fence,
            ..Peering::default()
        };
        let min_inode = u64::from(key.0) << 48;
        let max_inode = min_inode | ((1 << 48) - 1);
        // The fence first: no sub-op of an earlier primary is admitted from here on. One
        // admitted before may still be on its way to the disk; the listing waits for it
        // (it would land after the listing, unseen by this peering).
        self.raise_fence(key, fence);
        if self
            .store
            .changes_in_flight(key.1, pg_count, stripe, min_inode, max_inode)
        {
            if let Some(pg) = self.pgs.get_mut(&key) {
                pg.retry_at_ms = Some(self.now_ms + 1);
            }
            return;
        }
        let ec = self.pgs.get(&key).is_some_and(|pg| pg.ec.is_some());
        for version in self
            .store
            .list(key.1, pg_count, stripe, min_inode, max_inode)
        {
            peering.record(version.oid, me, version.version, version.deleted);
            if ec {
                let listed = (version.version, version.stable, version.deleted);
                super::ec_peering::record_chunk(&mut peering.ec_held, version.oid, me, listed);
            }
        }
        peering.listed.insert(me);
        let page = self.settings.list_page_objects;
        let list = list_page_request(page, key.1, pg_count, stripe, fence, min_inode, 0);
        for &osd in reachable.iter().filter(|&&osd| osd != me) {
            let waiter = Waiter::List { pg: key, gen, osd };
            if self.send_to_peer(osd, RequestBody::SecList(list), &[], waiter) {
                peering.pending.insert(osd);
            }
        }
        let done = peering.pending.is_empty();
        if let Some(pg) = self.pgs.get_mut(&key) {
            pg.peering = Some(peering);
        }
        self.publish_state(key);
        if done {
            self.plan_recovery(key);
        }
    }

    pub(super) fn mark_incomplete(&mut self, key: PgKey, blocker: &Blocker) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        if pg.base != PgBase::Incomplete {
            tracing::warn!(
                pool = key.0,
                pg = key.1,
                "PG is incomplete: {blocker}; waiting for those OSDs"
            );
        }
        pg.peering = None;
        pg.base = PgBase::Incomplete;
        pg.degraded = false;
        pg.has_degraded = false;
        self.publish_state(key);
    }

    pub(super) fn pg_stripe_size(&self, key: PgKey) -> u64 {
        let pg = self.pgs.get(&key);
        let stripe = pg.map_or(0, |pg| pg.pg_stripe_size);
        let data_chunks = pg.and_then(|pg| pg.ec.as_ref()).map_or(1, |ec| ec.layout.k);
        stripe.max(u64::from(self.store.block_size()) * u64::from(data_chunks))
    }

    pub(super) fn peering_mut(&mut self, key: PgKey, gen: u64) -> Option<&mut Peering> {
        let pg = self.pgs.get_mut(&key)?;
        if pg.generation != gen {
            return None;
        }
        pg.peering.as_mut()
    }

    pub(super) fn listing_received(
        &mut self,
        key: PgKey,
        gen: u64,
        osd: u64,
        result: Result<(Reply, Vec<u8>), i32>,
    ) {
        let listed = match result {
            Ok((reply, payload)) => {
                let (stable_count, deleted_count) = match reply.body {
                    ReplyBody::SecList {
                        stable_count,
                        deleted_count,
                    } => (stable_count as usize, deleted_count),
                    _ => (0, 0),
                };
                decode_obj_versions(&payload)
                    .map_err(|e| e.to_string())
                    .and_then(|items| {
                        let first_deleted = items.len().checked_sub(deleted_count as usize);
                        match first_deleted {
                            Some(first) => Ok((items, first, stable_count)),
                            None => Err(format!(
                                "{deleted_count} tombstones in a listing of {}",
                                items.len()
                            )),
                        }
                    })
            }
            Err(code) => Err(format!("error {code}")),
        };
        let page = self.settings.list_page_objects;
        let ec = self.pgs.get(&key).is_some_and(|pg| pg.ec.is_some());
        let Some(peering) = self.peering_mut(key, gen) else {
            return;
        };
        match listed {
            Ok((items, first_deleted, stable_count)) => {
                if items.iter().any(|item| item.version == 0) {
                    tracing::error!(osd, "a listing holds version 0; closing the peer");
                    self.close_peer(osd);
                    return;
                }
                for (i, item) in items.iter().enumerate() {
                    let deleted = i >= first_deleted;
                    peering.record(item.oid, osd, item.version, deleted);
                    if ec {
                        // Stable live versions come first, then unstable ones, then
                        // tombstones (always stable).
                        let stable = i < stable_count || deleted;
                        let listed = (item.version, stable, deleted);
                        super::ec_peering::record_chunk(
                            &mut peering.ec_held,
                            item.oid,
                            osd,
                            listed,
                        );
                    }
                }
                let objects: BTreeSet<ObjectId> = items.iter().map(|item| item.oid).collect();
                if objects.len() >= page {
                    // A full page: ask for the next one, after the last object listed.
                    let last = *objects.last().expect("invariant: a full page");
                    let (inode, stripe) = match last.stripe.checked_add(1) {
                        Some(stripe) => (last.inode, stripe),
                        None => (last.inode + 1, 0),
                    };
                    let fence = peering.fence;
                    let Some(pg) = self.pgs.get(&key) else {
                        return;
                    };
                    let (pg_count, stripe_size) = (pg.pg_count, self.pg_stripe_size(key));
                    let list =
                        list_page_request(page, key.1, pg_count, stripe_size, fence, inode, stripe);
                    let waiter = Waiter::List { pg: key, gen, osd };
                    if !self.send_to_peer(osd, RequestBody::SecList(list), &[], waiter) {
                        self.retry_peering_later(key, &format!("OSD {osd} left while listing"));
                    }
                    return;
                }
                peering.pending.remove(&osd);
                peering.listed.insert(osd);
                if peering.pending.is_empty() {
                    self.plan_recovery(key);
                }
            }
            Err(problem) => {
                self.retry_peering_later(key, &format!("listing of OSD {osd} failed ({problem})"))
            }
        }
    }

    /// All listings are in: check the activation rule, decide what to copy where, and
    /// record the new epoch in `/pg/history`.
    fn plan_recovery(&mut self, key: PgKey) {
        if self.pgs.get(&key).is_some_and(|pg| pg.ec.is_some()) {
            return self.ec_plan(key);
        }
        let me = self.settings.osd_num;
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let Some(peering) = pg.peering.as_ref() else {
            return;
        };
        let base_history = peering.based_on.clone().unwrap_or_default();
        let live = match history::decide_activation(
            &pg.osd_set,
            &base_history,
            &peering.listed,
            me,
            pg.pg_minsize,
        ) {
            Ok(live) => live,
            Err(blocker) => return self.mark_incomplete(key, &blocker),
        };
        // Members out of space take no writes for a while (they count as absent).
        let now = self.now_ms;
        pg.full_until.retain(|_, until| *until > now);
        let live: Vec<u64> = live
            .into_iter()
            .map(|osd| {
                if osd != me && pg.full_until.contains_key(&osd) {
                    0
                } else {
                    osd
                }
            })
            .collect();
        // ...and are tried again once their time is up.
        pg.retry_at_ms = pg.full_until.values().copied().min();
        let count = live.iter().filter(|&&osd| osd != 0).count();
        if (count as u32) < pg.pg_minsize {
            let blocker = Blocker::BelowMinsize {
                live: count,
                pg_minsize: pg.pg_minsize,
            };
            return self.mark_incomplete(key, &blocker);
        }
        pg.live = live.iter().copied().filter(|&osd| osd != 0).collect();
        pg.live_slots = live;
        let members = pg.osd_set.iter().filter(|&&o| o != 0).count();
        pg.degraded = pg.live.len() < members;
        let peering = pg.peering.as_mut().expect("invariant: checked above");
        let mut plan = BTreeMap::new();
        let mut misplaced = false;
        for (oid, holders) in &peering.versions {
            let newest = holders
                .values()
                .copied()
                .max_by_key(|listed| listed.version)
                .expect("invariant: an object is recorded with a holder");
            if holders.keys().any(|osd| !pg.osd_set.contains(osd)) {
                misplaced = true;
            }
            let targets: Vec<u64> = pg
                .live
                .iter()
                .copied()
                .filter(|osd| holders.get(osd).map_or(0, |l| l.version) < newest.version)
                .collect();
            if targets.is_empty() {
                continue;
            }
            let source = if holders.get(&me).map(|l| l.version) == Some(newest.version) {
                me
            } else {
                *holders
                    .iter()
                    .find(|(_, l)| l.version == newest.version)
                    .map(|(osd, _)| osd)
                    .expect("invariant: some holder has the newest version")
            };
            // Enough copies of the newest version exist, some on OSDs outside the set:
            // moving them is rebalance, not recovery.
            let copies = holders
                .values()
                .filter(|l| l.version == newest.version)
                .count();
            let kind = if copies >= members {
                CopyKind::Misplaced
            } else {
                CopyKind::Degraded
            };
            let whole = targets
                .iter()
                .any(|osd| holders.get(osd).is_some_and(|l| !l.deleted));
            let mut item = RecoveryItem::new(newest, source, targets, kind, whole);
            item.other_sources = holders
                .iter()
                .filter(|(&osd, l)| osd != source && l.version == newest.version && !l.deleted)
                .map(|(&osd, _)| osd)
                .collect();
            plan.insert(*oid, item);
        }
        if !plan.is_empty() {
            tracing::info!(
                pool = key.0,
                pg = key.1,
                objects = plan.len(),
                "objects to recover in the background once active"
            );
        }
        peering.plan = plan;
        peering.misplaced_copies = misplaced;
        self.write_history(key);
    }

    /// Peering decided: record the live set and the new epoch in `/pg/history`, and serve
    /// once etcd confirmed it. While copies are outstanding the sets recorded before stay
    /// in the history (a live member may still lack what only they hold).
    pub(super) fn write_history(&mut self, key: PgKey) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let Some(peering) = pg.peering.as_mut() else {
            return;
        };
        if peering.writing_history.is_some() {
            return;
        }
        let old = peering.based_on.clone().unwrap_or_default();
        let newest = peering
            .versions
            .values()
            .flat_map(|holders| holders.values())
            .map(|listed| listed.version)
            .max()
            .unwrap_or(0);
        let epoch = peering.fence.max((newest >> 16) + 1);
        let holders: BTreeSet<u64> = peering
            .versions
            .values()
            .flat_map(|holders| holders.keys())
            .copied()
            .collect();
        let clean = peering.plan.is_empty();
        let new =
            history::activated_history(&old, &pg.osd_set, &pg.live_slots, &holders, epoch, clean);
        peering.writing_history = Some(new.clone());
        let expected = peering.based_on.clone();
        self.put_history(key, HistoryWrite::Activation, expected.as_ref(), &new);
    }

    /// The answer to [`EtcdAction::PutPgHistory`]: `ok` when etcd took the new history
    /// (the activation's, or the trim after recovery).
    pub fn on_history_written(&mut self, key: PgKey, id: u64, ok: bool) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        if pg
            .history_write
            .as_ref()
            .is_none_or(|(awaited, ..)| *awaited != id)
        {
            // An earlier write (of an earlier peering): if etcd took it, the writes that
            // follow it see the change through their own conditions.
            return;
        }
        let (_, gen, purpose) = pg.history_write.take().expect("invariant: checked");
        if gen != pg.generation || self.lease_lost {
            return; // peering restarted meanwhile; it reads the history again
        }
        if !ok {
            if matches!(purpose, HistoryWrite::Scrubbed(_)) {
                pg.scrub_served = None; // not recorded: the scrub is still due
            }
            // Someone else changed the history (the monitor moved the set) or we lost
            // the PG: peer again on what etcd says now.
            return self.retry_peering_later(key, "the PG history changed under us");
        }
        match purpose {
            HistoryWrite::Activation => self.activate(key),
            HistoryWrite::Trim => self.history_trimmed(key),
            HistoryWrite::ForgetPeers(history) => self.peers_forgotten(key, history),
            HistoryWrite::Scrubbed(history) => self.scrub_recorded(key, history),
        }
    }

    fn activate(&mut self, key: PgKey) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let Some(mut peering) = pg.peering.take() else {
            return;
        };
        let history = peering
            .writing_history
            .take()
            .expect("invariant: activation follows the history write");
        pg.epoch = history.epoch;
        pg.base = PgBase::Active;
        pg.seen_history = Some(history.clone());
        pg.object_count = peering.versions.len() as u64;
        pg.has_misplaced = peering.misplaced_copies;
        let tombstones: Vec<(ObjectId, u64)> = peering
            .versions
            .iter()
            .filter_map(|(oid, holders)| {
                let newest = holders.values().max_by_key(|l| l.version)?;
                newest.deleted.then_some((*oid, newest.version))
            })
            .collect();
        let mut foreign: BTreeMap<u64, Vec<(ObjectId, u64)>> = BTreeMap::new();
        for (oid, holders) in &peering.versions {
            for (&osd, listed) in holders {
                if !pg.osd_set.contains(&osd) {
                    foreign.entry(osd).or_default().push((*oid, listed.version));
                }
            }
        }
        // Listed OSDs outside the set that hold nothing leave all_peers too.
        for &osd in &peering.listed {
            if !pg.osd_set.contains(&osd) && history.all_peers.contains(&osd) {
                foreign.entry(osd).or_default();
            }
        }
        let untrimmed = history.osd_sets != [pg.live_slots.clone()];
        let mut queue = RecoveryQueue::new(std::mem::take(&mut peering.plan), untrimmed);
        queue.tombstones = tombstones;
        queue.foreign = foreign;
        let (degraded_objects, misplaced_objects) = queue.left();
        pg.has_degraded = degraded_objects > 0;
        pg.has_misplaced |= misplaced_objects > 0;
        let empty = queue.is_empty();
        pg.recovery = Some(queue);
        tracing::info!(
            pool = key.0,
            pg = key.1,
            epoch = pg.epoch,
            objects = pg.object_count,
            degraded = pg.degraded,
            degraded_objects,
            misplaced_objects,
            live = ?pg.live_slots,
            "PG active"
        );
        self.view.pg_history.insert(key, history);
        self.raise_fence(key, self.pgs[&key].epoch);
        self.put_pg_stats(key);
        self.publish_state(key);
        // Objects this store knows are damaged are rewritten from good copies.
        self.repair_local_damage(key);
        if empty {
            self.recovery_finished(key);
        } else {
            self.pump_recovery();
        }
    }

    /// Every live member holds the newest version of every object: trim the history to
    /// the live set (conditioned, like the activation's write), then the PG is clean.
    pub(super) fn recovery_finished(&mut self, key: PgKey) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        // What this PG's activation wrote (the view may lag behind it).
        let current = pg.seen_history.clone();
        let Some(queue) = pg.recovery.as_mut() else {
            return;
        };
        debug_assert!(queue.is_empty(), "recovery finished with copies left");
        if !queue.history_untrimmed {
            return self.history_trimmed(key);
        }
        if queue.trimming || pg.history_write.is_some() {
            return;
        }
        let current = current.unwrap_or_default();
        let trimmed = PgHistory {
            osd_sets: vec![pg.live_slots.clone()],
            ..current.clone()
        };
        queue.trimming = true;
        self.put_history(key, HistoryWrite::Trim, Some(&current), &trimmed);
    }

    /// The history names only the live set: the PG is clean (but for members that are
    /// down and copies outside the set); purge tombstones if every OSD that may hold a
    /// copy is live.
    fn history_trimmed(&mut self, key: PgKey) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        let Some(mut queue) = pg.recovery.take() else {
            return;
        };
        let mut history = pg.seen_history.clone().unwrap_or_default();
        if queue.trimming {
            history.osd_sets = vec![pg.live_slots.clone()];
            pg.seen_history = Some(history.clone());
            self.view.pg_history.insert(key, history.clone());
        }
        pg.has_degraded = false;
        pg.retry_delay_ms = 0;
        let foreign = std::mem::take(&mut queue.foreign);
        let tombstones = std::mem::take(&mut queue.tombstones);
        if !tombstones.is_empty() && history::may_purge(&history, &pg.live) {
            pg.purges.extend(tombstones);
        }
        if queue.done_objects > 0 {
            tracing::info!(
                pool = key.0,
                pg = key.1,
                objects = queue.done_objects,
                bytes = queue.done_bytes,
                "PG recovered"
            );
        }
        self.put_pg_stats(key);
        self.publish_state(key);
        self.pump_purges();
        self.start_cleanup(key, foreign);
    }

    /// Writes `/pg/stats` for the PG (object counts by state).
    pub(super) fn put_pg_stats(&mut self, key: PgKey) {
        let now = self.now_ms;
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        pg.stats_at_ms = now;
        let objects = pg.object_count;
        let (mut degraded, misplaced) = pg.recovery.as_ref().map_or((0, 0), |q| q.left());
        if pg.degraded {
            // Members are missing: every object has fewer copies than the PG should.
            degraded = objects.saturating_sub(misplaced);
        }
        let stats = PgStats {
            object_count: objects,
            clean_count: objects.saturating_sub(degraded + misplaced),
            misplaced_count: misplaced,
            degraded_count: degraded,
            incomplete_count: 0,
            write_osd_set: None,
        };
        let value = serde_json::to_string(&stats).expect("invariant: serializes");
        self.actions
            .push(Action::Etcd(EtcdAction::PutPgStats { pg: key, value }));
    }

    /// Sends queued tombstone purges and cleanup purges (`cleanup.rs`), at most
    /// [`PURGES_IN_FLIGHT`] requests at a time.
    pub(super) fn pump_purges(&mut self) {
        let me = self.settings.osd_num;
        while self.purges_inflight < PURGES_IN_FLIGHT {
            let Some((&key, pg)) = self
                .pgs
                .iter_mut()
                .find(|(_, pg)| pg.base == PgBase::Active && !pg.purges.is_empty())
            else {
                if self.send_cleanup_purge() {
                    continue;
                }
                return;
            };
            let (oid, version) = pg.purges.pop_front().expect("invariant: not empty");
            let (epoch, live) = (pg.epoch, pg.live.clone());
            debug_assert!(version >> 16 < epoch, "only earlier epochs' tombstones");
            self.purges_inflight += 1;
            self.submit_store(Op::Purge { oid, version }, Waiter::Purge);
            for &osd in live.iter().filter(|&&osd| osd != me) {
                let body = purge_request(key, oid, version, epoch);
                if self.send_to_peer(osd, body, &[], Waiter::Purge) {
                    self.purges_inflight += 1;
                }
            }
        }
    }

    /// A purge request finished (best effort: a tombstone left behind is purged after the
    /// next peering).
    pub(super) fn purge_done(&mut self) {
        self.purges_inflight -= 1;
        self.pump_purges();
    }

    /// Stops serving `key`: waits for ops in flight, then releases `/pg/state`.
    pub(super) fn stop_pg(&mut self, key: PgKey) {
        self.fail_queued_ops(key);
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        pg.stop = true;
        pg.generation += 1;
        pg.peering = None;
        pg.retry_at_ms = None;
        self.drop_background_work(key);
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        if pg.inflight > 0 {
            pg.base = PgBase::Stopping;
            self.publish_state(key);
            return;
        }
        let claimed = pg.claimed;
        let claiming = pg.claiming;
        if claiming {
            pg.base = PgBase::Stopping;
            return; // released when the claim's answer arrives
        }
        self.pgs.remove(&key);
        if claimed {
            tracing::info!(pool = key.0, pg = key.1, "PG released");
            self.actions
                .push(Action::Etcd(EtcdAction::ReleasePg { pg: key }));
        }
        // It may be ours again under a new configuration.
        if !self.lease_lost {
            self.sync_pgs_with_view();
        }
    }

    /// A client op of `key` finished: continue a pending repeer or stop.
    pub(super) fn pg_op_finished(&mut self, key: PgKey) {
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        pg.inflight -= 1;
        if pg.inflight > 0 {
            return;
        }
        if pg.stop {
            self.stop_pg(key);
        } else if pg.base == PgBase::Repeering {
            self.start_peering(key);
        }
    }
}

impl Peering {
    pub(super) fn record(&mut self, oid: ObjectId, osd: u64, version: u64, deleted: bool) {
        let entry = self
            .versions
            .entry(oid)
            .or_default()
            .entry(osd)
            .or_insert(Listed {
                version: 0,
                deleted: false,
            });
        if version >= entry.version {
            *entry = Listed { version, deleted };
        }
    }
}
