//! The OSD daemon's decision logic, without I/O of its own ("sans-IO").
//!
//! [`Osd`] owns the blockstore and reacts to events: bytes from inbound connections
//! (clients, and peers acting as primaries), replies from peer OSDs, a new cluster view from
//! etcd, the result of claiming a PG, blockstore completions. What it wants done comes out
//! of [`Osd::take_actions`]: bytes to send, connections to close, etcd writes. The real
//! driver ([`crate::net`]) moves those over TCP and etcd on one thread; the cluster
//! simulation in the tests moves them through a seeded in-memory network. Both run exactly
//! this code.
//!
//! Files: `inbound.rs` decodes requests and answers the connection-level ops,
//! `secondary.rs` serves sub-ops (and fences deposed primaries by PG epoch), `primary.rs`
//! serves client ops on active PGs, `pg.rs` holds a PG's state, `peering.rs` takes, peers,
//! activates and stops PGs, `recovery.rs` copies objects to members that lack them while the PG is active,
//! `cleanup.rs` drops copies left outside a PG's set, `history.rs` is the
//! activation rule and the `/pg/history` it leaves.

mod cleanup;
mod describe;
mod ec_decide;
mod ec_layout;
mod ec_peering;
mod ec_primary;
mod ec_rebuild;
mod fix;
mod history;
mod inbound;
mod peering;
mod pg;
mod primary;
mod recovery;
mod recovery_tune;
mod repair;
mod scrub;
mod secondary;
mod stabilize;
mod timers;

pub use pg::{PgBase, PgStatus};

use crate::blockstore::{Blockstore, Completion, Disk, OpError, OpId, OpOutput};
use crate::cluster::{ClusterView, PgKey};
use std::collections::{BTreeMap, HashMap, HashSet};
use vitastor_proto::errno;
use vitastor_proto::etcd::ImmediateCommit;
use vitastor_proto::wire::{encode_request, Reply, ReplyDecoder, Request, RequestDecoder};

/// Identifies an inbound connection (assigned by the driver).
pub type ConnId = u64;

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send bytes (replies) on inbound connection `conn`.
    Reply {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    /// Send bytes (requests) on the outbound connection to OSD `osd`.
    ToPeer {
        osd: u64,
        bytes: Vec<u8>,
    },
    /// Close inbound connection `conn` (it sent something that cannot be parsed).
    Close {
        conn: ConnId,
    },
    /// Drop the outbound connection to OSD `osd` (it answered something impossible) and
    /// connect again later.
    ClosePeer {
        osd: u64,
    },
    Etcd(EtcdAction),
}

/// etcd writes, with values as JSON text. Keys are relative to the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdAction {
    /// Create `/pg/state/<pool>/<pg>` under the OSD's lease only if it does not exist, then
    /// report with [`Osd::on_pg_claimed`].
    ClaimPg {
        pg: PgKey,
        value: String,
    },
    /// Overwrite our own `/pg/state/<pool>/<pg>` (under the lease).
    PutPgState {
        pg: PgKey,
        value: String,
    },
    /// Delete our own `/pg/state/<pool>/<pg>`.
    ReleasePg {
        pg: PgKey,
    },
    PutPgStats {
        pg: PgKey,
        value: String,
    },
    /// Write `/pg/history/<pool>/<pg>` = `value` if it still equals `expected` (`None` =
    /// absent; compared as parsed JSON) and `/pg/state/<pool>/<pg>` carries our lease,
    /// then report with [`Osd::on_history_written`], quoting `id`. (Several writes of
    /// one PG may be on their way, e.g. a trim queued while etcd was unreachable and the
    /// activation of a later peering: each answer must reach the write it belongs to.)
    PutPgHistory {
        pg: PgKey,
        id: u64,
        expected: Option<String>,
        value: String,
    },
}

/// Settings of one OSD.
#[derive(Debug, Clone)]
pub struct OsdSettings {
    pub osd_num: u64,
    pub immediate_commit: ImmediateCommit,
    /// Lease TTL reported in SHOW_CONFIG (seconds).
    pub lease_timeout: u64,
    /// Objects per SEC_LIST page peering asks for (small in tests, to page).
    pub list_page_objects: usize,
}

