//! Model-based blockstore test (TESTING.md layer 2).
//!
//! Random sequences of write / write unstable / stabilize / rollback / delete (a tombstone)
//! / purge / sync / read / list / concurrent batches / flush / clean reopen run against the
//! blockstore on a
//! simulated disk and against a simple in-memory model. At random points the disk loses
//! power (every write not covered by a completed fsync is lost, lands, or is torn) and the
//! blockstore is reopened: every sector must then hold a value the model allows (synced
//! data exactly; unsynced data old or new, never garbage; a synced tombstone is listed as
//! deleted with its version, a synced purge leaves nothing). Some sequences end by flipping
//! one or two bits in live parts of the disk after a clean shutdown or after a power loss:
//! the damage must be detected (open fails, or the read fails with -EDOM and the object is
//! in `damaged_objects()`) or not matter; wrong data is never returned, and repairing the
//! damaged objects clears them for good (see `Harness::corrupt`).
//!
//! `BLOCKSTORE_MODEL_SEQUENCES` sets how many sequences run (default 2500),
//! `BLOCKSTORE_MODEL_FIRST` the first one (default 0); `BLOCKSTORE_MODEL_SEED=<n>` replays
//! one sequence.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use vitastor_osd::blockstore::dump::{dump_journal, dump_meta};
use vitastor_osd::blockstore::prepare::prepare;
use vitastor_osd::blockstore::sim::SimDisk;
use vitastor_osd::blockstore::Disk;
use vitastor_osd::blockstore::{
    AlignedBuf, Blockstore, BlockstoreConfig, BlockstoreError, Completion, FormatOptions,
    ListedVersion, Op, OpError, OpId, OpOutput,
};
use vitastor_proto::{errno, ObjectId};

#[path = "blockstore_model/corrupt.rs"]
mod corrupt;

const BLOCK: u32 = 128 << 10;
const SECTOR: usize = 4096;
const SECTORS: usize = (BLOCK as usize) / SECTOR;
const OBJECTS: u64 = 6;
const DISK_BYTES: u64 = 8 << 20;
const JOURNAL_BYTES: u64 = 256 << 10;

/// Waits for the next completion the way the OSD's event loop does: it sleeps until the
/// device signals one (an eventfd), with no periodic tick. So the blockstore must have
/// handed every request it queued to the device; one left queued would never complete
/// (the loop would hang). Fails the sequence instead of hanging.
fn poll_on_device_event(store: &mut Blockstore<SimDisk>) {
    let disk = store.sim_disk_mut();
    let (in_flight, unsubmitted) = (disk.in_flight(), disk.unsubmitted());
    assert!(
        in_flight > unsubmitted,
        "stalled: operations wait but the device was handed nothing to do \
         ({in_flight} requests in flight, {unsubmitted} of them never handed to it)"
    );
    store.poll(true).unwrap_or_else(|e| panic!("poll: {e}"));
}

/// [`Blockstore::run`] driven like the OSD drives the blockstore: submit, poll once (the
/// OSD polls after handling each message), then poll only on device events.
fn run_like_the_osd(store: &mut Blockstore<SimDisk>, op: Op) -> Result<OpOutput, OpError> {
    let id = store.submit(op);
    store.poll(false).unwrap_or_else(|e| panic!("poll: {e}"));
    let mut done = Vec::new();
    loop {
        store.take_completions(&mut done);
        // Other completions (syncs a batch submitted) have no one waiting for them.
        if let Some(found) = done.drain(..).find(|c| c.id == id) {
            return found.result;
        }
        poll_on_device_event(store);
    }
}

/// Content of one sector written with id `id` (0 = zeros).
fn sector_pattern(id: u64, sector: usize) -> Vec<u8> {
    if id == 0 {
        return vec![0; SECTOR];
    }
    let mut data = vec![0u8; SECTOR];
    data[..8].copy_from_slice(&id.to_le_bytes());
    data[8..16].copy_from_slice(&(sector as u64).to_le_bytes());
    for (i, byte) in data[16..].iter_mut().enumerate() {
        *byte = (id as u8)
            .wrapping_mul(31)
            .wrapping_add(i as u8)
            .wrapping_add(sector as u8);
    }
    data
}

