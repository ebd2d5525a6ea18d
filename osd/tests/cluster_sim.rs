//! Deterministic cluster simulation: OSDs (the real daemon logic and blockstore) on
//! simulated disks, a seeded in-memory network that delivers each connection's bytes in
//! order but interleaves connections at random, an in-memory etcd with leases (PG claims,
//! conditional history and state writes, the watch), a monitor stand-in that moves
//! primaries off dead OSDs and changes PG sets (recording the old set in `/pg/history` as
//! the real monitor does), an injected clock, and a client writing 4 KiB sectors,
//! deleting whole objects and reading.
//!
//! Faults: OSD crashes (the disk keeps only what was fsynced, unsynced writes are lost or
//! torn) and restarts, two crashes in a row, partitions between two OSDs (one direction
//! stalls first, then the connection breaks), an OSD cut off from etcd (its lease
//! expires; it must stop serving before that), PG set changes; scrubs requested now and
//! then (they run between the faults).
//!
//! Oracle, per sector: a read returns the last acknowledged write (or delete, read as
//! zeros), or a write whose outcome the client never learned issued after it, or one
//! issued while the read was in flight; and reads are monotonic: once a read returned a
//! write whose outcome the client never learned, that write counts as acknowledged. No two OSDs are ever active for one PG in the
//! same epoch, and no two OSDs whose lease is still valid are active for one PG at the
//! same time. At the end every PG's primary is moved to each member in turn and
//! everything is read again, so every replica is checked.
//!
//! `CLUSTER_SIM_SEEDS=n` runs more seeds (CI runs the default), `CLUSTER_SIM_SEED=s`
//! replays one, `CLUSTER_SIM_STEPS=n` changes the workload length.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use vitastor_osd::blockstore::prepare::prepare;
use vitastor_osd::blockstore::sim::SimDisk;
use vitastor_osd::blockstore::{Blockstore, BlockstoreConfig, FormatOptions};
use vitastor_osd::cluster::{ClusterView, PgKey};
use vitastor_osd::daemon::{Action, EtcdAction, Osd, OsdSettings, PgBase};
use vitastor_proto::etcd::{PgHistory, PgState};
use vitastor_proto::wire::request::Rw;
use vitastor_proto::wire::{encode_request, ReplyBody, ReplyDecoder, Request, RequestBody};

const BLOCK: u64 = 128 << 10;
const SECTOR: usize = 4096;
const OBJECTS: u64 = 8;
const SECTORS_PER_OBJECT: u64 = 4;
const CLIENT: u64 = 1000;
const INODE: u64 = 1 << 48 | 1;
const PG_COUNT: u32 = 4;
/// Lease TTL in simulated ms; a step is 1 ms.
const TTL_MS: u64 = 1500;
/// The OSD stops serving this long before etcd may expire its lease.
const LEASE_MARGIN_MS: u64 = 300;
const KEEPALIVE_MS: u64 = 100;
/// The wall clock (UNIX seconds) at simulated time 0.
const UNIX_BASE_S: u64 = 1_800_000_000;

/// Which way bytes go on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Link {
    /// Requests from OSD `from` (or the client) to OSD `to`.
    Request { from: u64, to: u64 },
    /// Replies from OSD `from` to `to` (an OSD or the client).
    Reply { from: u64, to: u64 },
}

impl Link {
    fn ends(self) -> (u64, u64) {
        match self {
            Link::Request { from, to } | Link::Reply { from, to } => (from, to),
        }
    }
}

#[derive(Debug, Clone)]
enum Pending {
    Write {
        sector: u64,
        value: u32,
    },
    Delete {
        object: u64,
        value: u32,
    },
    Read {
        sector: u64,
        allowed: BTreeSet<u32>,
    },
    /// Any other request (the reply is kept in `other_replies`).
    Other,
}

/// What the client knows of one sector. Value 0 = zeros (never written or deleted).
#[derive(Default)]
struct SectorModel {
    acked: u32,
    /// Writes issued after the last acknowledged one whose outcome is unknown.
    maybe: Vec<u32>,
    busy: bool,
    /// The value of the write or delete in flight (while `busy`).
    inflight: u32,
    /// Reads in flight: every value written meanwhile is allowed for them.
    reads: BTreeSet<u64>,
    /// A read returned the value in flight: it counts as written even if the client
    /// never learns the outcome (reads are monotonic: no later read may go back).
    observed_inflight: bool,
}

impl SectorModel {
    /// A write or delete of `value` ended without an acknowledgement.
    fn not_acknowledged(&mut self, value: u32) {
        if self.observed_inflight {
            self.acked = value;
            self.maybe.clear();
        } else {
            self.maybe.push(value);
        }
        self.observed_inflight = false;
    }

    /// A read returned `found` (allowed): once seen, an unacknowledged value is the
    /// one every later read must return or outdate.
    fn observed(&mut self, found: u32) {
        if found == 0 || found == self.acked {
            return;
        }
        if let Some(pos) = self.maybe.iter().position(|&v| v == found) {
            self.acked = found;
            self.maybe.drain(..=pos);
        } else if self.busy && self.inflight == found {
            self.observed_inflight = true;
        }
    }
}

/// The in-memory etcd's lease of one OSD.
struct Lease {
    id: u64,
    /// When etcd expires it (ms), unless renewed.
    expires_at: u64,
    /// The OSD cannot reach etcd (no renewals, no views, its writes fail).
    cut_off: bool,
}

struct Config {
    osds: u64,
    pg_size: usize,
    pg_minsize: u32,
    /// An OSD whose disk has room for only this many data blocks (a full disk).
    small_disk: Option<(u64, u64)>,
    /// Parity chunks of an EC pool (0: a replicated pool).
    parity_chunks: usize,
}

struct Sim {
    rng: SmallRng,
    seed: u64,
    cfg: Config,
    now: u64,
    osds: BTreeMap<u64, Osd<SimDisk>>,
    dead: BTreeMap<u64, SimDisk>,
    leases: BTreeMap<u64, Lease>,
    /// Leases of dead OSD instances that etcd has not expired yet: (lease id, expiry).
    zombie_leases: Vec<(u64, u64)>,
    /// The lease each `/pg/state` key lives under.
    key_lease: BTreeMap<PgKey, u64>,
    next_lease: u64,
    view: ClusterView,
    links: BTreeMap<Link, VecDeque<Vec<u8>>>,
    /// Links whose bytes are held (one direction of a partition, before it breaks).
    stalled: BTreeSet<Link>,
    /// OSD pairs whose connection is broken until healed.
    partitions: BTreeSet<(u64, u64)>,
    client_decoders: BTreeMap<u64, ReplyDecoder>,
    client_pending: BTreeMap<u64, (u64, Pending)>,
    read_failures: BTreeMap<u64, i64>,
    reads_done: BTreeMap<u64, u32>,
    other_replies: BTreeMap<u64, (vitastor_proto::wire::Reply, Vec<u8>)>,
    next_request: u64,
    model: BTreeMap<u64, SectorModel>,
    next_value: u32,
    acked_writes: u64,
    faults: u64,
    /// (PG, epoch) -> the OSD that was active with it.
    epoch_owner: BTreeMap<(PgKey, u64), u64>,
    /// etcd writes of OSDs cut off from etcd: the driver retries them in order until etcd
    /// answers again.
    etcd_backlog: BTreeMap<u64, Vec<EtcdAction>>,
}

fn pattern(value: u32) -> Vec<u8> {
    let mut data = vec![0u8; SECTOR];
    for (i, chunk) in data.chunks_mut(4).enumerate() {
        chunk.copy_from_slice(&(value ^ i as u32).to_le_bytes());
    }
    data
}

fn value_of(data: &[u8]) -> Option<u32> {
    if data.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let value = u32::from_le_bytes(data[..4].try_into().unwrap());
    (value != 0 && data == pattern(value).as_slice()).then_some(value)
}