impl OsdSettings {
    pub fn new(osd_num: u64) -> OsdSettings {
        OsdSettings {
            osd_num,
            immediate_commit: ImmediateCommit::All,
            lease_timeout: 15,
            list_page_objects: 16_384,
        }
    }
}

/// Counters reported in `/osd/stats`.
#[derive(Debug, Clone, Default)]
pub struct OpCounters {
    /// op name -> (count, bytes).
    pub ops: BTreeMap<&'static str, (u64, u64)>,
    pub subops: BTreeMap<&'static str, (u64, u64)>,
    /// Objects copied (count, bytes) by why: "degraded" (too few copies: recovery) or
    /// "misplaced" (copies outside the set: rebalance), Vitastor's `recovery_stats`.
    pub recovery: BTreeMap<&'static str, (u64, u64)>,
}

/// Whom a blockstore op or a peer request reports to.
#[derive(Debug, Clone, Copy)]
enum Waiter {
    /// A part of client op `op` (see `primary.rs`).
    Client { op: u64, part: ClientPart },
    /// A sub-op served for a primary: reply on `conn` when done, after an fsync if `sync`
    /// (`version` and `len` are remembered for the reply that follows the fsync).
    Secondary {
        conn: ConnId,
        id: u64,
        opcode: vitastor_proto::wire::Opcode,
        sync: bool,
        version: u64,
        len: u32,
    },
    /// A rollback, stabilize or tombstone of the peering of EC PG `pg` in generation
    /// `gen` (`ec_peering.rs`).
    EcSettle { pg: PgKey, gen: u64 },
    /// Chunk `chunk` of stripe `oid` read to rebuild it (`ec_rebuild.rs`).
    EcRebuild {
        pg: PgKey,
        gen: u64,
        oid: vitastor_proto::ObjectId,
        chunk: u32,
    },
    /// Part `chunk` of EC client op `op` (`ec_primary.rs`); `sync`: the fsync after it.
    Ec { op: u64, chunk: u32, sync: bool },
    /// One item of a SEC_STABILIZE / SEC_ROLLBACK request (`stabilize.rs`).
    Stabilize { batch: u64 },
    /// The version listing of `osd` for the peering of `pg` in generation `gen`.
    List { pg: PgKey, gen: u64, osd: u64 },
    /// Client read `op` of an object the primary lacks, served by the member that holds
    /// the newest version (`primary.rs`).
    ProxyRead { op: u64 },
    /// The copy of `oid` on `osd` read for the scrub of `pg` in generation `gen`.
    Scrub {
        pg: PgKey,
        gen: u64,
        oid: vitastor_proto::ObjectId,
        osd: u64,
    },
    /// The copy on `osd` read for SCRUB op `op` (`fix.rs`).
    ScrubRequest { op: u64, osd: u64 },
    /// Step of the copy of `oid` of `pg` in generation `gen`.
    Recovery {
        pg: PgKey,
        gen: u64,
        oid: vitastor_proto::ObjectId,
        step: peering::RecoveryStep,
    },
    /// A tombstone purge (best effort: a tombstone left behind is purged next time).
    Purge,
    /// A purge of a copy on `osd`, outside the set of `pg` (`cleanup.rs`).
    Cleanup { pg: PgKey, gen: u64, osd: u64 },
    /// The SYNC that makes those purges durable on `osd`.
    CleanupSync { pg: PgKey, gen: u64, osd: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPart {
    LocalWrite,
    LocalSync,
    Peer,
}

pub struct Osd<D: Disk> {
    settings: OsdSettings,
    store: Blockstore<D>,
    view: ClusterView,
    pgs: BTreeMap<PgKey, pg::Pg>,
    inbound: HashMap<ConnId, RequestDecoder>,
    /// Connected peers and the decoder of their replies.
    peers: HashMap<u64, ReplyDecoder>,
    store_waiters: HashMap<OpId, Waiter>,
    peer_waiters: HashMap<u64, (u64, Waiter)>,
    next_peer_request: u64,
    client_ops: HashMap<u64, primary::ClientOp>,
    next_client_op: u64,
    actions: Vec<Action>,
    completions: Vec<Completion>,
    lease_lost: bool,
    /// Per PG: the newest epoch a primary announced to us (in a listing or a sub-op).
    /// Sub-ops of older epochs come from a deposed primary and are refused.
    fences: HashMap<PgKey, u64>,
    /// Opcodes already logged as refused (unknown, unimplemented or unsealed): each is
    /// logged once, so a stock client retrying cannot flood the log.
    refused_opcodes: HashSet<u64>,
    /// Monotonic clock (ms) as last set by the driver (see [`Osd::set_clock`]).
    now_ms: u64,
    /// The same clock in microseconds (latencies for recovery tuning).
    now_us: u64,
    /// Wall clock, UNIX seconds (scrub schedules); 0 until the driver sets it.
    unix_s: u64,
    /// Objects being compared by scrubs (at most `scrub_queue_depth`), the earliest
    /// time the next may start (`scrub_sleep`), the last look for due PGs (`scrub.rs`).
    scrub_inflight: usize,
    /// PGs with a scrub running (no PG needs looking at while it is 0).
    scrubbing_pgs: usize,
    scrub_next_at_ms: u64,
    scrub_checked_at_ms: u64,
    recovery_tuner: recovery_tune::RecoveryTuner,
    /// Until when the etcd lease is certainly alive (monotonic ms); `None` = no deadline
    /// is enforced (tests that do not model leases).
    lease_deadline_ms: Option<u64>,
    counters: OpCounters,
    /// Background copies in flight (at most `recovery_queue_depth`).
    recovery_inflight: usize,
    /// The PG background recovery works on, and how many copies it started there.
    recovery_cursor: PgKey,
    recovery_switch_count: u64,
    /// This OSD ran out of space copying an object to itself: copies to it pause until
    /// then (monotonic ms; `recovery.rs`).
    full_until_ms: u64,
    /// Tombstone purge requests in flight (at most `peering::PURGES_IN_FLIGHT`).
    purges_inflight: usize,
    /// SEC_LIST requests waiting for changes of their PG in flight (`secondary.rs`); at
    /// most one per PG a primary peers, each answered after the next disk completions.
    deferred_lists: Vec<(ConnId, vitastor_proto::wire::Request)>,
    /// Stripe geometry and codec per EC pool (`ec_peering.rs`).
    ec_codecs: HashMap<u32, std::sync::Arc<ec_primary::EcInfo>>,
    /// EC stripes being rebuilt (`ec_rebuild.rs`).
    ec_rebuilds: ec_rebuild::Rebuilds,
    /// EC client ops in progress, by client op key (`ec_primary.rs`).
    ec_ops: HashMap<u64, ec_primary::EcOp>,
    /// SEC_STABILIZE / SEC_ROLLBACK requests in progress, by batch number.
    stabilize_batches: BTreeMap<u64, stabilize::StabilizeBatch>,
    next_stabilize_batch: u64,
    /// Numbers the history writes ([`EtcdAction::PutPgHistory`]).
    next_history_write: u64,
}

impl<D: Disk> Osd<D> {
    pub fn new(settings: OsdSettings, store: Blockstore<D>) -> Osd<D> {
        Osd {
            settings,
            store,
            view: ClusterView::default(),
            pgs: BTreeMap::new(),
            inbound: HashMap::new(),
            peers: HashMap::new(),
            store_waiters: HashMap::new(),
            peer_waiters: HashMap::new(),
            next_peer_request: 1,
            client_ops: HashMap::new(),
            next_client_op: 1,
            actions: Vec::new(),
            completions: Vec::new(),
            lease_lost: false,
            fences: HashMap::new(),
            refused_opcodes: HashSet::new(),
            now_ms: 0,
            now_us: 0,
            unix_s: 0,
            scrub_inflight: 0,
            scrubbing_pgs: 0,
            scrub_next_at_ms: 0,
            scrub_checked_at_ms: 0,
            recovery_tuner: Default::default(),
            lease_deadline_ms: None,
            counters: OpCounters::default(),
            recovery_inflight: 0,
            recovery_cursor: (0, 0),
            full_until_ms: 0,
            deferred_lists: Vec::new(),
            stabilize_batches: BTreeMap::new(),
            ec_ops: HashMap::new(),
            ec_codecs: HashMap::new(),
            ec_rebuilds: HashMap::new(),
            next_stabilize_batch: 0,
            recovery_switch_count: 0,
            purges_inflight: 0,
            next_history_write: 1,
        }
    }

    pub fn osd_num(&self) -> u64 {
        self.settings.osd_num
    }

    pub fn store(&self) -> &Blockstore<D> {
        &self.store
    }

    /// Gives the blockstore back (shutdown, or a simulated crash in tests).
    pub fn into_store(self) -> Blockstore<D> {
        self.store
    }

    pub fn counters(&self) -> &OpCounters {
        &self.counters
    }

    /// The PGs this OSD is primary of, with their state.
    pub fn pg_statuses(&self) -> Vec<(PgKey, PgStatus)> {
        self.pgs
            .iter()
            .map(|(key, pg)| (*key, pg.status()))
            .collect()
    }

    /// The epoch PG `key` is served in here (0 before its first activation).
    pub fn pg_epoch(&self, key: PgKey) -> Option<u64> {
        self.pgs.get(&key).map(|pg| pg.epoch)
    }

    /// Flushes everything journaled to its final place (tests: "the delete was flushed").
    pub fn flush_store(&mut self) {
        if let Err(error) = self.store.flush_all() {
            tracing::error!("flush failed: {error}");
        }
    }

    /// A one-line summary of PGs and ops in flight (tests and debugging).
    pub fn debug_state(&self) -> String {
        let pgs: Vec<String> = self
            .pgs
            .iter()
            .map(|(key, pg)| {
                format!(
                    "{key:?} {:?} epoch {} inflight {} busy {:?} stop {} claimed {}",
                    pg.base, pg.epoch, pg.inflight, pg.busy, pg.stop, pg.claimed
                )
            })
            .collect();
        let ops: Vec<String> = self
            .client_ops
            .iter()
            .map(|(key, op)| format!("{key}: {op:?}"))
            .collect();
        format!(
            "lease_ok {} pgs [{}] client ops [{}] peers {:?} store waiters {} peer waiters {:?}",
            !self.lease_lost,
            pgs.join("; "),
            ops.join("; "),
            self.peers.keys().collect::<Vec<_>>(),
            self.store_waiters.len(),
            self.peer_waiters
        )
    }

    /// Moves the pending actions into `out`.
    pub fn take_actions(&mut self, out: &mut Vec<Action>) {
        out.append(&mut self.actions);
    }

    // ---- connections ----

    pub fn on_connect(&mut self, conn: ConnId) {
        self.inbound.insert(conn, RequestDecoder::new());
    }

    pub fn on_disconnect(&mut self, conn: ConnId) {
        self.inbound.remove(&conn);
    }

    /// A peer connection is established (handshake done): it can carry sub-ops and PGs
    /// that wait for it may peer.
    pub fn on_peer_connected(&mut self, osd: u64) {
        self.peers.insert(osd, ReplyDecoder::new());
        self.repeer_pgs_with(osd);
    }

    /// The connection to `osd` is gone: its pending requests fail and PGs using it repeer.
    pub fn on_peer_down(&mut self, osd: u64) {
        if self.peers.remove(&osd).is_none() {
            return;
        }
        let failed: Vec<u64> = self
            .peer_waiters
            .iter()
            .filter(|(_, (peer, _))| *peer == osd)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            if let Some((_, waiter)) = self.peer_waiters.remove(&id) {
                self.waiter_done(waiter, Err(errno::EPIPE), None, Some(osd));
            }
        }
        self.repeer_pgs_with(osd);
    }

    /// Replies from peer `osd`.
    pub fn on_peer_bytes(&mut self, osd: u64, bytes: &[u8]) {
        let Some(decoder) = self.peers.get_mut(&osd) else {
            return;
        };
        decoder.push(bytes);
        loop {
            let next = match self.peers.get_mut(&osd) {
                Some(decoder) => decoder.next_reply(),
                None => return,
            };
            match next {
                Ok(Some((reply, payload))) => {
                    let Some((_, waiter)) = self.peer_waiters.remove(&reply.id) else {
                        tracing::warn!(osd, id = reply.id, "reply to an unknown request");
                        continue;
                    };
                    let result = if reply.retval < 0 {
                        Err((-reply.retval) as i32)
                    } else {
                        Ok(reply)
                    };
                    self.waiter_done(waiter, result, Some(payload), Some(osd));
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::error!(osd, "bad reply from a peer, dropping it: {error}");
                    self.on_peer_down(osd);
                    return;
                }
            }
        }
    }

    // ---- cluster state ----

    /// A new cluster view: starts, repeers or stops PGs as needed.
    pub fn on_view(&mut self, view: &ClusterView) {
        debug_assert!(
            self.pgs
                .iter()
                .all(|(_, pg)| pg.base != PgBase::Active || pg.epoch > 0),
            "an active PG has an epoch"
        );
        self.view = view.clone();
        if !self.lease_lost {
            self.sync_pgs_with_view();
            // Recovery settings may have changed.
            self.pump_recovery();
        }
    }

    /// The monotonic clock in milliseconds. The driver sets it before every batch of
    /// events, so a process that was frozen (SIGSTOP, a long stall) notices that its lease
    /// deadline passed before it serves anything.
    pub fn set_clock(&mut self, now_ms: u64) {
        debug_assert!(now_ms >= self.now_ms, "the clock is monotonic");
        self.now_ms = now_ms;
        self.now_us = self.now_us.max(now_ms * 1000);
        self.check_lease_deadline();
        if !self.lease_lost {
            self.run_due_retries();
            self.tune_recovery();
            self.pump_recovery();
            self.pump_scrub();
        }
    }

    /// The wall clock in UNIX seconds (for `next_scrub`), set by the driver with the
    /// monotonic one.
    pub fn set_unix_time(&mut self, unix_s: u64) {
        self.unix_s = unix_s;
    }

    /// [`Osd::set_clock`] with microseconds (the daemon's driver; latencies of fast ops
    /// need them).
    pub fn set_clock_us(&mut self, now_us: u64) {
        debug_assert!(now_us >= self.now_us, "the clock is monotonic");
        self.now_us = now_us;
        self.set_clock(now_us / 1000);
    }

    /// The instant (monotonic ms) until which the etcd lease is certainly alive: the send
    /// time of the last keepalive etcd answered, plus the TTL, minus a safety margin. Past
    /// it this OSD stops serving every PG, strictly before etcd can expire the lease and
    /// let another OSD take the PGs over (fencing). A new deadline after the lease was lost
    /// (etcd answered again and the same lease is still alive) resumes serving.
    pub fn set_lease_deadline(&mut self, deadline_ms: Option<u64>) {
        self.lease_deadline_ms = deadline_ms;
        match deadline_ms {
            Some(deadline) if self.lease_lost && self.now_ms < deadline => {
                tracing::info!("the etcd lease is alive again; serving PGs");
                self.lease_lost = false;
                self.sync_pgs_with_view();
            }
            _ => self.check_lease_deadline(),
        }
    }

    fn check_lease_deadline(&mut self) {
        if let Some(deadline) = self.lease_deadline_ms {
            if !self.lease_lost && self.now_ms >= deadline {
                tracing::error!(
                    "the etcd lease was not renewed in time: stopping every PG until it is"
                );
                self.on_lease_lost();
            }
        }
    }

    /// Whether the lease is held (no deadline passed, not lost).
    pub fn lease_ok(&self) -> bool {
        !self.lease_lost
    }

    /// The etcd lease is gone: this OSD may no longer act as a primary.
    pub fn on_lease_lost(&mut self) {
        self.lease_lost = true;
        let keys: Vec<PgKey> = self.pgs.keys().copied().collect();
        for key in keys {
            self.stop_pg(key);
        }
    }

    // ---- the blockstore ----

    /// Processes blockstore completions (and sends queued disk requests). Call after every
    /// batch of events and whenever the disk signals completions.
    pub fn poll_store(&mut self) {
        loop {
            if let Err(error) = self.store.poll(false) {
                tracing::error!("disk poll failed: {error}");
            }
            let mut done = std::mem::take(&mut self.completions);
            self.store.take_completions(&mut done);
            if done.is_empty() {
                self.completions = done;
                return;
            }
            for completion in done.drain(..) {
                let Some(waiter) = self.store_waiters.remove(&completion.id) else {
                    continue;
                };
                match completion.result {
                    Ok(output) => self.store_done(waiter, Ok(output)),
                    Err(error) => self.store_done(waiter, Err(error)),
                }
            }
            self.completions = done;
            if !self.deferred_lists.is_empty() {
                self.retry_deferred_lists();
            }
        }
    }

    fn submit_store(&mut self, op: crate::blockstore::Op, waiter: Waiter) {
        let id = self.store.submit(op);
        self.store_waiters.insert(id, waiter);
    }

    fn store_done(&mut self, waiter: Waiter, result: Result<OpOutput, OpError>) {
        match waiter {
            Waiter::Secondary { .. } => self.secondary_store_done(waiter, result),
            Waiter::Stabilize { batch } => self.stabilize_item_done(batch, result),
            Waiter::Ec { op, chunk, sync } => self.ec_store_done(op, chunk, sync, result),
            Waiter::EcSettle { pg, gen } => self.ec_settle_local(pg, gen, result),
            Waiter::EcRebuild {
                pg,
                gen,
                oid,
                chunk,
            } => self.ec_rebuild_local((pg, gen, oid, chunk), result),
            Waiter::Client { op, part } => self.client_store_done(op, part, result),
            Waiter::List { .. }
            | Waiter::Cleanup { .. }
            | Waiter::CleanupSync { .. }
            | Waiter::ProxyRead { .. } => {
                debug_assert!(false, "never a local request: {waiter:?}")
            }
            Waiter::Purge => self.purge_done(),
            Waiter::Recovery { pg, gen, oid, step } => {
                self.recovery_local_done(pg, gen, oid, step, result)
            }
            Waiter::Scrub { pg, gen, oid, osd } => {
                self.scrub_local_read((pg, gen, oid, osd), result)
            }
            Waiter::ScrubRequest { op, osd } => self.scrub_request_local(op, osd, result),
        }
    }

    /// A peer request finished (`Err(errno)` for an error reply or a lost connection).
    fn waiter_done(
        &mut self,
        waiter: Waiter,
        result: Result<Reply, i32>,
        payload: Option<Vec<u8>>,
        from: Option<u64>,
    ) {
        match waiter {
            Waiter::Client { op, .. } => self.client_peer_done(op, result, from),
            Waiter::ProxyRead { op } => self.proxy_read_done(
                op,
                result.map(|reply| (reply, payload.unwrap_or_default())),
                from,
            ),
            Waiter::List { pg, gen, osd } => self.listing_received(
                pg,
                gen,
                osd,
                result.map(|reply| (reply, payload.unwrap_or_default())),
            ),
            Waiter::Recovery { pg, gen, oid, step } => self.recovery_peer_done(
                pg,
                gen,
                (oid, step),
                result.map(|reply| (reply, payload.unwrap_or_default())),
                from,
            ),
            Waiter::Purge => self.purge_done(),
            Waiter::Scrub { pg, gen, oid, osd } => self.scrub_peer_read(
                (pg, gen, oid, osd),
                result.map(|reply| (reply, payload.unwrap_or_default())),
            ),
            Waiter::EcRebuild {
                pg,
                gen,
                oid,
                chunk,
            } => self.ec_rebuild_peer(
                (pg, gen, oid, chunk),
                result.map(|reply| (reply, payload.unwrap_or_default())),
            ),
            Waiter::EcSettle { pg, gen } => self.ec_settle_done(
                pg,
                gen,
                result.map(|_| ()).map_err(|code| format!("error {code}")),
            ),
            Waiter::Ec { op, chunk, .. } => self.ec_peer_done(
                op,
                chunk,
                result.map(|reply| (reply, payload.unwrap_or_default())),
            ),
            Waiter::ScrubRequest { op, osd } => self.scrub_request_peer(
                op,
                osd,
                result.map(|reply| (reply, payload.unwrap_or_default())),
            ),
            Waiter::Cleanup { pg, gen, osd } => {
                // Version 0: nothing was purged (the OSD has a newer version than it
                // listed, or the op raced with something); it stays in all_peers.
                let purged = matches!(
                    result,
                    Ok(Reply {
                        body: vitastor_proto::wire::ReplyBody::SecDelete { version },
                        ..
                    }) if version != 0
                );
                self.cleanup_purge_done(pg, gen, osd, purged);
                self.purge_done();
            }
            Waiter::CleanupSync { pg, gen, osd } => {
                self.cleanup_sync_done(pg, gen, osd, result.is_ok())
            }
            Waiter::Secondary { .. } | Waiter::Stabilize { .. } => {}
        }
    }

    /// Drops the connection to `osd` after it answered something impossible: its pending
    /// requests fail and the PGs using it peer again.
    pub(super) fn close_peer(&mut self, osd: u64) {
        self.on_peer_down(osd);
        self.actions.push(Action::ClosePeer { osd });
    }

    /// Queues a conditional write of PG `key`'s history (see [`EtcdAction::PutPgHistory`])
    /// whose answer [`Osd::on_history_written`] hands to `purpose`.
    fn put_history(
        &mut self,
        key: PgKey,
        purpose: pg::HistoryWrite,
        expected: Option<&vitastor_proto::etcd::PgHistory>,
        value: &vitastor_proto::etcd::PgHistory,
    ) {
        let id = self.next_history_write;
        self.next_history_write += 1;
        let Some(pg) = self.pgs.get_mut(&key) else {
            return;
        };
        pg.history_write = Some((id, pg.generation, purpose));
        let expected = expected.map(|h| serde_json::to_string(h).expect("invariant: serializes"));
        let value = serde_json::to_string(value).expect("invariant: serializes");
        self.actions.push(Action::Etcd(EtcdAction::PutPgHistory {
            pg: key,
            id,
            expected,
            value,
        }));
    }

    /// Remembers that `epoch` of PG `key` was announced (fencing older primaries).
    pub(super) fn raise_fence(&mut self, key: PgKey, epoch: u64) {
        let fence = self.fences.entry(key).or_insert(0);
        *fence = (*fence).max(epoch);
    }

    /// Sends a request to a connected peer; `false` when it is not connected.
    fn send_to_peer(
        &mut self,
        osd: u64,
        body: vitastor_proto::wire::RequestBody,
        payload: &[u8],
        waiter: Waiter,
    ) -> bool {
        if !self.peers.contains_key(&osd) {
            return false;
        }
        let id = self.next_peer_request;
        self.next_peer_request += 1;
        match encode_request(&Request { id, body }, payload) {
            Ok(bytes) => {
                self.peer_waiters.insert(id, (osd, waiter));
                self.actions.push(Action::ToPeer { osd, bytes });
                true
            }
            Err(error) => {
                tracing::error!(osd, "cannot encode a sub-op: {error}");
                false
            }
        }
    }

    fn reply(&mut self, conn: ConnId, reply: Reply, payload: &[u8]) {
        match vitastor_proto::wire::encode_reply(&reply, payload) {
            Ok(bytes) => self.actions.push(Action::Reply { conn, bytes }),
            Err(error) => tracing::error!(conn, "cannot encode a reply: {error}"),
        }
    }

    fn count(map: &mut BTreeMap<&'static str, (u64, u64)>, name: &'static str, bytes: u64) {
        let entry = map.entry(name).or_default();
        entry.0 += 1;
        entry.1 += bytes;
    }

    /// Whether writes must be followed by an fsync before they are acknowledged.
    fn sync_every_write(&self) -> bool {
        self.settings.immediate_commit == ImmediateCommit::All
    }
}