/// The id a sector's data was written with, if it is exactly one of our patterns.
fn identify(data: &[u8], sector: usize) -> Option<u64> {
    if data.iter().all(|b| *b == 0) {
        return Some(0);
    }
    let id = u64::from_le_bytes(data[..8].try_into().ok()?);
    (sector_pattern(id, sector) == data).then_some(id)
}

#[derive(Clone, Debug)]
enum Mutation {
    Write { first: usize, ids: Vec<u64> },
    Delete,
}

#[derive(Clone, Debug, Default)]
struct ObjectModel {
    base: Vec<u64>,
    base_version: u64,
    /// (version, stable, mutation); version 0 = assigned but not yet known (in flight).
    history: Vec<(u64, bool, Mutation)>,
    possible: Vec<BTreeSet<u64>>,
    latest_version: u64,
    /// The newest mutation folded into `base` was a write (not a delete; not purged).
    base_live: bool,
    /// What the last sync made durable and nothing has changed since (checked after a
    /// crash).
    synced: Option<Synced>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Synced {
    /// The newest version is this tombstone.
    Tombstone(u64),
    /// The object has no version at all (purged or never written).
    Gone,
}

impl ObjectModel {
    fn new() -> ObjectModel {
        ObjectModel {
            base: vec![0; SECTORS],
            possible: vec![BTreeSet::from([0]); SECTORS],
            ..ObjectModel::default()
        }
    }

    fn apply(content: &mut [u64], mutation: &Mutation) {
        match mutation {
            Mutation::Write { first, ids } => {
                content[*first..*first + ids.len()].copy_from_slice(ids)
            }
            Mutation::Delete => content.fill(0),
        }
    }

    fn current(&self) -> Vec<u64> {
        let mut content = self.base.clone();
        for (_, _, mutation) in &self.history {
            Self::apply(&mut content, mutation);
        }
        content
    }

    fn note_possible(&mut self) {
        let current = self.current();
        for (set, id) in self.possible.iter_mut().zip(current) {
            set.insert(id);
        }
    }

    fn push(&mut self, version: u64, stable: bool, mutation: Mutation) {
        if stable {
            // A stable version stabilizes everything before it.
            self.history.iter_mut().for_each(|entry| entry.1 = true);
        }
        self.synced = None;
        self.history.push((version, stable, mutation));
        if version != 0 {
            self.latest_version = self.latest_version.max(version);
        }
        self.note_possible();
        self.fold();
    }

    /// Stable versions can never be rolled back: fold them into the base.
    fn fold(&mut self) {
        while self
            .history
            .first()
            .is_some_and(|(v, stable, _)| *stable && *v != 0)
        {
            let (version, _, mutation) = self.history.remove(0);
            self.base_live = matches!(mutation, Mutation::Write { .. });
            Self::apply(&mut self.base, &mutation);
            self.base_version = version;
        }
    }

    /// Whether the newest version holds data (a delete of version 0 then records a
    /// tombstone; otherwise it does nothing).
    fn live(&self) -> bool {
        match self.history.last() {
            Some((_, _, mutation)) => matches!(mutation, Mutation::Write { .. }),
            None => self.base_live,
        }
    }

    /// The newest version, if it is a tombstone.
    fn tombstone(&self) -> Option<u64> {
        match self.history.last() {
            Some((version, _, Mutation::Delete)) => Some(*version).filter(|v| *v != 0),
            Some(_) => None,
            None => (!self.base_live && self.base_version != 0).then_some(self.base_version),
        }
    }

    /// The object was purged: it has no version at all.
    fn purged(&mut self) {
        self.history.clear();
        self.base.fill(0);
        self.base_version = 0;
        self.latest_version = 0;
        self.base_live = false;
        self.synced = None;
        self.note_possible();
    }