fn pair(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

impl Sim {
    fn new(seed: u64, cfg: Config) -> Sim {
        if std::env::var("CLUSTER_SIM_LOG").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
                .with_test_writer()
                .try_init();
        }
        let mut view = ClusterView::default();
        let scheme = match cfg.parity_chunks {
            0 => r#""scheme":"replicated""#.to_string(),
            m => format!(r#""scheme":"ec","parity_chunks":{m}"#),
        };
        let pools = format!(
            r#"{{"1":{{"name":"p",{scheme},"pg_size":{},"pg_minsize":{},"pg_count":{PG_COUNT}}}}}"#,
            cfg.pg_size, cfg.pg_minsize
        );
        assert!(view.apply("/config/pools", Some(pools.as_bytes())));
        let mut sim = Sim {
            rng: SmallRng::seed_from_u64(seed),
            seed,
            now: 1,
            osds: BTreeMap::new(),
            dead: BTreeMap::new(),
            leases: BTreeMap::new(),
            zombie_leases: Vec::new(),
            key_lease: BTreeMap::new(),
            next_lease: 1,
            view,
            links: BTreeMap::new(),
            stalled: BTreeSet::new(),
            partitions: BTreeSet::new(),
            client_decoders: BTreeMap::new(),
            client_pending: BTreeMap::new(),
            read_failures: BTreeMap::new(),
            reads_done: BTreeMap::new(),
            other_replies: BTreeMap::new(),
            next_request: 1,
            model: BTreeMap::new(),
            next_value: 1,
            acked_writes: 0,
            faults: 0,
            epoch_owner: BTreeMap::new(),
            etcd_backlog: BTreeMap::new(),
            cfg,
        };
        // Initial PG map: consecutive OSDs, primary = first member.
        let mut sets = BTreeMap::new();
        for pg in 1..=PG_COUNT {
            let set: Vec<u64> = (0..sim.cfg.pg_size as u64)
                .map(|i| (u64::from(pg) + i) % sim.cfg.osds + 1)
                .collect();
            sets.insert(pg, (set.clone(), set[0]));
        }
        sim.put_pg_config(&sets);
        for osd in 1..=sim.cfg.osds {
            let mut disk = SimDisk::new(64 << 20, seed * 31 + osd);
            let blocks = match sim.cfg.small_disk {
                Some((small, blocks)) if small == osd => blocks,
                _ => 0,
            };
            let options = FormatOptions {
                journal_size: 4 << 20,
                meta_size: blocks * 4096,
                ..FormatOptions::default()
            };
            prepare(&mut disk, &options).expect("prepare");
            sim.dead.insert(osd, disk);
        }
        for osd in 1..=sim.cfg.osds {
            sim.start(osd);
        }
        sim
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {}: {what}", self.seed)
    }

    fn put_pg_config(&mut self, sets: &BTreeMap<u32, (Vec<u64>, u64)>) {
        let items: Vec<String> = sets
            .iter()
            .map(|(pg, (set, primary))| {
                format!(r#""{pg}":{{"osd_set":{set:?},"primary":{primary}}}"#)
            })
            .collect();
        let json = format!(r#"{{"items":{{"1":{{{}}}}}}}"#, items.join(","));
        assert!(self.view.apply("/pg/config", Some(json.as_bytes())));
        self.broadcast_view();
    }

    fn pg_sets(&self) -> BTreeMap<u32, (Vec<u64>, u64)> {
        self.view
            .pg_config
            .iter()
            .map(|(key, item)| (key.1, (item.osd_set.clone(), item.primary)))
            .collect()
    }

    /// What the monitor does when OSDs come and go: a PG whose primary is down gets an up
    /// member as primary (sets stay as they are, as within osd_out_time).
    fn monitor(&mut self) {
        let mut sets = self.pg_sets();
        let mut changed = false;
        for (set, primary) in sets.values_mut() {
            if self.view.is_up(*primary) {
                continue;
            }
            if let Some(&up) = set.iter().find(|&&osd| self.view.is_up(osd)) {
                *primary = up;
                changed = true;
            }
        }
        if changed {
            self.put_pg_config(&sets);
        }
    }

    /// The monitor moves one PG to another set, recording the old set in its history.
    fn move_pg(&mut self) {
        let pg = self.rng.gen_range(1..=PG_COUNT);
        let mut sets = self.pg_sets();
        let (set, _) = sets[&pg].clone();
        let outside: Vec<u64> = (1..=self.cfg.osds).filter(|o| !set.contains(o)).collect();
        if outside.is_empty() {
            return;
        }
        let slot = self.rng.gen_range(0..set.len());
        let mut new_set = set.clone();
        new_set[slot] = outside[self.rng.gen_range(0..outside.len())];
        let primary = *new_set
            .iter()
            .find(|&&osd| self.view.is_up(osd))
            .unwrap_or(&new_set[0]);
        let key = (1, pg);
        let mut history = self.view.pg_history.get(&key).cloned().unwrap_or_default();
        if !history.osd_sets.contains(&set) {
            history.osd_sets.push(set.clone());
        }
        let mut peers: BTreeSet<u64> = history.all_peers.iter().copied().collect();
        peers.extend(set.iter().copied());
        history.all_peers = peers.into_iter().collect();
        let json = serde_json::to_string(&history).unwrap();
        self.view
            .apply(&format!("/pg/history/1/{pg}"), Some(json.as_bytes()));
        tracing::info!(pg, ?new_set, primary, now = self.now, "SIM: move PG");
        sets.insert(pg, (new_set, primary));
        self.faults += 1;
        self.put_pg_config(&sets);
    }

    /// Rebalance ends with the copies outside each PG's set dropped (every OSD is up and
    /// connected at the end of a run, so nothing may be left behind).
    fn check_no_copies_outside_sets(&self) {
        for (pg, (set, _)) in self.pg_sets() {
            for (&num, osd) in &self.osds {
                if set.contains(&num) {
                    continue;
                }
                let min_inode = 1u64 << 48;
                let data_chunks = match self.cfg.parity_chunks {
                    0 => 1,
                    m => (self.cfg.pg_size - m) as u64,
                };
                let left = osd.store().list(
                    pg,
                    PG_COUNT,
                    u64::from(osd.store().block_size()) * data_chunks,
                    min_inode,
                    min_inode | ((1 << 48) - 1),
                );
                if !left.is_empty() {
                    self.fail(format!(
                        "OSD {num} still holds {} objects of PG {pg} (set {set:?}): {left:?}",
                        left.len()
                    ));
                }
            }
        }
    }

    /// Puts `/config/global` and hands the view to every OSD.
    fn set_global(&mut self, json: &str) {
        self.view.apply("/config/global", Some(json.as_bytes()));
        self.broadcast_view();
    }

    /// Runs until every scrub asked for has run (each PG's `next_scrub` is cleared).
    fn finish_scrubs(&mut self) {
        let asked = |sim: &Sim| {
            sim.view
                .pg_history
                .values()
                .filter(|h| h.next_scrub.is_some())
                .count()
        };
        for _ in 0..30_000 {
            if asked(self) == 0 && self.idle() {
                return;
            }
            self.step(false);
        }
        self.fail(format!("{} scrubs asked for never ran", asked(self)));
    }

    /// Makes `osd` the primary of every PG it is a member of.
    fn primaries_to(&mut self, osd: u64) {
        let mut sets = self.pg_sets();
        for (set, primary) in sets.values_mut() {
            if set.contains(&osd) {
                *primary = osd;
            }
        }
        self.put_pg_config(&sets);
    }

    /// Moves every PG's primary to the member at `shift` in its set (final checks).
    /// An OSD out of space cannot be the primary of a PG it lacks data of; the final
    /// checks read through the others.
    fn rotate_primaries(&mut self, shift: usize) {
        let avoid = self.cfg.small_disk.map(|(osd, _)| osd);
        let mut sets = self.pg_sets();
        for (set, primary) in sets.values_mut() {
            let candidates: Vec<u64> = set.iter().copied().filter(|&o| Some(o) != avoid).collect();
            *primary = candidates[shift % candidates.len()];
        }
        self.put_pg_config(&sets);
    }

    fn broadcast_view(&mut self) {
        for (num, osd) in self.osds.iter_mut() {
            if !self.leases.get(num).is_some_and(|l| l.cut_off) {
                osd.on_view(&self.view);
            }
        }
    }

    fn connected(&self, a: u64, b: u64) -> bool {
        !self.partitions.contains(&pair(a, b))
    }

    fn start(&mut self, num: u64) {
        tracing::info!(num, now = self.now, "SIM: start");
        let disk = self.dead.remove(&num).expect("restart a dead OSD");
        let store = Blockstore::open(disk, BlockstoreConfig::default())
            .unwrap_or_else(|e| self.fail(format!("OSD {num} does not open: {e}")));
        // Listings come in pages of one object, so peering pages every time.
        let settings = OsdSettings {
            list_page_objects: 1,
            ..OsdSettings::new(num)
        };
        let mut osd = Osd::new(settings, store);
        osd.set_unix_time(UNIX_BASE_S + self.now / 1000);
        osd.set_clock(self.now);
        osd.set_lease_deadline(Some(self.now + TTL_MS - LEASE_MARGIN_MS));
        let id = self.new_lease_id();
        if let Some(old) = self.leases.insert(
            num,
            Lease {
                id,
                expires_at: self.now + TTL_MS,
                cut_off: false,
            },
        ) {
            // The previous instance's lease lives on until etcd expires it.
            self.zombie_leases.push((old.id, old.expires_at));
        }
        osd.on_connect(CLIENT);
        let state = br#"{"state":"up","addresses":["127.0.0.1"],"port":1}"#;
        self.view.apply(&format!("/osd/state/{num}"), Some(state));
        let others: Vec<u64> = self
            .osds
            .keys()
            .copied()
            .filter(|&o| self.connected(o, num))
            .collect();
        for &other in &others {
            osd.on_connect(other);
            self.osds.get_mut(&other).unwrap().on_connect(num);
        }
        self.client_decoders.insert(num, ReplyDecoder::new());
        self.osds.insert(num, osd);
        self.broadcast_view();
        for other in others {
            self.osds.get_mut(&num).unwrap().on_peer_connected(other);
            self.osds.get_mut(&other).unwrap().on_peer_connected(num);
        }
        self.monitor();
    }

    /// Drops every connection between `a` and `b` (both sides notice).
    fn break_connection(&mut self, a: u64, b: u64) {
        self.links.retain(|link, _| {
            let (from, to) = link.ends();
            pair(from, to) != pair(a, b)
        });
        self.stalled.retain(|link| {
            let (from, to) = link.ends();
            pair(from, to) != pair(a, b)
        });
        for (x, y) in [(a, b), (b, a)] {
            if let Some(osd) = self.osds.get_mut(&x) {
                osd.on_disconnect(y);
                osd.on_peer_down(y);
            }
        }
    }

    fn reconnect(&mut self, a: u64, b: u64) {
        if !self.osds.contains_key(&a) || !self.osds.contains_key(&b) {
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            self.osds.get_mut(&x).unwrap().on_connect(y);
        }
        for (x, y) in [(a, b), (b, a)] {
            self.osds.get_mut(&x).unwrap().on_peer_connected(y);
        }
    }

    /// Power loss of OSD `num`: connections drop, unsynced data is lost; its lease
    /// expires later (the monitor learns of it then).
    fn kill(&mut self, num: u64) {
        self.faults += 1;
        tracing::info!(num, now = self.now, "SIM: kill");
        let osd = self.osds.remove(&num).unwrap();
        self.etcd_backlog.remove(&num);
        let disk = osd.into_store().into_disk();
        let crash_seed = self.rng.gen();
        self.dead.insert(num, disk.crash(crash_seed));
        self.links.retain(|link, _| {
            let (from, to) = link.ends();
            from != num && to != num
        });
        self.stalled.retain(|link| {
            let (from, to) = link.ends();
            from != num && to != num
        });
        self.client_decoders.remove(&num);
        let lost: Vec<u64> = self
            .client_pending
            .iter()
            .filter(|(_, (osd, _))| *osd == num)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.client_outcome_unknown(id);
        }
        for osd in self.osds.values_mut() {
            osd.on_disconnect(num);
            osd.on_peer_down(num);
        }
        // A process crash: connections are refused and peers revoke the dead OSD's
        // lease at once. A silent host loss: the lease expires after its TTL.
        if self.rng.gen_bool(0.5) {
            self.expire_lease(num);
        }
    }

    fn new_lease_id(&mut self) -> u64 {
        self.next_lease += 1;
        self.next_lease
    }

    /// etcd drops the lease of `num`: its `/osd/state` and `/pg/state` keys go.
    fn expire_lease(&mut self, num: u64) {
        if let Some(lease) = self.leases.remove(&num) {
            self.drop_keys_of(lease.id);
        }
        self.view.apply(&format!("/osd/state/{num}"), None);
        self.broadcast_view();
        self.monitor();
    }

    fn drop_keys_of(&mut self, lease: u64) {
        let held: Vec<PgKey> = self
            .key_lease
            .iter()
            .filter(|(_, &id)| id == lease)
            .map(|(key, _)| *key)
            .collect();
        for key in held {
            self.key_lease.remove(&key);
            self.view
                .apply(&format!("/pg/state/{}/{}", key.0, key.1), None);
        }
    }

    fn client_outcome_unknown(&mut self, id: u64) {
        let Some((_, pending)) = self.client_pending.remove(&id) else {
            return;
        };
        match pending {
            Pending::Write { sector, value } => {
                let model = self.model.entry(sector).or_default();
                model.not_acknowledged(value);
                model.busy = false;
            }
            Pending::Delete { object, value } => {
                for sector in Self::sectors_of(object) {
                    let model = self.model.entry(sector).or_default();
                    model.not_acknowledged(value);
                    model.busy = false;
                }
            }
            Pending::Read { sector, .. } => {
                self.model.entry(sector).or_default().reads.remove(&id);
            }
            Pending::Other => {}
        }
    }

    fn sectors_of(object: u64) -> std::ops::Range<u64> {
        object * SECTORS_PER_OBJECT..(object + 1) * SECTORS_PER_OBJECT
    }

    fn primary_of(&self, sector: u64) -> (u64, u64) {
        let object = sector / SECTORS_PER_OBJECT;
        let pg = (object % u64::from(PG_COUNT)) as u32 + 1;
        // An EC stripe holds k chunks: its sectors are spread over all of them.
        let (stripe, spacing) = match self.cfg.parity_chunks {
            0 => (BLOCK, SECTOR as u64),
            m => {
                let stripe = BLOCK * (self.cfg.pg_size - m) as u64;
                (stripe, stripe / SECTORS_PER_OBJECT)
            }
        };
        let offset = object * stripe + (sector % SECTORS_PER_OBJECT) * spacing;
        (self.view.pg_config[&(1, pg)].primary, offset)
    }

    fn send_client(&mut self, osd: u64, body: RequestBody, payload: &[u8]) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        let bytes = encode_request(&Request { id, body }, payload).unwrap();
        self.links
            .entry(Link::Request {
                from: CLIENT,
                to: osd,
            })
            .or_default()
            .push_back(bytes);
        id
    }

    /// A new value for `sector`: allowed for every read of it in flight.
    fn note_value(&mut self, sector: u64, value: u32) {
        let model = self.model.entry(sector).or_default();
        model.inflight = value;
        model.observed_inflight = false;
        let reads: Vec<u64> = self
            .model
            .entry(sector)
            .or_default()
            .reads
            .iter()
            .copied()
            .collect();
        for id in reads {
            if let Some((_, Pending::Read { allowed, .. })) = self.client_pending.get_mut(&id) {
                allowed.insert(value);
            }
        }
    }

    fn client_write(&mut self) {
        let sector = self.rng.gen_range(0..OBJECTS * SECTORS_PER_OBJECT);
        if self.model.get(&sector).is_some_and(|s| s.busy) {
            return;
        }
        let (osd, offset) = self.primary_of(sector);
        if !self.osds.contains_key(&osd) {
            return;
        }
        let value = self.next_value;
        self.next_value += 1;
        let rw = Rw {
            inode: INODE,
            offset,
            len: SECTOR as u32,
            ..Rw::default()
        };
        let id = self.send_client(osd, RequestBody::Write(rw), &pattern(value));
        self.model.entry(sector).or_default().busy = true;
        self.note_value(sector, value);
        self.client_pending
            .insert(id, (osd, Pending::Write { sector, value }));
    }

    fn client_delete(&mut self) {
        let object = self.rng.gen_range(0..OBJECTS);
        if Self::sectors_of(object).any(|s| self.model.get(&s).is_some_and(|m| m.busy)) {
            return;
        }
        let (osd, offset) = self.primary_of(object * SECTORS_PER_OBJECT);
        if !self.osds.contains_key(&osd) {
            return;
        }
        let rw = Rw {
            inode: INODE,
            offset,
            len: 0,
            ..Rw::default()
        };
        let id = self.send_client(osd, RequestBody::Delete(rw), &[]);
        for sector in Self::sectors_of(object) {
            self.model.entry(sector).or_default().busy = true;
            self.note_value(sector, 0);
        }
        self.client_pending
            .insert(id, (osd, Pending::Delete { object, value: 0 }));
    }

    fn client_read(&mut self, sector: u64) -> Option<u64> {
        let (osd, offset) = self.primary_of(sector);
        if !self.osds.contains_key(&osd) {
            return None;
        }
        let rw = Rw {
            inode: INODE,
            offset,
            len: SECTOR as u32,
            ..Rw::default()
        };
        let id = self.send_client(osd, RequestBody::Read(rw), &[]);
        let model = self.model.entry(sector).or_default();
        let mut allowed: BTreeSet<u32> = model.maybe.iter().copied().collect();
        allowed.insert(model.acked);
        if model.busy {
            allowed.insert(model.inflight);
        }
        model.reads.insert(id);
        self.client_pending
            .insert(id, (osd, Pending::Read { sector, allowed }));
        Some(id)
    }

    fn client_reply_bytes(&mut self, from: u64, bytes: &[u8]) {
        let decoder = self.client_decoders.get_mut(&from).unwrap();
        decoder.push(bytes);
        while let Some((reply, payload)) = self
            .client_decoders
            .get_mut(&from)
            .unwrap()
            .next_reply()
            .unwrap()
        {
            let Some((_, pending)) = self.client_pending.remove(&reply.id) else {
                continue;
            };
            match pending {
                Pending::Write { sector, value } => {
                    tracing::info!(
                        sector,
                        value,
                        retval = reply.retval,
                        from,
                        "SIM: write reply"
                    );
                    let model = self.model.entry(sector).or_default();
                    model.busy = false;
                    if reply.retval == SECTOR as i64 {
                        model.acked = value;
                        model.maybe.clear();
                        model.observed_inflight = false;
                        self.acked_writes += 1;
                    } else {
                        model.not_acknowledged(value);
                    }
                }
                Pending::Delete { object, value } => {
                    tracing::info!(object, retval = reply.retval, from, "SIM: delete reply");
                    for sector in Self::sectors_of(object) {
                        let model = self.model.entry(sector).or_default();
                        model.busy = false;
                        if reply.retval >= 0 {
                            model.acked = value;
                            model.maybe.clear();
                            model.observed_inflight = false;
                        } else {
                            model.not_acknowledged(value);
                        }
                    }
                }
                Pending::Other => {
                    self.other_replies
                        .insert(reply.id, (reply, payload.to_vec()));
                }
                Pending::Read { sector, allowed } => {
                    tracing::info!(sector, retval = reply.retval, from, "SIM: read reply");
                    self.model
                        .entry(sector)
                        .or_default()
                        .reads
                        .remove(&reply.id);
                    if reply.retval < 0 {
                        self.read_failures.insert(reply.id, reply.retval);
                        continue;
                    }
                    let ReplyBody::Rw { bitmap_len, .. } = reply.body else {
                        self.fail("read reply without a bitmap length".into());
                    };
                    let data = &payload[bitmap_len as usize..];
                    let Some(found) = value_of(data) else {
                        self.fail(format!("sector {sector} holds garbage"));
                    };
                    if !allowed.contains(&found) {
                        let oid = vitastor_proto::ObjectId {
                            inode: INODE,
                            stripe: sector / SECTORS_PER_OBJECT * BLOCK,
                        };
                        for (num, osd) in &self.osds {
                            eprintln!(
                                "OSD {num} holds the sector's object at version {:#x}",
                                osd.store().object_version(&oid)
                            );
                        }
                        self.fail(format!(
                            "sector {sector} reads {found}, allowed {allowed:?} (acknowledged {}, maybe {:?})",
                            self.model[&sector].acked, self.model[&sector].maybe
                        ));
                    }
                    // A primary out of space serves reads of objects it lacks from the
                    // member that has them, which may show a write whose client got an
                    // error and which is lost if that member fails before the copy (a
                    // known limit): monotonic reads are checked only without a full disk.
                    if self.cfg.small_disk.is_none() {
                        self.model.entry(sector).or_default().observed(found);
                    }
                    self.reads_done.insert(reply.id, found);
                }
            }
        }
    }

    /// Advances the clock by one ms: keepalives, lease expiry, the OSDs' timers.
    fn tick(&mut self) {
        self.now += 1;
        let nums: Vec<u64> = self.osds.keys().copied().collect();
        for num in nums {
            let lease = self.leases.get_mut(&num);
            match lease {
                Some(lease) if !lease.cut_off && self.now.is_multiple_of(KEEPALIVE_MS) => {
                    lease.expires_at = self.now + TTL_MS;
                    let osd = self.osds.get_mut(&num).unwrap();
                    osd.set_lease_deadline(Some(self.now + TTL_MS - LEASE_MARGIN_MS));
                }
                _ => {}
            }
            let osd = self.osds.get_mut(&num).unwrap();
            osd.set_unix_time(UNIX_BASE_S + self.now / 1000);
            osd.set_clock(self.now);
        }
        let expired: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.expires_at <= self.now)
            .map(|(num, _)| *num)
            .collect();
        for num in expired {
            self.expire_lease(num);
            // The OSD re-registers with a new lease once etcd is reachable again.
            if self.osds.contains_key(&num) {
                let id = self.new_lease_id();
                self.leases.insert(
                    num,
                    Lease {
                        id,
                        expires_at: u64::MAX,
                        cut_off: true,
                    },
                );
            }
        }
        let now = self.now;
        let zombies: Vec<u64> = self
            .zombie_leases
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        if !zombies.is_empty() {
            self.zombie_leases.retain(|(_, at)| *at > now);
            for id in zombies {
                self.drop_keys_of(id);
            }
            self.broadcast_view();
            self.monitor();
        }
    }

    /// Reconnects OSD `num` to etcd (a new lease if the old one expired).
    fn etcd_heal(&mut self, num: u64) {
        tracing::info!(num, now = self.now, "SIM: etcd heal");
        if !self.osds.contains_key(&num) {
            return;
        }
        let Some(lease) = self.leases.get_mut(&num) else {
            return;
        };
        if !lease.cut_off {
            return;
        }
        lease.cut_off = false;
        lease.expires_at = self.now + TTL_MS;
        // A lease that expired while cut off was replaced by a new one (expiry u64::MAX
        // marked it); the OSD registers again under it.
        let state = br#"{"state":"up","addresses":["127.0.0.1"],"port":1}"#;
        self.view.apply(&format!("/osd/state/{num}"), Some(state));
        for action in self.etcd_backlog.remove(&num).unwrap_or_default() {
            self.etcd(num, action);
        }
        let osd = self.osds.get_mut(&num).unwrap();
        osd.on_view(&self.view);
        osd.set_lease_deadline(Some(self.now + TTL_MS - LEASE_MARGIN_MS));
        self.broadcast_view();
        self.monitor();
    }

    /// Delivers one message, polls the disks, or lets the client act.
    fn step(&mut self, workload: bool) {
        self.tick();
        let roll = self.rng.gen_range(0..100);
        if roll < 70 {
            let busy: Vec<Link> = self
                .links
                .iter()
                .filter(|(link, queue)| !queue.is_empty() && !self.stalled.contains(link))
                .map(|(link, _)| *link)
                .collect();
            if !busy.is_empty() {
                let link = busy[self.rng.gen_range(0..busy.len())];
                let bytes = self.links.get_mut(&link).unwrap().pop_front().unwrap();
                self.deliver(link, bytes);
            }
        } else if roll < 92 || !workload {
            for osd in self.osds.values_mut() {
                osd.poll_store();
            }
        } else if self.client_pending.len() < 8 {
            match self.rng.gen_range(0..10) {
                0 => self.client_delete(),
                1..=2 => {
                    let sector = self.rng.gen_range(0..OBJECTS * SECTORS_PER_OBJECT);
                    self.client_read(sector);
                }
                _ => self.client_write(),
            }
        }
        self.route_actions();
        self.check_one_primary();
    }

    fn deliver(&mut self, link: Link, bytes: Vec<u8>) {
        match link {
            Link::Request { from, to } => {
                if let Some(osd) = self.osds.get_mut(&to) {
                    osd.on_bytes(from, &bytes);
                }
            }
            Link::Reply { from, to } if to == CLIENT => self.client_reply_bytes(from, &bytes),
            Link::Reply { from, to } => {
                if let Some(osd) = self.osds.get_mut(&to) {
                    osd.on_peer_bytes(from, &bytes);
                }
            }
        }
    }

    fn route_actions(&mut self) {
        for round in 0.. {
            if round > 10_000 {
                self.fail("the OSDs keep producing actions (a livelock)".into());
            }
            let mut actions = Vec::new();
            let mut any = false;
            let nums: Vec<u64> = self.osds.keys().copied().collect();
            for num in nums {
                actions.clear();
                let Some(osd) = self.osds.get_mut(&num) else {
                    continue;
                };
                osd.take_actions(&mut actions);
                for action in actions.drain(..) {
                    any = true;
                    if round > 9_990 {
                        eprintln!("livelock: OSD {num}: {action:?}");
                    }
                    self.route(num, action);
                }
            }
            if !any {
                return;
            }
        }
    }

    fn route(&mut self, num: u64, action: Action) {
        match action {
            Action::Reply { conn, bytes } => self
                .links
                .entry(Link::Reply {
                    from: num,
                    to: conn,
                })
                .or_default()
                .push_back(bytes),
            Action::ToPeer { osd, bytes } => self
                .links
                .entry(Link::Request { from: num, to: osd })
                .or_default()
                .push_back(bytes),
            Action::Close { conn } => self.fail(format!("OSD {num} closed connection {conn}")),
            Action::ClosePeer { osd } => {
                self.fail(format!("OSD {num} dropped peer {osd} for a bad reply"))
            }
            Action::Etcd(etcd) => self.etcd(num, etcd),
        }
    }

    /// The in-memory etcd: claims are create-if-absent (or ours already), state writes
    /// and releases need our lease on the key, history writes compare the value, and
    /// every change is broadcast like a watch event. An OSD cut off from etcd gets
    /// failures.
    fn etcd(&mut self, num: u64, action: EtcdAction) {
        let key_of = |prefix: &str, pg: PgKey| format!("{prefix}{}/{}", pg.0, pg.1);
        let reachable = self.leases.get(&num).is_some_and(|l| !l.cut_off);
        if !reachable {
            self.etcd_backlog.entry(num).or_default().push(action);
            return;
        }
        let lease = self.leases[&num].id;
        let holds = |view: &ClusterView, keys: &BTreeMap<PgKey, u64>, pg: PgKey| {
            view.pg_states.get(&pg).map(|s: &PgState| s.primary) == Some(num)
                && keys.get(&pg) == Some(&lease)
        };
        let changed = match action {
            EtcdAction::ClaimPg { pg, value } => {
                let ok = !self.view.pg_states.contains_key(&pg)
                    || holds(&self.view, &self.key_lease, pg);
                if ok {
                    self.key_lease.insert(pg, lease);
                    self.view
                        .apply(&key_of("/pg/state/", pg), Some(value.as_bytes()));
                }
                self.osds.get_mut(&num).unwrap().on_pg_claimed(pg, ok);
                ok
            }
            EtcdAction::PutPgState { pg, value } => {
                let ok = holds(&self.view, &self.key_lease, pg);
                if ok {
                    self.view
                        .apply(&key_of("/pg/state/", pg), Some(value.as_bytes()));
                }
                ok
            }
            EtcdAction::ReleasePg { pg } => {
                let ok = holds(&self.view, &self.key_lease, pg);
                if ok {
                    self.key_lease.remove(&pg);
                    self.view.apply(&key_of("/pg/state/", pg), None);
                }
                ok
            }
            EtcdAction::PutPgHistory {
                pg,
                id,
                expected,
                value,
            } => {
                let expected: Option<PgHistory> =
                    expected.map(|e| serde_json::from_str(&e).unwrap());
                let ok = holds(&self.view, &self.key_lease, pg)
                    && self.view.pg_history.get(&pg) == expected.as_ref();
                if ok {
                    self.view
                        .apply(&key_of("/pg/history/", pg), Some(value.as_bytes()));
                }
                self.osds
                    .get_mut(&num)
                    .unwrap()
                    .on_history_written(pg, id, ok);
                ok
            }
            EtcdAction::PutPgStats { .. } => false,
        };
        if !changed {
            return;
        }
        self.broadcast_view();
    }

    /// At most one primary serves a PG per epoch, its epoch is recorded in etcd, and at
    /// most one OSD with a valid lease is active for a PG at any time.
    fn check_one_primary(&mut self) {
        let mut active: BTreeMap<PgKey, Vec<u64>> = BTreeMap::new();
        for (&num, osd) in &self.osds {
            for (key, status) in osd.pg_statuses() {
                if status.base != PgBase::Active {
                    continue;
                }
                let epoch = osd.pg_epoch(key).unwrap_or(0);
                // An activation is recorded in etcd before the PG serves: etcd's history
                // is never behind an active epoch.
                let recorded = self.view.pg_history.get(&key).map_or(0, |h| h.epoch);
                if recorded < epoch {
                    self.fail(format!(
                        "PG {key:?} active on OSD {num} in epoch {epoch}, etcd's history is at epoch {recorded}"
                    ));
                }
                let owner = *self.epoch_owner.entry((key, epoch)).or_insert(num);
                if owner != num {
                    self.fail(format!(
                        "PG {key:?} epoch {epoch} active on OSD {owner} and OSD {num}"
                    ));
                }
                if osd.lease_ok() && self.leases.get(&num).is_some_and(|l| !l.cut_off) {
                    active.entry(key).or_default().push(num);
                }
            }
        }
        for (key, osds) in active {
            if osds.len() > 1 {
                self.fail(format!("PG {key:?} active on {osds:?} at once"));
            }
        }
    }

    /// Every PG is active on its primary and has no copies left to make (every run must
    /// end clean).
    /// Every PG's configured primary is active (and done recovering unless `recovering`
    /// is allowed).
    fn all_serving(&self, recovering: bool) -> bool {
        (1..=PG_COUNT).all(|pg| {
            let primary = self.view.pg_config[&(1, pg)].primary;
            self.osds.get(&primary).is_some_and(|osd| {
                osd.pg_statuses().iter().any(|(key, status)| {
                    *key == (1, pg)
                        && status.base == PgBase::Active
                        && (recovering || !status.recovering)
                })
            })
        })
    }

    fn idle(&self) -> bool {
        self.links.values().all(|q| q.is_empty()) && self.client_pending.is_empty()
    }

    /// Runs without new client ops until every PG is active and nothing is in flight.
    fn settle(&mut self, what: &str) {
        self.settle_until(what, false)
    }

    /// Like [`Sim::settle`], but PGs may still have copies to make (a full primary).
    fn settle_until(&mut self, what: &str, recovering: bool) {
        for _ in 0..200_000 {
            self.step(false);
            if self.idle() && self.all_serving(recovering) {
                return;
            }
        }
        let states: Vec<_> = self
            .osds
            .values()
            .map(|o| (o.osd_num(), o.pg_statuses()))
            .collect();
        for osd in self.osds.values() {
            eprintln!("OSD {}: {}", osd.osd_num(), osd.debug_state());
        }
        let busy: Vec<_> = self
            .links
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(l, q)| (*l, q.len()))
            .collect();
        let config: Vec<_> = self
            .view
            .pg_config
            .iter()
            .map(|(pg, c)| (pg.1, c.primary, c.osd_set.clone()))
            .collect();
        self.fail(format!(
            "cluster did not settle ({what}): {states:?}, links {busy:?}, client ops {:?}, config {config:?}",
            self.client_pending
        ));
    }

    /// Runs until nothing is in flight (PGs may stay inactive).
    fn drain(&mut self) {
        for _ in 0..50_000 {
            self.step(false);
            if self.idle() {
                return;
            }
        }
        self.fail("messages still in flight".into());
    }

    /// Reads every sector through its primary and checks it against the model.
    /// Reads every sector (the oracle checks each answer). -EPIPE (the PG peers again,
    /// e.g. a member turned out to be full while recovering) is retried like a client
    /// does, a few times; any other error fails the run.
    fn verify(&mut self, what: &str) {
        self.verify_until(what, false)
    }

    /// Like [`Sim::verify`]; `recovering`: PGs may still have copies to make.
    fn verify_until(&mut self, what: &str, recovering: bool) {
        let mut sectors: Vec<u64> = (0..OBJECTS * SECTORS_PER_OBJECT).collect();
        for _attempt in 0..5 {
            let ids: Vec<(u64, Option<u64>)> = sectors
                .iter()
                .map(|&sector| (sector, self.client_read(sector)))
                .collect();
            self.settle_until(what, recovering);
            sectors.clear();
            for (sector, id) in ids {
                let Some(id) = id else {
                    self.fail(format!("no primary to read sector {sector} ({what})"));
                };
                match self.read_failures.get(&id) {
                    Some(-32) => sectors.push(sector),
                    Some(code) => {
                        self.fail(format!("read of sector {sector} failed: {code} ({what})"))
                    }
                    None => assert!(self.reads_done.contains_key(&id), "seed {}", self.seed),
                }
            }
            if sectors.is_empty() {
                return;
            }
        }
        self.fail(format!(
            "reads of {sectors:?} kept failing with -EPIPE ({what})"
        ));
    }

    /// One random fault (or the end of one).
    fn random_fault(&mut self) {
        let osds = self.cfg.osds;
        if self.rng.gen_range(0..8) == 0 {
            // Not a fault: an operator asks for a scrub of one PG (it runs between the
            // faults, holding objects and rewriting any copy it finds damaged).
            let pg = self.rng.gen_range(1..=PG_COUNT);
            tracing::info!(pg, now = self.now, "SIM: scrub requested");
            let mut history = self
                .view
                .pg_history
                .get(&(1, pg))
                .cloned()
                .unwrap_or_default();
            history.next_scrub = Some(UNIX_BASE_S + self.now / 1000);
            let json = serde_json::to_string(&history).unwrap();
            self.view
                .apply(&format!("/pg/history/1/{pg}"), Some(json.as_bytes()));
            self.broadcast_view();
            return;
        }
        match self.rng.gen_range(0..10) {
            0..=3 => {
                // Crash one; with luck a second one soon after (the classic sequence).
                if self.dead.len() + 1 < osds as usize {
                    let alive: Vec<u64> = self.osds.keys().copied().collect();
                    let victim = alive[self.rng.gen_range(0..alive.len())];
                    self.kill(victim);
                }
            }
            4..=5 => {
                if let Some(&back) = self.dead.keys().next() {
                    self.start(back);
                }
            }
            6 => {
                let a = self.rng.gen_range(1..=osds);
                let b = self.rng.gen_range(1..=osds);
                if a != b && self.connected(a, b) {
                    self.faults += 1;
                    tracing::info!(a, b, now = self.now, "SIM: partition");
                    // One direction stalls first; the connection then breaks.
                    self.stalled.insert(Link::Request { from: a, to: b });
                    self.stalled.insert(Link::Reply { from: b, to: a });
                    for _ in 0..self.rng.gen_range(1..200) {
                        self.step(true);
                    }
                    self.partitions.insert(pair(a, b));
                    self.break_connection(a, b);
                }
            }
            7 => {
                let healed: Vec<(u64, u64)> = self.partitions.iter().copied().collect();
                for (a, b) in healed {
                    tracing::info!(a, b, now = self.now, "SIM: heal partition");
                    self.partitions.remove(&(a, b));
                    self.reconnect(a, b);
                }
            }
            8 => {
                let alive: Vec<u64> = self.osds.keys().copied().collect();
                let victim = alive[self.rng.gen_range(0..alive.len())];
                if let Some(lease) = self.leases.get_mut(&victim) {
                    self.faults += 1;
                    tracing::info!(victim, now = self.now, "SIM: cut off from etcd");
                    lease.cut_off = true;
                }
            }
            _ => {
                let cut: Vec<u64> = self
                    .leases
                    .iter()
                    .filter(|(_, l)| l.cut_off)
                    .map(|(n, _)| *n)
                    .collect();
                for num in cut {
                    self.etcd_heal(num);
                }
                if self.rng.gen_bool(0.6) {
                    self.move_pg();
                }
            }
        }
    }

    fn heal_everything(&mut self) {
        let healed: Vec<(u64, u64)> = self.partitions.iter().copied().collect();
        for (a, b) in healed {
            self.partitions.remove(&(a, b));
            self.reconnect(a, b);
        }
        self.stalled.clear();
        let cut: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.cut_off)
            .map(|(n, _)| *n)
            .collect();
        for num in cut {
            self.etcd_heal(num);
        }
        let dead: Vec<u64> = self.dead.keys().copied().collect();
        for osd in dead {
            self.start(osd);
        }
    }
}

