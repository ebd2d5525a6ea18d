//! Deterministic cluster simulation: three OSDs (the real daemon logic and blockstore) on
//! simulated disks, a seeded in-memory network that delivers each connection's bytes in
//! order but interleaves connections at random, an in-memory etcd (PG claims, history, the
//! watch), and a client writing 4 KiB sectors. OSDs are killed at random moments (their
//! disk keeps only what was fsynced, unsynced writes are lost or torn) and restarted.
//!
//! Oracle, per sector: a read returns the last acknowledged write, or a write whose outcome
//! the client never learned (error or lost connection) issued after it. At the end every
//! PG's primary is moved to each other member in turn and everything is read again, so
//! every replica is checked.
//!
//! `CLUSTER_SIM_SEEDS=n` runs more seeds, `CLUSTER_SIM_SEED=s` replays one.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use vitastor_osd::blockstore::prepare::prepare;
use vitastor_osd::blockstore::sim::SimDisk;
use vitastor_osd::blockstore::{Blockstore, BlockstoreConfig, FormatOptions};
use vitastor_osd::cluster::{ClusterView, PgKey};
use vitastor_osd::daemon::{Action, EtcdAction, Osd, OsdSettings, PgBase};
use vitastor_proto::wire::request::Rw;
use vitastor_proto::wire::{encode_request, ReplyBody, ReplyDecoder, Request, RequestBody};

const OSDS: u64 = 3;
const BLOCK: u64 = 128 << 10;
const SECTOR: usize = 4096;
const OBJECTS: u64 = 8;
const SECTORS_PER_OBJECT: u64 = 4;
const CLIENT: u64 = 1000;
const INODE: u64 = 1 << 48 | 1;
const PG_COUNT: u32 = 4;

/// Which way bytes go on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Link {
    /// Requests from OSD `from` (or the client) to OSD `to`.
    Request { from: u64, to: u64 },
    /// Replies from OSD `from` to `to` (an OSD or the client).
    Reply { from: u64, to: u64 },
}

#[derive(Debug, Clone)]
struct ClientWrite {
    sector: u64,
    value: u32,
}

#[derive(Default)]
struct SectorModel {
    acked: Option<u32>,
    /// Writes issued after the last acknowledged one whose outcome is unknown.
    maybe: Vec<u32>,
    busy: bool,
}

struct Sim {
    rng: SmallRng,
    seed: u64,
    osds: BTreeMap<u64, Osd<SimDisk>>,
    dead: BTreeMap<u64, SimDisk>,
    view: ClusterView,
    links: BTreeMap<Link, VecDeque<Vec<u8>>>,
    client_decoders: BTreeMap<u64, ReplyDecoder>,
    client_pending: BTreeMap<u64, (u64, Option<ClientWrite>)>,
    reads: BTreeMap<u64, Vec<u8>>,
    read_errors: BTreeMap<u64, i64>,
    next_request: u64,
    model: BTreeMap<u64, SectorModel>,
    next_value: u32,
    acked_writes: u64,
    kills: u64,
}

fn pattern(value: u32) -> Vec<u8> {
    let mut data = vec![0u8; SECTOR];
    for (i, chunk) in data.chunks_mut(4).enumerate() {
        chunk.copy_from_slice(&(value ^ i as u32).to_le_bytes());
    }
    data
}