    fn unstable_versions(&self) -> Vec<u64> {
        self.history
            .iter()
            .filter(|(v, stable, _)| !stable && *v != 0)
            .map(|(v, _, _)| *v)
            .collect()
    }

    fn synced(&mut self) {
        let current = self.current();
        for (set, id) in self.possible.iter_mut().zip(current) {
            *set = BTreeSet::from([id]);
        }
        self.synced = match self.tombstone() {
            Some(version) => Some(Synced::Tombstone(version)),
            None if self.latest_version == 0 && !self.live() => Some(Synced::Gone),
            None => None,
        };
    }

    fn reset_to(&mut self, observed: Vec<u64>, version: u64) {
        // Our patterns never write zeros: an all-zero object is a tombstone (or, with
        // version 0, never written or purged).
        self.base_live = version != 0 && observed.iter().any(|id| *id != 0);
        self.base = observed.clone();
        self.base_version = version;
        self.latest_version = version;
        self.history.clear();
        // Replay ends with an fsync: what it found is durable.
        self.synced = None;
        self.synced();
        self.possible = observed
            .into_iter()
            .map(|id| BTreeSet::from([id]))
            .collect();
    }
}

struct Harness {
    seed: u64,
    rng: SmallRng,
    store: Option<Blockstore<SimDisk>>,
    config: BlockstoreConfig,
    model: Vec<ObjectModel>,
    next_id: u64,
    log: Vec<String>,
}

fn oid(n: u64) -> ObjectId {
    ObjectId {
        inode: 1 << 48 | 3,
        stripe: n * u64::from(BLOCK),
    }
}

impl Harness {
    fn new(seed: u64) -> Harness {
        if std::env::var("BLOCKSTORE_MODEL_DUMP").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug")
                .with_writer(std::io::stderr)
                .try_init();
        }
        let mut disk = SimDisk::new(DISK_BYTES, seed);
        let options = FormatOptions {
            journal_size: JOURNAL_BYTES,
            format_id: seed + 1,
            ..FormatOptions::default()
        };
        prepare(&mut disk, &options).expect("prepare");
        let config = BlockstoreConfig {
            csum_memory_limit_bytes: if seed.is_multiple_of(3) { 0 } else { 1 << 30 },
            ..BlockstoreConfig::default()
        };
        let store = Blockstore::open(disk, config.clone()).expect("open after prepare");
        Harness {
            seed,
            rng: SmallRng::seed_from_u64(seed),
            store: Some(store),
            config,
            model: (0..OBJECTS).map(|_| ObjectModel::new()).collect(),
            next_id: 1,
            log: Vec::new(),
        }
    }

    fn store(&mut self) -> &mut Blockstore<SimDisk> {
        self.store.as_mut().expect("store is open")
    }

    fn fail(&self, message: String) -> ! {
        let tail: Vec<&String> = self.log.iter().rev().take(200).collect();
        panic!("seed {}: {message}\nlast steps (newest first): {tail:#?}\nreplay: BLOCKSTORE_MODEL_SEED={}", self.seed, self.seed);
    }

    fn random_write(&mut self, object: usize) -> (u32, AlignedBuf, Vec<u64>, usize) {
        let (first, count) = if self.rng.gen_bool(0.1) {
            (0, SECTORS)
        } else {
            let count = self.rng.gen_range(1..=4);
            (self.rng.gen_range(0..=SECTORS - count), count)
        };
        let _ = object;
        let ids: Vec<u64> = (0..count)
            .map(|_| {
                self.next_id += 1;
                self.next_id
            })
            .collect();
        let mut data = AlignedBuf::new(count * SECTOR);
        for (i, id) in ids.iter().enumerate() {
            data[i * SECTOR..(i + 1) * SECTOR].copy_from_slice(&sector_pattern(*id, first + i));
        }
        ((first * SECTOR) as u32, data, ids, first)
    }