fn run_seed(seed: u64, steps: u64) -> (u64, u64) {
    let mut cfg = match seed % 3 {
        0 => Config {
            osds: 3,
            pg_size: 3,
            pg_minsize: 2,
            small_disk: None,
            parity_chunks: 0,
        },
        1 => Config {
            osds: 3,
            pg_size: 2,
            pg_minsize: 1,
            small_disk: None,
            parity_chunks: 0,
        },
        _ => Config {
            osds: 4,
            pg_size: 2,
            pg_minsize: 1,
            small_disk: None,
            parity_chunks: 0,
        },
    };
    if seed % 5 == 4 {
        // One OSD runs out of space: fewer data blocks than objects it may hold.
        cfg.small_disk = Some((1 + seed % cfg.osds, 5));
    }
    run_config(seed, steps, cfg)
}

/// The random workload and faults on one configuration, then every check.
fn run_config(seed: u64, steps: u64, cfg: Config) -> (u64, u64) {
    let mut sim = Sim::new(seed, cfg);
    sim.settle("start");
    for _ in 0..steps {
        sim.step(true);
        if sim.rng.gen_range(0..1000) < 4 {
            sim.random_fault();
        }
    }
    sim.heal_everything();
    if sim.cfg.small_disk.is_some() {
        sim.rotate_primaries(0);
    }
    sim.settle("after the workload");
    if sim.cfg.parity_chunks == 0 {
        sim.finish_scrubs(); // EC PGs are not scrubbed yet
    }
    sim.verify("primaries as configured");
    sim.check_no_copies_outside_sets();
    let size = sim.cfg.pg_size;
    for shift in 1..size {
        sim.rotate_primaries(shift);
        sim.settle("after moving primaries");
        sim.verify("primaries moved");
    }
    if let Some((full, _)) = sim.cfg.small_disk {
        // An OSD out of space lacks objects it cannot store: as a primary it still
        // activates and serves every read (from the members that have the data).
        sim.primaries_to(full);
        sim.settle_until("a full OSD as the primary", true);
        sim.verify_until("reads through a full primary", true);
    }
    (sim.acked_writes, sim.faults)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

#[test]
fn acknowledged_writes_survive_random_faults() {
    let seeds = env_u64("CLUSTER_SIM_SEEDS").unwrap_or(200);
    let steps = env_u64("CLUSTER_SIM_STEPS").unwrap_or(3000);
    let only = env_u64("CLUSTER_SIM_SEED");
    let first = env_u64("CLUSTER_SIM_FIRST").unwrap_or(0);
    let (mut acked, mut faults) = (0, 0);
    for seed in only.map_or(first..first + seeds, |s| s..s + 1) {
        let (a, f) = run_seed(seed, steps);
        acked += a;
        faults += f;
    }
    eprintln!("cluster simulation: {acked} acknowledged writes, {faults} faults");
    assert!(acked > 0 && faults > 0, "the workload did nothing");
}

/// A cluster of two OSDs, every PG on both (pg_size 2, pg_minsize 1), settled.
fn two_osds(seed: u64) -> Sim {
    let mut sim = Sim::new(
        seed,
        Config {
            osds: 2,
            pg_size: 2,
            pg_minsize: 1,
            small_disk: None,
            parity_chunks: 0,
        },
    );
    sim.settle("start");
    sim
}

/// Writes `value` to every sector and checks every write was acknowledged.
fn write_all(sim: &mut Sim) {
    for sector in 0..OBJECTS * SECTORS_PER_OBJECT {
        let (osd, offset) = sim.primary_of(sector);
        let value = sim.next_value;
        sim.next_value += 1;
        let rw = Rw {
            inode: INODE,
            offset,
            len: SECTOR as u32,
            ..Rw::default()
        };
        let id = sim.send_client(osd, RequestBody::Write(rw), &pattern(value));
        sim.model.entry(sector).or_default().busy = true;
        sim.client_pending
            .insert(id, (osd, Pending::Write { sector, value }));
    }
    sim.settle("writing");
    for sector in 0..OBJECTS * SECTORS_PER_OBJECT {
        let model = &sim.model[&sector];
        assert!(model.maybe.is_empty(), "every write is acknowledged");
    }
}

fn pg_bases(sim: &Sim, osd: u64) -> Vec<PgBase> {
    sim.osds[&osd]
        .pg_statuses()
        .into_iter()
        .map(|(_, status)| status.base)
        .collect()
}

/// Defect 1 of the peering issue: OSD 2 misses writes while OSD 1 serves alone; then OSD 1
/// dies and OSD 2 comes back alone. It must not serve its stale copy (the PGs stay
/// incomplete, reads fail with a retryable error) and once OSD 1 is back the newest data
/// is read.
#[test]
fn a_stale_replica_is_never_promoted() {
    for seed in 0..10 {
        let mut sim = two_osds(seed);
        write_all(&mut sim);
        sim.kill(2);
        sim.settle("OSD 2 down");
        write_all(&mut sim);
        sim.kill(1);
        sim.start(2);
        sim.drain();
        for _ in 0..3000 {
            sim.step(false);
        }
        assert!(
            pg_bases(&sim, 2).iter().all(|&b| b == PgBase::Incomplete),
            "seed {seed}: OSD 2 alone must not activate: {:?}",
            sim.osds[&2].pg_statuses()
        );
        let id = sim.client_read(0).expect("OSD 2 is the primary");
        sim.drain();
        assert_eq!(sim.read_failures.get(&id), Some(&-32), "seed {seed}: EPIPE");
        sim.start(1);
        sim.settle("OSD 1 back");
        sim.verify("after both are back");
        for shift in 0..2 {
            sim.rotate_primaries(shift);
            sim.settle("moving primaries");
            sim.verify("every replica");
        }
    }
}

/// Defect 3: a delete while a member is down must not be undone by that member, neither
/// when it comes back alone (it waits) nor when both are back.
#[test]
fn deletes_stay_deleted_when_a_member_missed_them() {
    for seed in 0..10 {
        let mut sim = two_osds(seed);
        write_all(&mut sim);
        sim.kill(2);
        sim.settle("OSD 2 down");
        for object in 0..OBJECTS {
            let (osd, offset) = sim.primary_of(object * SECTORS_PER_OBJECT);
            let rw = Rw {
                inode: INODE,
                offset,
                ..Rw::default()
            };
            let id = sim.send_client(osd, RequestBody::Delete(rw), &[]);
            sim.client_pending
                .insert(id, (osd, Pending::Delete { object, value: 0 }));
        }
        sim.settle("deleting");
        if seed % 2 == 0 {
            // Flushed deletes must leave a trace too.
            sim.osds.get_mut(&1).unwrap().flush_store();
        }
        sim.kill(1);
        sim.start(2);
        sim.drain();
        for _ in 0..3000 {
            sim.step(false);
        }
        assert!(pg_bases(&sim, 2).iter().all(|&b| b == PgBase::Incomplete));
        sim.start(1);
        sim.settle("both back");
        sim.verify("after the delete");
        for shift in 0..2 {
            sim.rotate_primaries(shift);
            sim.settle("moving primaries");
            sim.verify("every replica");
        }
        for sector in 0..OBJECTS * SECTORS_PER_OBJECT {
            assert_eq!(sim.model[&sector].acked, 0, "seed {seed}: sector {sector}");
        }
    }
}

/// Read repair (issue 12, item 7): bits flipped at rest in every object of one member.
/// Whichever member is primary, every read returns the acknowledged data (the damaged
/// copy is served from the other member and rewritten), and afterwards the repaired
/// member alone serves everything.
#[test]
fn damaged_copies_are_served_from_the_other_member_and_rewritten() {
    use vitastor_proto::ObjectId;
    for seed in 0..6 {
        let mut sim = two_osds(seed);
        write_all(&mut sim);
        let victim = 1 + seed % 2;
        let other = 3 - victim;
        sim.osds.get_mut(&victim).unwrap().flush_store();
        let oids: Vec<ObjectId> = (0..OBJECTS)
            .map(|o| ObjectId {
                inode: INODE,
                stripe: o * BLOCK,
            })
            .collect();
        let offsets: Vec<u64> = oids
            .iter()
            .filter_map(|oid| sim.osds[&victim].store().data_offset_of(oid))
            .collect();
        assert_eq!(
            offsets.len(),
            oids.len(),
            "seed {seed}: every object flushed"
        );
        sim.kill(victim);
        let disk = sim.dead.get_mut(&victim).unwrap();
        for offset in offsets {
            disk.flip_bit(offset + 100, 3);
        }
        sim.start(victim);
        sim.settle("the damaged member is back");
        for shift in 0..2 {
            sim.rotate_primaries(shift);
            sim.settle("moving primaries");
            sim.verify("reads with one damaged member");
        }
        // Repairs of the last reads may still be on their way to the disk.
        for _ in 0..10_000 {
            if sim.osds[&victim].store().damaged_objects().is_empty() {
                break;
            }
            sim.step(false);
        }
        let left = sim.osds[&victim].store().damaged_objects().clone();
        assert!(left.is_empty(), "seed {seed}: still damaged: {left:?}");
        sim.kill(other);
        sim.settle("only the repaired member");
        sim.verify("the repaired member alone");
    }
}

/// Scrub (issue 12, item 7): with `next_scrub` set in every PG's history, the primaries
/// compare every object's copies without any client read, repair the copies damaged at
/// rest on one member (whether it is the primary or not), and clear `next_scrub`; the
/// repaired member then serves everything alone.
#[test]
fn scrub_finds_and_repairs_damaged_copies_without_reads() {
    use vitastor_proto::ObjectId;
    for seed in 0..4 {
        let mut sim = two_osds(seed);
        write_all(&mut sim);
        let victim = 1 + seed % 2;
        let other = 3 - victim;
        sim.osds.get_mut(&victim).unwrap().flush_store();
        let offsets: Vec<u64> = (0..OBJECTS)
            .filter_map(|o| {
                let oid = ObjectId {
                    inode: INODE,
                    stripe: o * BLOCK,
                };
                sim.osds[&victim].store().data_offset_of(&oid)
            })
            .collect();
        assert_eq!(
            offsets.len() as u64,
            OBJECTS,
            "seed {seed}: every object flushed"
        );
        sim.kill(victim);
        let disk = sim.dead.get_mut(&victim).unwrap();
        for offset in offsets {
            disk.flip_bit(offset + 5000, 1);
        }
        sim.start(victim);
        sim.settle("the damaged member is back");
        for pg in 1..=PG_COUNT {
            let mut history = sim.view.pg_history[&(1, pg)].clone();
            history.next_scrub = Some(UNIX_BASE_S);
            let json = serde_json::to_string(&history).unwrap();
            sim.view
                .apply(&format!("/pg/history/1/{pg}"), Some(json.as_bytes()));
        }
        sim.broadcast_view();
        let scrubbed = |sim: &Sim| {
            sim.osds[&victim].store().damaged_objects().is_empty()
                && (1..=PG_COUNT).all(|pg| sim.view.pg_history[&(1, pg)].next_scrub.is_none())
        };
        for _ in 0..20_000 {
            if scrubbed(&sim) && sim.idle() {
                break;
            }
            sim.step(false);
        }
        // Nothing read the damaged sectors, yet the blockstore saw them through the scrub.
        assert!(
            scrubbed(&sim),
            "seed {seed}: not scrubbed: damaged {:?}, histories {:?}",
            sim.osds[&victim].store().damaged_objects(),
            sim.view.pg_history
        );
        sim.settle("scrubbed");
        sim.kill(other);
        sim.settle("only the repaired member");
        sim.verify("the repaired member alone");
    }
}

/// DESCRIBE (for `vitastor-cli describe`): with recovery paused, the primaries report the
/// objects a returning member lacks as outdated on that member; once recovery ran, none.
#[test]
fn describe_reports_objects_a_member_lacks_until_they_are_copied() {
    use vitastor_proto::wire::describe::{decode_describe_items, LOC_OUTDATED};
    use vitastor_proto::wire::request::Describe;
    let describe = |sim: &mut Sim| {
        let mut items = Vec::new();
        let primaries: BTreeSet<u64> = sim.pg_sets().values().map(|(_, p)| *p).collect();
        for osd in primaries {
            let id = sim.send_client(osd, RequestBody::Describe(Describe::default()), &[]);
            sim.client_pending.insert(id, (osd, Pending::Other));
            sim.drain();
            let (reply, payload) = sim.other_replies.remove(&id).expect("answered");
            let found = decode_describe_items(&payload).unwrap();
            assert_eq!(reply.retval, found.len() as i64);
            items.extend(found);
        }
        items
    };
    let mut sim = two_osds(7);
    write_all(&mut sim);
    sim.set_global(r#"{"no_recovery":true}"#);
    sim.kill(2);
    sim.settle("OSD 2 down");
    write_all(&mut sim);
    sim.start(2);
    for _ in 0..3000 {
        sim.step(false);
    }
    let items = describe(&mut sim);
    assert!(
        !items.is_empty(),
        "objects written while OSD 2 was down are degraded"
    );
    for item in &items {
        assert_eq!((item.osd_num, item.loc_bad), (2, LOC_OUTDATED), "{item:?}");
    }
    sim.set_global("{}");
    sim.settle("recovered");
    assert_eq!(describe(&mut sim), vec![]);
}

/// Sends `body` to `osd` as the client, runs the cluster until it is answered, and returns
/// the answer.
fn ask(
    sim: &mut Sim,
    osd: u64,
    body: RequestBody,
    payload: &[u8],
) -> (vitastor_proto::wire::Reply, Vec<u8>) {
    let id = sim.send_client(osd, body, payload);
    sim.client_pending.insert(id, (osd, Pending::Other));
    sim.drain();
    sim.other_replies.remove(&id).expect("answered")
}

/// `vitastor-cli fix` (issue 12): one object's copies differ at the same version (made by
/// purging one member's copy and writing other data there at the old version, as a bug
/// or undetected rot would). Scrubbing the object finds it inconsistent (two copies, no
/// majority) and leaves it alone; the fix's steps (condemn the bad member's copy, scrub
/// the object again) rewrite it from the good copy, whichever member is bad and whichever
/// is primary; meanwhile reads return the acknowledged data.
#[test]
fn fix_settles_an_inconsistent_object_from_the_copy_the_operator_trusts() {
    use vitastor_proto::wire::describe::{decode_describe_items, LOC_INCONSISTENT};
    use vitastor_proto::wire::request::{Describe, SecDelete, SecRw};
    use vitastor_proto::ObjectId;
    for seed in 0..4 {
        let mut sim = two_osds(seed);
        write_all(&mut sim);
        let object = seed % OBJECTS;
        let oid = ObjectId {
            inode: INODE,
            stripe: object * BLOCK,
        };
        let (primary, offset) = sim.primary_of(object * SECTORS_PER_OBJECT);
        let bad = if seed % 2 == 0 { primary } else { 3 - primary };
        let good = 3 - bad;
        let pg = (object % u64::from(PG_COUNT)) as u32 + 1;
        let version = sim.osds[&bad].store().object_version(&oid);
        assert_ne!(version, 0, "seed {seed}: written");
        // The bad member's copy becomes other data at the same version.
        for (version, purge) in [(version + 1, false), (version + 1, true)] {
            let del = SecDelete {
                oid,
                version,
                purge,
                pg,
                epoch: 0,
            };
            let (reply, _) = ask(&mut sim, bad, RequestBody::SecDelete(del), &[]);
            assert_eq!(reply.retval, 0, "seed {seed}: delete/purge {purge}");
        }
        assert_eq!(
            sim.osds[&bad].store().object_version(&oid),
            0,
            "seed {seed}: purged"
        );
        let rw = SecRw {
            oid,
            version,
            offset: 0,
            len: SECTOR as u32,
            pg,
            ..SecRw::default()
        };
        let (reply, _) = ask(
            &mut sim,
            bad,
            RequestBody::SecWriteStable(rw),
            &[0xee; SECTOR],
        );
        assert!(reply.retval >= 0, "seed {seed}: the odd copy is written");
        let scrub = |sim: &mut Sim| {
            let rw = Rw {
                inode: INODE,
                offset,
                ..Rw::default()
            };
            ask(sim, primary, RequestBody::Scrub(rw), &[]).0.retval
        };
        let inconsistent_on = |sim: &mut Sim| {
            let (_, payload) = ask(
                sim,
                primary,
                RequestBody::Describe(Describe::default()),
                &[],
            );
            let items = decode_describe_items(&payload).unwrap();
            let mut osds: Vec<u64> = items
                .iter()
                .filter(|i| i.loc_bad & LOC_INCONSISTENT != 0)
                .map(|i| i.osd_num)
                .collect();
            osds.sort();
            osds
        };
        assert_eq!(scrub(&mut sim), 0, "seed {seed}: scrubbed");
        assert_eq!(
            inconsistent_on(&mut sim),
            vec![1, 2],
            "seed {seed}: no majority"
        );
        // The fix: the operator names the bad member.
        let (reply, _) = ask(&mut sim, bad, RequestBody::CondemnCopy(oid), &[]);
        assert_eq!(reply.retval, 0, "seed {seed}: condemned");
        sim.verify("a condemned copy is never read");
        assert_eq!(scrub(&mut sim), 0, "seed {seed}: scrubbed again");
        // The repair is queued behind the scrub: it may still be on its way to the disks.
        for _ in 0..10_000 {
            if sim.osds[&bad].store().damaged_objects().is_empty() {
                break;
            }
            sim.step(false);
        }
        assert!(
            sim.osds[&bad].store().damaged_objects().is_empty(),
            "seed {seed}: the condemned copy was rewritten"
        );
        assert_eq!(inconsistent_on(&mut sim), Vec::<u64>::new(), "seed {seed}");
        sim.verify("after the fix");
        sim.kill(good);
        sim.settle("only the fixed member");
        sim.verify("the fixed member alone");
    }
}

/// Recovery (issue 12): when the chosen source's copy fails its checksums, the copy is
/// made from another member that holds the same version instead of repeering (which would
/// choose the same source again, for ever). Three members; writes while OSD 3 is down;
/// then every object of OSD 1 is damaged at rest, and OSDs 1 and 3 come back together.
/// Every PG becomes clean (OSD 3 copied from OSD 2 where OSD 1 was chosen first), OSD 1's
/// copies are repaired, and OSDs 1 and 3 serve everything without OSD 2.
#[test]
fn recovery_copies_from_another_holder_when_the_source_copy_is_damaged() {
    use vitastor_proto::ObjectId;
    for seed in 0..4 {
        let mut sim = Sim::new(
            seed,
            Config {
                osds: 3,
                pg_size: 3,
                pg_minsize: 1,
                small_disk: None,
                parity_chunks: 0,
            },
        );
        sim.settle("start");
        sim.kill(3);
        sim.settle("OSD 3 down");
        write_all(&mut sim);
        sim.osds.get_mut(&1).unwrap().flush_store();
        let offsets: Vec<u64> = (0..OBJECTS)
            .filter_map(|o| {
                let oid = ObjectId {
                    inode: INODE,
                    stripe: o * BLOCK,
                };
                sim.osds[&1].store().data_offset_of(&oid)
            })
            .collect();
        assert_eq!(offsets.len() as u64, OBJECTS, "seed {seed}: flushed");
        sim.kill(1);
        let disk = sim.dead.get_mut(&1).unwrap();
        for offset in offsets {
            disk.flip_bit(offset + 300, 2);
        }
        sim.start(1);
        sim.start(3);
        sim.settle("OSDs 1 and 3 back");
        sim.verify("with OSD 1 damaged");
        for _ in 0..10_000 {
            if sim.osds[&1].store().damaged_objects().is_empty() {
                break;
            }
            sim.step(false);
        }
        // Whatever is still marked was never read; a scrub would find it. Read it now.
        sim.kill(2);
        sim.settle("without OSD 2");
        sim.verify("OSDs 1 and 3 alone");
    }
}

/// EC 2+1 (issue 13): every sector written through the primaries reads back; then a
/// primary dies in the middle of a round of writes (its chunk writes reach some OSDs and
/// not others) and comes back: peering rolls back the stripes that did not reach k
/// chunks and commits those that did, and every sector reads an allowed value (the
/// acknowledged one, or an unacknowledged newer one); with a member down the PGs serve
/// degraded; once it is back its stale chunks are rebuilt from the others, so the PGs
/// serve without another member afterwards.
#[test]
fn ec_pool_serves_and_settles_half_written_stripes() {
    for seed in 0..6 {
        let mut sim = Sim::new(
            seed,
            Config {
                osds: 3,
                pg_size: 3,
                pg_minsize: 2,
                small_disk: None,
                parity_chunks: 1,
            },
        );
        sim.settle("start");
        write_all(&mut sim);
        sim.verify("EC after the first writes");
        // Chunks, not copies: each OSD holds its slot's chunk of the stripes (chunk
        // number in the stripe's low bits), 2 data + 1 parity of every stripe in all.
        let mut chunks = BTreeSet::new();
        for osd in sim.osds.values() {
            for v in osd.store().list(0, 0, 0, 0, u64::MAX) {
                assert!(v.stable, "seed {seed}: every version stabilized: {v:?}");
                chunks.insert((v.oid.stripe & !0xfff, v.oid.stripe & 0xfff));
            }
        }
        assert_eq!(chunks.len() as u64, OBJECTS * 3, "seed {seed}: {chunks:?}");
        // A round of writes; the primary of PG 1 dies while they are on their way.
        let victim = sim.view.pg_config[&(1, 1)].primary;
        for sector in 0..OBJECTS * SECTORS_PER_OBJECT {
            let (osd, offset) = sim.primary_of(sector);
            let value = sim.next_value;
            sim.next_value += 1;
            let rw = Rw {
                inode: INODE,
                offset,
                len: SECTOR as u32,
                ..Rw::default()
            };
            let id = sim.send_client(osd, RequestBody::Write(rw), &pattern(value));
            sim.note_value(sector, value);
            sim.client_pending
                .insert(id, (osd, Pending::Write { sector, value }));
        }
        for _ in 0..(seed * 7 % 40) {
            sim.step(false);
        }
        sim.kill(victim);
        sim.drain();
        sim.start(victim);
        sim.settle("the primary is back");
        sim.verify("after a primary died mid-write");
        write_all(&mut sim);
        sim.verify("EC after more writes");
        // One member down: its PGs serve degraded (reads rebuild its data chunks, writes
        // skip it); back, its stale chunks are rebuilt from the others.
        let down = 1 + seed % 3;
        sim.kill(down);
        sim.settle("an EC member down");
        sim.verify("EC degraded");
        write_all(&mut sim);
        sim.verify("EC degraded, after writes");
        sim.start(down);
        sim.settle("the EC member is back and rebuilt");
        sim.verify("EC with the member back");
        write_all(&mut sim);
        sim.verify("EC with the member back, after writes");
        // Its chunks were rebuilt: any other member can go now.
        let other = 1 + (down % 3);
        sim.kill(other);
        sim.settle("another EC member down");
        sim.verify("EC served by the rebuilt member and one more");
        sim.start(other);
        sim.settle("every EC member back");
        // Bits flipped at rest in every chunk of one member: reads that meet a bad data
        // chunk rebuild its range from the other two instead.
        let rotten = 1 + (seed + 1) % 3;
        sim.osds.get_mut(&rotten).unwrap().flush_store();
        let offsets: Vec<u64> = sim.osds[&rotten]
            .store()
            .list(0, 0, 0, 0, u64::MAX)
            .into_iter()
            .filter_map(|v| sim.osds[&rotten].store().data_offset_of(&v.oid))
            .collect();
        assert!(!offsets.is_empty(), "seed {seed}: flushed chunks");
        sim.kill(rotten);
        let disk = sim.dead.get_mut(&rotten).unwrap();
        for offset in offsets {
            for sector in 0..(BLOCK / SECTOR as u64) {
                disk.flip_bit(offset + sector * SECTOR as u64 + 7, 2);
            }
        }
        sim.start(rotten);
        sim.settle("a member with rotten chunks back");
        sim.verify("EC reads around rotten chunks");
        write_all(&mut sim);
        sim.verify("EC after writes over rotten chunks");
    }
}

/// The random workload and faults of [`acknowledged_writes_survive_random_faults`] on EC
/// 2+1 pools (3 or 4 OSDs): crashes, partitions, etcd cut-offs, set changes.
/// `CLUSTER_SIM_EC_SEEDS` (default 12) seeds.
#[test]
fn ec_acknowledged_writes_survive_random_faults() {
    let seeds = env_u64("CLUSTER_SIM_EC_SEEDS").unwrap_or(12);
    let steps = env_u64("CLUSTER_SIM_STEPS").unwrap_or(3000);
    let only = env_u64("CLUSTER_SIM_SEED");
    let (mut acked, mut faults) = (0, 0);
    for seed in only.map_or(0..seeds, |s| s..s + 1) {
        let cfg = Config {
            osds: 3 + seed % 2,
            pg_size: 3,
            pg_minsize: 2,
            small_disk: None,
            parity_chunks: 1,
        };
        let (a, f) = run_config(seed, steps, cfg);
        acked += a;
        faults += f;
    }
    eprintln!("EC cluster simulation: {acked} acknowledged writes, {faults} faults");
    assert!(acked > 0 && faults > 0, "the workload did nothing");
}