fn value_of(data: &[u8]) -> Option<u32> {
    let value = u32::from_le_bytes(data[..4].try_into().unwrap());
    (data == pattern(value).as_slice()).then_some(value)
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut view = ClusterView::default();
        let pools = format!(
            r#"{{"1":{{"name":"p","scheme":"replicated","pg_size":3,"pg_minsize":2,"pg_count":{PG_COUNT}}}}}"#
        );
        assert!(view.apply("/config/pools", Some(pools.as_bytes())));
        let mut sim = Sim {
            rng: SmallRng::seed_from_u64(seed),
            seed,
            osds: BTreeMap::new(),
            dead: BTreeMap::new(),
            view,
            links: BTreeMap::new(),
            client_decoders: BTreeMap::new(),
            client_pending: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_errors: BTreeMap::new(),
            next_request: 1,
            model: BTreeMap::new(),
            next_value: 1,
            acked_writes: 0,
            kills: 0,
        };
        sim.set_primaries(0);
        for osd in 1..=OSDS {
            let mut disk = SimDisk::new(64 << 20, seed * 31 + osd);
            let options = FormatOptions {
                journal_size: 4 << 20,
                ..FormatOptions::default()
            };
            prepare(&mut disk, &options).expect("prepare");
            sim.dead.insert(osd, disk);
        }
        for osd in 1..=OSDS {
            sim.start(osd);
        }
        sim
    }

    /// The PG map: every PG on all three OSDs, primary rotated by `shift`.
    fn set_primaries(&mut self, shift: u64) {
        let mut items = String::new();
        for pg in 1..=PG_COUNT {
            let primary = (u64::from(pg) + shift) % OSDS + 1;
            if pg > 1 {
                items.push(',');
            }
            items.push_str(&format!(
                r#""{pg}":{{"osd_set":[1,2,3],"primary":{primary}}}"#
            ));
        }
        let json = format!(r#"{{"items":{{"1":{{{items}}}}}}}"#);
        assert!(self.view.apply("/pg/config", Some(json.as_bytes())));
        self.broadcast_view();
    }

    fn broadcast_view(&mut self) {
        for osd in self.osds.values_mut() {
            osd.on_view(&self.view);
        }
    }

    fn start(&mut self, num: u64) {
        let disk = self.dead.remove(&num).expect("restart a dead OSD");
        let store = Blockstore::open(disk, BlockstoreConfig::default())
            .unwrap_or_else(|e| panic!("seed {}: OSD {num} does not open: {e}", self.seed));
        let mut osd = Osd::new(OsdSettings::new(num), store);
        osd.on_connect(CLIENT);
        let state = br#"{"state":"up","addresses":["127.0.0.1"],"port":1}"#;
        self.view.apply(&format!("/osd/state/{num}"), Some(state));
        let others: Vec<u64> = self.osds.keys().copied().collect();
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
    }

    /// Power loss of OSD `num`: its lease expires, connections drop, unsynced data is lost.
    fn kill(&mut self, num: u64) {
        self.kills += 1;
        let osd = self.osds.remove(&num).unwrap();
        let disk = osd.into_store().into_disk();
        let crash_seed = self.rng.gen();
        self.dead.insert(num, disk.crash(crash_seed));
        self.links.retain(|link, _| match *link {
            Link::Request { from, to } | Link::Reply { from, to } => from != num && to != num,
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
        self.view.apply(&format!("/osd/state/{num}"), None);
        let held: Vec<PgKey> = self
            .view
            .pg_states
            .iter()
            .filter(|(_, state)| state.primary == num)
            .map(|(key, _)| *key)
            .collect();
        for key in held {
            self.view
                .apply(&format!("/pg/state/{}/{}", key.0, key.1), None);
        }
        for osd in self.osds.values_mut() {
            osd.on_disconnect(num);
            osd.on_peer_down(num);
        }
        self.broadcast_view();
    }

    fn client_outcome_unknown(&mut self, id: u64) {
        if let Some((_, Some(write))) = self.client_pending.remove(&id) {
            let sector = self.model.entry(write.sector).or_default();
            sector.maybe.push(write.value);
            sector.busy = false;
        }
    }

    fn primary_of(&self, sector: u64) -> (u64, u64) {
        let object = sector / SECTORS_PER_OBJECT;
        let pg = (object % u64::from(PG_COUNT)) as u32 + 1;
        let offset = object * BLOCK + (sector % SECTORS_PER_OBJECT) * SECTOR as u64;
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
        self.client_pending
            .insert(id, (osd, Some(ClientWrite { sector, value })));
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
            let Some((_, write)) = self.client_pending.remove(&reply.id) else {
                continue;
            };
            match write {
                Some(write) => {
                    let sector = self.model.entry(write.sector).or_default();
                    sector.busy = false;
                    if reply.retval == SECTOR as i64 {
                        sector.acked = Some(write.value);
                        sector.maybe.clear();
                        self.acked_writes += 1;
                    } else {
                        sector.maybe.push(write.value);
                    }
                }
                None if reply.retval >= 0 => {
                    let ReplyBody::Rw { bitmap_len, .. } = reply.body else {
                        panic!("read reply without a bitmap length");
                    };
                    self.reads
                        .insert(reply.id, payload[bitmap_len as usize..].to_vec());
                }
                None => {
                    self.read_errors.insert(reply.id, reply.retval);
                }
            }
        }
    }

    /// Delivers one message, polls one disk, or lets the client act.
    fn step(&mut self, workload: bool) -> bool {
        let roll = self.rng.gen_range(0..100);
        let mut progressed = false;
        if roll < 70 {
            let busy: Vec<Link> = self
                .links
                .iter()
                .filter(|(_, queue)| !queue.is_empty())
                .map(|(link, _)| *link)
                .collect();
            if !busy.is_empty() {
                let link = busy[self.rng.gen_range(0..busy.len())];
                let bytes = self.links.get_mut(&link).unwrap().pop_front().unwrap();
                self.deliver(link, bytes);
                progressed = true;
            }
        } else if roll < 95 || !workload {
            for osd in self.osds.values_mut() {
                osd.poll_store();
            }
            progressed = true;
        } else if workload && self.client_pending.len() < 8 {
            self.client_write();
        }
        self.route_actions();
        progressed
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
        loop {
            let mut actions = Vec::new();
            let mut any = false;
            let nums: Vec<u64> = self.osds.keys().copied().collect();
            for num in nums {
                actions.clear();
                self.osds.get_mut(&num).unwrap().take_actions(&mut actions);
                for action in actions.drain(..) {
                    any = true;
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
            Action::Close { conn } => {
                panic!("seed {}: OSD {num} closed connection {conn}", self.seed)
            }
            Action::Etcd(etcd) => self.etcd(num, etcd),
        }
    }

    /// The in-memory etcd: claims are create-if-absent, everything else is a put or delete,
    /// and every change is broadcast like a watch event.
    fn etcd(&mut self, num: u64, action: EtcdAction) {
        let key_of = |prefix: &str, pg: PgKey| format!("{prefix}{}/{}", pg.0, pg.1);
        match action {
            EtcdAction::ClaimPg { pg, value } => {
                let ok = !self.view.pg_states.contains_key(&pg);
                if ok {
                    self.view
                        .apply(&key_of("/pg/state/", pg), Some(value.as_bytes()));
                }
                self.osds.get_mut(&num).unwrap().on_pg_claimed(pg, ok);
            }
            EtcdAction::PutPgState { pg, value } => {
                self.view
                    .apply(&key_of("/pg/state/", pg), Some(value.as_bytes()));
            }
            EtcdAction::ReleasePg { pg } => {
                self.view.apply(&key_of("/pg/state/", pg), None);
            }
            EtcdAction::PutPgHistory { pg, value } => {
                self.view
                    .apply(&key_of("/pg/history/", pg), Some(value.as_bytes()));
            }
            EtcdAction::PutPgStats { .. } => return,
        }
        self.broadcast_view();
    }

    fn all_active(&self) -> bool {
        (1..=PG_COUNT).all(|pg| {
            let primary = self.view.pg_config[&(1, pg)].primary;
            self.osds.get(&primary).is_some_and(|osd| {
                osd.pg_statuses()
                    .iter()
                    .any(|(key, status)| *key == (1, pg) && status.base == PgBase::Active)
            })
        })
    }

    /// Runs without new client writes until every PG is active and nothing is in flight.
    fn settle(&mut self, what: &str) {
        for _ in 0..200_000 {
            self.step(false);
            let idle = self.links.values().all(|q| q.is_empty()) && self.client_pending.is_empty();
            if idle && self.all_active() {
                return;
            }
        }
        let states: Vec<_> = self
            .osds
            .values()
            .map(|o| (o.osd_num(), o.pg_statuses()))
            .collect();
        panic!(
            "seed {}: cluster did not settle ({what}): {states:?}",
            self.seed
        );
    }

    /// Reads every sector through its primary and checks it against the model.
    fn verify(&mut self, what: &str) {
        let mut ids = BTreeMap::new();
        for sector in 0..OBJECTS * SECTORS_PER_OBJECT {
            let (osd, offset) = self.primary_of(sector);
            let rw = Rw {
                inode: INODE,
                offset,
                len: SECTOR as u32,
                ..Rw::default()
            };
            let id = self.send_client(osd, RequestBody::Read(rw), &[]);
            self.client_pending.insert(id, (osd, None));
            ids.insert(sector, id);
        }
        self.settle(what);
        for (sector, id) in ids {
            let data = self.reads.remove(&id).unwrap_or_else(|| {
                panic!(
                    "seed {}: read of sector {sector} failed ({what}): {:?}",
                    self.seed,
                    self.read_errors.get(&id)
                )
            });
            let model = self.model.entry(sector).or_default();
            let found = if data.iter().all(|&b| b == 0) {
                None
            } else {
                Some(value_of(&data).unwrap_or_else(|| {
                    panic!("seed {}: sector {sector} holds garbage ({what})", self.seed)
                }))
            };
            let allowed = found == model.acked || found.is_some_and(|v| model.maybe.contains(&v));
            assert!(
                allowed,
                "seed {}: sector {sector} reads {found:?}, acknowledged {:?}, maybe {:?} ({what})",
                self.seed, model.acked, model.maybe
            );
            // What was read is now the state every later read must return.
            model.acked = found;
            model.maybe.clear();
        }
    }
}

fn run_seed(seed: u64, steps: u64) -> (u64, u64) {
    let mut sim = Sim::new(seed);
    sim.settle("start");
    for _ in 0..steps {
        sim.step(true);
        if sim.rng.gen_range(0..1000) < 3 {
            if sim.dead.is_empty() {
                let victim = sim.rng.gen_range(1..=OSDS);
                sim.kill(victim);
            } else {
                let back = *sim.dead.keys().next().unwrap();
                sim.start(back);
            }
        }
    }
    let dead: Vec<u64> = sim.dead.keys().copied().collect();
    for osd in dead {
        sim.start(osd);
    }
    sim.settle("after the workload");
    sim.verify("primaries as configured");
    for shift in 1..OSDS {
        sim.set_primaries(shift);
        sim.settle("after moving primaries");
        sim.verify("primaries moved");
    }
    (sim.acked_writes, sim.kills)
}

#[test]
fn acknowledged_writes_survive_osd_crashes() {
    let seeds: u64 = std::env::var("CLUSTER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let only: Option<u64> = std::env::var("CLUSTER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let (mut acked, mut kills) = (0, 0);
    for seed in only.map_or(0..seeds, |s| s..s + 1) {
        let (a, k) = run_seed(seed, 4000);
        acked += a;
        kills += k;
    }
    eprintln!("cluster simulation: {acked} acknowledged writes, {kills} OSD crashes");
    assert!(acked > 0 && kills > 0, "the workload did nothing");
}