    fn write(&mut self, stable: bool) {
        let object = self.rng.gen_range(0..OBJECTS as usize);
        let (offset, data, ids, first) = self.random_write(object);
        self.log.push(format!(
            "write obj {object} sectors {first}+{} stable {stable} ids {ids:?}",
            ids.len()
        ));
        let result = run_like_the_osd(
            self.store(),
            Op::Write {
                oid: oid(object as u64),
                version: 0,
                offset,
                data,
                stable,
            },
        );
        match result {
            Ok(OpOutput::Version(version)) => {
                self.log.push(format!("  -> v{version}"));
                self.model[object].push(version, stable, Mutation::Write { first, ids })
            }
            Err(error) if error.errno == errno::ENOSPC => self.on_enospc(),
            other => self.fail(format!("write failed: {other:?}")),
        }
    }

    /// The journal may legitimately fill up while an unstable version pins its start (it
    /// can be neither flushed nor dropped). Without one, ENOSPC is a failure. Afterwards
    /// everything is stabilized so the flusher can proceed.
    fn on_enospc(&mut self) {
        self.on_enospc_pinned_by(self.unstable_count());
    }

    fn unstable_count(&self) -> usize {
        self.model.iter().map(|m| m.unstable_versions().len()).sum()
    }

    /// [`Harness::on_enospc`] for an ENOSPC that happened when `unstable` versions were
    /// unstable (in a batch, a write that was refused can see versions that a later
    /// stable write of the same batch then stabilized).
    fn on_enospc_pinned_by(&mut self, unstable: usize) {
        let journal_used = self.store().journal_used_bytes();
        if unstable == 0 {
            let summary = self.store().debug_summary();
            self.fail(format!("ENOSPC with only {unstable} unstable versions (journal used {journal_used}): {summary}"));
        }
        self.log.push(format!(
            "ENOSPC with {unstable} unstable versions; stabilizing all"
        ));
        // Stabilizing may itself wait for space until the object pinning the journal start
        // is stable, so go round until a pass makes no progress.
        loop {
            let mut progress = false;
            let mut pending = false;
            for object in 0..OBJECTS as usize {
                let Some(&version) = self.model[object].unstable_versions().last() else {
                    continue;
                };
                match run_like_the_osd(
                    self.store(),
                    Op::Stabilize {
                        oid: oid(object as u64),
                        version,
                    },
                ) {
                    Ok(_) => {
                        self.model[object]
                            .history
                            .iter_mut()
                            .for_each(|entry| entry.1 = true);
                        self.model[object].fold();
                        progress = true;
                    }
                    Err(error) if error.errno == errno::ENOSPC => pending = true,
                    Err(error) => self.fail(format!("stabilize failed: {error}")),
                }
            }
            if !pending {
                break;
            }
            if !progress {
                let summary = self.store().debug_summary();
                self.fail(format!(
                    "cannot stabilize anything: the journal is full: {summary}"
                ));
            }
        }
    }

    /// A delete with version 0 (the next; nothing happens to an object without data) or
    /// with an explicit newer version (always a tombstone, as peering sends it).
    fn delete(&mut self) {
        let object = self.rng.gen_range(0..OBJECTS as usize);
        let latest = self.model[object].latest_version;
        let requested = if self.rng.gen_bool(0.2) {
            latest + self.rng.gen_range(1..=3)
        } else {
            0
        };
        let live = self.model[object].live();
        self.log.push(format!(
            "delete obj {object} v{requested} (live {live}, latest v{latest})"
        ));
        let expected = match requested {
            0 if live => Some(latest + 1),
            0 => None,
            v => Some(v),
        };
        match run_like_the_osd(self.store(), Op::Delete {
            oid: oid(object as u64),
            version: requested,
        }) {
            Ok(OpOutput::Version(version)) => match expected {
                Some(tombstone) if version == tombstone => {
                    self.model[object].push(version, true, Mutation::Delete);
                }
                None if version == latest => {}
                _ => self.fail(format!(
                    "delete of object {object} returned v{version}, expected {expected:?} (latest v{latest})"
                )),
            },
            Err(error) if error.errno == errno::ENOSPC => self.on_enospc(),
            other => self.fail(format!("delete failed: {other:?}")),
        }
    }

    /// A purge of the object's newest version, tombstone or live data (or of an older
    /// version, which must do nothing, or a newer one, which purges).
    fn purge(&mut self) {
        let object = self.rng.gen_range(0..OBJECTS as usize);
        let model = &self.model[object];
        let tombstone = model.tombstone();
        let around = tombstone.unwrap_or(model.latest_version);
        let requested = match self.rng.gen_range(0..4) {
            0 | 1 => around,
            2 => around.saturating_sub(1),
            _ => around + 2,
        };
        let newest = match tombstone {
            Some(version) => version,
            None if model.live() => model.latest_version,
            None => 0,
        };
        let unstable = !model.unstable_versions().is_empty();
        let expected = if newest != 0 && newest <= requested && !unstable {
            newest
        } else {
            0
        };
        self.log.push(format!(
            "purge obj {object} v{requested} (tombstone {tombstone:?}, expect {expected})"
        ));
        match run_like_the_osd(
            self.store(),
            Op::Purge {
                oid: oid(object as u64),
                version: requested,
            },
        ) {
            Ok(OpOutput::Version(version)) if version == expected => {
                if expected != 0 {
                    self.model[object].purged();
                }
            }
            Err(error) if error.errno == errno::ENOSPC => self.on_enospc(),
            other => self.fail(format!(
                "purge of object {object} v{requested}: {other:?}, expected v{expected}"
            )),
        }
    }

    fn stabilize(&mut self) {
        let object = self.rng.gen_range(0..OBJECTS as usize);
        let unstable = self.model[object].unstable_versions();
        let Some(&version) = unstable.get(self.rng.gen_range(0..unstable.len().max(1))) else {
            return;
        };
        self.log.push(format!("stabilize obj {object} v{version}"));
        if let Err(error) = run_like_the_osd(
            self.store(),
            Op::Stabilize {
                oid: oid(object as u64),
                version,
            },
        ) {
            self.fail(format!("stabilize failed: {error}"));
        }
        for entry in self.model[object]
            .history
            .iter_mut()
            .filter(|(v, _, _)| *v <= version)
        {
            entry.1 = true;
        }
        self.model[object].fold();
    }

    fn rollback(&mut self) {
        let object = self.rng.gen_range(0..OBJECTS as usize);
        let model = &self.model[object];
        if model.unstable_versions().is_empty() {
            return;
        }
        let stable_max = model
            .history
            .iter()
            .filter(|(_, s, _)| *s)
            .map(|(v, _, _)| *v)
            .max()
            .unwrap_or(model.base_version);
        let mut targets: Vec<u64> = vec![stable_max];
        targets.extend(model.unstable_versions());
        targets.pop();
        let version = targets[self.rng.gen_range(0..targets.len())];
        self.log
            .push(format!("rollback obj {object} to v{version}"));
        if let Err(error) = run_like_the_osd(
            self.store(),
            Op::Rollback {
                oid: oid(object as u64),
                version,
            },
        ) {
            self.fail(format!("rollback failed: {error}"));
        }
        let model = &mut self.model[object];
        model
            .history
            .retain(|(v, stable, _)| *v <= version || *stable);
        model.synced = None;
        model.latest_version = model
            .history
            .iter()
            .map(|(v, _, _)| *v)
            .max()
            .unwrap_or(model.base_version)
            .max(version);
        model.note_possible();
    }

    fn sync(&mut self) {
        self.log.push("sync".into());
        if let Err(error) = run_like_the_osd(self.store(), Op::Sync) {
            self.fail(format!("sync failed: {error}"));
        }
        self.model.iter_mut().for_each(ObjectModel::synced);
    }

    fn read_object(&mut self, object: usize) -> Result<(u64, Vec<u64>), String> {
        match run_like_the_osd(
            self.store(),
            Op::Read {
                oid: oid(object as u64),
                offset: 0,
                len: BLOCK,
            },
        ) {
            Ok(OpOutput::Read { version, data, .. }) => {
                let mut ids = Vec::with_capacity(SECTORS);
                for sector in 0..SECTORS {
                    match identify(&data[sector * SECTOR..(sector + 1) * SECTOR], sector) {
                        Some(id) => ids.push(id),
                        None => {
                            return Err(format!("object {object} sector {sector} holds garbage"))
                        }
                    }
                }
                Ok((version, ids))
            }
            Ok(other) => Err(format!("unexpected read output {other:?}")),
            Err(error) => Err(format!("read failed: {error}")),
        }
    }

    fn check_reads(&mut self) {
        for object in 0..OBJECTS as usize {
            let (version, ids) = self.read_object(object).unwrap_or_else(|e| self.fail(e));
            let expected = self.model[object].current();
            if ids != expected {
                self.fail(format!("object {object}: read {ids:?}, model {expected:?}"));
            }
            let model = &self.model[object];
            // A tombstone reads as its version, journaled or flushed; a purged object as 0.
            if version != model.latest_version {
                let summary = self.store().debug_summary();
                eprintln!("{summary}");
                self.fail(format!(
                    "object {object}: version {version}, model {}",
                    self.model[object].latest_version
                ));
            }
            let tombstone = self.model[object].tombstone();
            self.check_listed(object, version, tombstone.is_some());
        }
    }

    /// The object's newest listed version is `version` (none listed for 0), listed as
    /// deleted exactly when it is a tombstone; versions are listed in order.
    fn check_listed(&mut self, object: usize, version: u64, tombstone: bool) {
        let listed: Vec<ListedVersion> = self
            .store()
            .list(0, 0, 0, 0, u64::MAX)
            .into_iter()
            .filter(|v| v.oid == oid(object as u64))
            .collect();
        let newest = listed.last().map(|v| (v.version, v.deleted));
        let expected = (version != 0).then_some((version, tombstone));
        let sorted = listed.windows(2).all(|w| w[0].version < w[1].version);
        let deleted_stable = listed.iter().all(|v| v.stable || !v.deleted);
        if newest != expected || !sorted || !deleted_stable {
            self.fail(format!(
                "object {object}: listed {listed:?}, expected newest (version, deleted) {expected:?}"
            ));
        }
    }

    /// Writes to distinct objects submitted together; maybe a crash before they finish.
    fn batch(&mut self, crash: bool) {
        let count = self.rng.gen_range(2..=OBJECTS as usize);
        let mut objects: Vec<usize> = (0..OBJECTS as usize).collect();
        let mut submitted: Vec<(OpId, usize, bool)> = Vec::new();
        let unstable_at_submit = self.unstable_count();
        for _ in 0..count {
            let object = objects.swap_remove(self.rng.gen_range(0..objects.len()));
            let (offset, data, ids, first) = self.random_write(object);
            let stable = self.rng.gen_bool(0.8);
            self.log.push(format!(
                "  batch submit obj {object} sectors {first}+{} stable {stable} ids {ids:?}",
                ids.len()
            ));
            let id = self.store().submit(Op::Write {
                oid: oid(object as u64),
                version: 0,
                offset,
                data,
                stable,
            });
            // Recorded as unstable until it completes: a stable write stabilizes older
            // versions only if it is accepted.
            self.model[object].push(0, false, Mutation::Write { first, ids });
            submitted.push((id, object, stable));
            if self.rng.gen_bool(0.2) {
                let _ = self.store().submit(Op::Sync);
            }
        }
        self.log
            .push(format!("batch of {count} writes (crash: {crash})"));
        let polls = if crash {
            self.rng.gen_range(0..6)
        } else {
            usize::MAX
        };
        let mut done: Vec<Completion> = Vec::new();
        let mut round = 0;
        // The OSD polls once after handling the messages that submitted them, then on
        // device events only.
        self.store()
            .poll(false)
            .unwrap_or_else(|e| panic!("poll: {e}"));
        loop {
            let mut batch = Vec::new();
            self.store().take_completions(&mut batch);
            done.extend(batch);
            let finished = submitted
                .iter()
                .filter(|(id, _, _)| done.iter().any(|c| c.id == *id))
                .count();
            if finished == submitted.len() || round >= polls {
                break;
            }
            poll_on_device_event(self.store());
            round += 1;
        }
        let mut out_of_space = false;
        for completion in &done {
            let Some(&(_, object, stable)) =
                submitted.iter().find(|(id, _, _)| *id == completion.id)
            else {
                continue;
            };
            let object = &object;
            match &completion.result {
                Err(error) if error.errno == errno::ENOSPC => {
                    let model = &mut self.model[*object];
                    model.history.retain(|(v, _, _)| *v != 0);
                    out_of_space = true;
                }
                Ok(OpOutput::Version(version)) => {
                    self.log
                        .push(format!("  batch write to obj {object} -> v{version}"));
                    let model = &mut self.model[*object];
                    if let Some(index) = model.history.iter().position(|(v, _, _)| *v == 0) {
                        model.history[index].0 = *version;
                        if stable {
                            model.history[..=index]
                                .iter_mut()
                                .for_each(|entry| entry.1 = true);
                        }
                    }
                    // Each object gets one write per batch, so this is its newest version.
                    model.latest_version = *version;
                    model.fold();
                }
                other => self.fail(format!("batched write failed: {other:?}")),
            }
        }
        if out_of_space && !crash {
            self.on_enospc_pinned_by(unstable_at_submit.max(self.unstable_count()));
        }
        if crash {
            self.crash();
        }
    }

    fn crash(&mut self) {
        let crash_seed = self.rng.gen();
        self.log.push(format!("crash ({crash_seed})"));
        let disk = self
            .store
            .take()
            .expect("open")
            .into_disk()
            .crash(crash_seed);
        if std::env::var("BLOCKSTORE_MODEL_DUMP").is_ok() {
            let journal = dump_journal(disk.snapshot(0)).unwrap_or_default();
            eprintln!("journal after crash: {:#}", journal["entries"]);
            eprintln!(
                "flush records after crash: {}",
                journal["newest_flush_batch"]
            );
            let meta = dump_meta(disk.snapshot(0)).unwrap_or_default();
            eprintln!("meta after crash: {:#}", meta["entries"]);
            eprintln!("damaged slots after crash: {}", meta["damaged_slots"]);
        }
        let store = Blockstore::open(disk, self.config.clone())
            .unwrap_or_else(|e| self.fail(format!("reopen after crash failed: {e}")));
        self.store = Some(store);
        for object in 0..OBJECTS as usize {
            let (version, ids) = self
                .read_object(object)
                .unwrap_or_else(|e| self.fail(format!("after crash: {e}")));
            if std::env::var("BLOCKSTORE_MODEL_DUMP").is_ok() {
                eprintln!(
                    "read after crash object {object}: v{version} {ids:?}; {}",
                    self.store().debug_summary()
                );
            }
            match self.model[object].synced {
                Some(Synced::Tombstone(tombstone)) => {
                    if version != tombstone || ids.iter().any(|id| *id != 0) {
                        self.fail(format!("after crash, object {object} with a synced tombstone v{tombstone} reads v{version} {ids:?}"));
                    }
                    self.check_listed(object, tombstone, true);
                }
                Some(Synced::Gone) => {
                    if version != 0 {
                        self.fail(format!(
                            "after crash, synced purged object {object} reads v{version}"
                        ));
                    }
                    self.check_listed(object, 0, false);
                }
                None => {}
            }
            for (sector, id) in ids.iter().enumerate() {
                if !self.model[object].possible[sector].contains(id) {
                    let allowed = &self.model[object].possible[sector];
                    self.fail(format!(
                        "after crash, object {object} sector {sector} = {id}, allowed {allowed:?}"
                    ));
                }
            }
            let listed = self.store().list(0, 0, 0, 0, u64::MAX);
            let unstable: Vec<u64> = listed
                .iter()
                .filter(|v| v.oid == oid(object as u64) && !v.stable)
                .map(|v| v.version)
                .collect();
            if let Some(max) = unstable.iter().max() {
                if let Err(error) = run_like_the_osd(
                    self.store(),
                    Op::Stabilize {
                        oid: oid(object as u64),
                        version: *max,
                    },
                ) {
                    self.fail(format!("stabilize after crash failed: {error}"));
                }
            }
            if std::env::var("BLOCKSTORE_MODEL_DUMP").is_ok() {
                eprintln!(
                    "after crash object {object}: version {version}; {}",
                    self.store().debug_summary()
                );
            }
            self.model[object].reset_to(ids, version);
        }
    }

    fn clean_reopen(&mut self) {
        self.log.push("clean reopen".into());
        let seed = self.rng.gen();
        let disk = self
            .store
            .take()
            .expect("open")
            .close()
            .unwrap_or_else(|e| panic!("close: {e}"))
            .reopen(seed);
        let store = Blockstore::open(disk, self.config.clone())
            .unwrap_or_else(|e| self.fail(format!("reopen failed: {e}")));
        self.store = Some(store);
        self.check_reads();
    }

    fn step(&mut self) {
        match self.rng.gen_range(0..100) {
            0..=33 => self.write(true),
            34..=43 => self.write(false),
            44..=50 => self.stabilize(),
            51..=55 => self.rollback(),
            56..=61 => self.delete(),
            62..=64 => self.purge(),
            65..=71 => self.sync(),
            72..=79 => self.check_reads(),
            80..=85 => self.batch(false),
            86..=88 => self.batch(true),
            89..=91 => {
                self.log.push("flush_all".into());
                self.store()
                    .flush_all()
                    .unwrap_or_else(|e| panic!("flush: {e}"));
            }
            92..=95 => self.crash(),
            _ => self.clean_reopen(),
        }
    }
}

/// Runs one sequence; returns whether a corruption was injected and detected.
fn run_sequence(seed: u64) -> Option<bool> {
    let mut harness = Harness::new(seed);
    let steps = harness.rng.gen_range(40..120);
    for _ in 0..steps {
        harness.step();
    }
    harness.check_reads();
    match seed % 4 {
        1 => Some(harness.corrupt(false)),
        3 => Some(harness.corrupt(true)),
        _ => None,
    }
}

#[test]
fn random_sequences_with_crashes_match_the_model() {
    if let Ok(seed) = std::env::var("BLOCKSTORE_MODEL_SEED") {
        let seed: u64 = seed
            .parse()
            .expect("BLOCKSTORE_MODEL_SEED must be a number");
        run_sequence(seed);
        return;
    }
    let sequences: u64 = std::env::var("BLOCKSTORE_MODEL_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2500);
    let base: u64 = 0x5eed_0000;
    // `BLOCKSTORE_MODEL_FIRST=<n>` starts at the n-th sequence (to continue a long run).
    let first: u64 = std::env::var("BLOCKSTORE_MODEL_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut injected = 0;
    let mut detected = 0;
    for i in first..first + sequences {
        if let Some(found) = run_sequence(base + i) {
            injected += 1;
            detected += usize::from(found);
        }
    }
    eprintln!("{sequences} sequences; {injected} bit flips injected, {detected} detected, the rest harmless");
    if injected >= 20 {
        assert!(
            detected * 4 >= injected,
            "too few bit flips were detected: {detected} of {injected}"
        );
    }
}
