//! The corruption step of the model test: bit flips at rest, the "read back exactly or
//! marked damaged" oracle, and the repair that must clear the mark.

use super::*;

impl Harness {
    /// Flips one or two bits in live regions (journal entries, metadata slots, written
    /// sectors of data blocks) of a stopped store: after a clean shutdown, or after a
    /// power loss (reopened once, synced, then the power goes again). Oracle: open fails
    /// as corrupted, or every object reads back exactly as the model says or fails with
    /// -EDOM and is in `damaged_objects()`; never wrong data. Damaged objects are then
    /// repaired (a whole-block write, as the OSD does with a peer's copy), which must clear
    /// the mark, and everything must read back across a restart. Returns whether the
    /// damage was detected.
    pub(super) fn corrupt(&mut self, after_crash: bool) -> bool {
        let disk = if after_crash {
            self.crash();
            self.sync();
            let seed = self.rng.gen();
            self.log.push(format!("power loss again ({seed})"));
            self.store.take().expect("open").into_disk().crash(seed)
        } else {
            self.store
                .take()
                .expect("open")
                .close()
                .unwrap_or_else(|e| panic!("close: {e}"))
                .reopen(1)
        };
        let meta = dump_meta(disk.snapshot(1)).expect("dump meta");
        let journal = dump_journal(disk.snapshot(2)).expect("dump journal");
        let sb = &meta["superblock"];
        let number = |v: &serde_json::Value| v.as_u64().expect("number");
        let ring = number(&journal["ring_offset"]);
        let mut regions: Vec<Vec<(u64, u64)>> = vec![Vec::new(), Vec::new(), Vec::new()];
        for entry in journal["entries"].as_array().expect("entries") {
            let data = if entry["kind"] == "small_write" {
                number(&entry["len"])
            } else {
                0
            };
            regions[0].push((ring + number(&entry["pos"]), SECTOR as u64 + data));
        }
        for entry in meta["entries"].as_array().expect("entries") {
            let block = number(&entry["block"]);
            regions[1].push((
                number(&sb["meta_offset"]) + block * SECTOR as u64,
                SECTOR as u64,
            ));
            let bitmap = entry["bitmap"].as_str().expect("bitmap");
            for sector in 0..SECTORS {
                let byte = u8::from_str_radix(&bitmap[sector / 8 * 2..sector / 8 * 2 + 2], 16)
                    .expect("hex");
                if byte & (1 << (sector % 8)) != 0 {
                    let offset = number(&sb["data_offset"])
                        + block * u64::from(BLOCK)
                        + (sector * SECTOR) as u64;
                    regions[2].push((offset, SECTOR as u64));
                }
            }
        }
        for entry in journal["entries"].as_array().expect("entries") {
            if entry["kind"] == "big_write" {
                let offset = number(&sb["data_offset"])
                    + number(&entry["block"]) * u64::from(BLOCK)
                    + number(&entry["offset"]);
                regions[2].push((offset, number(&entry["len"])));
            }
        }
        regions.retain(|r| !r.is_empty());
        let mut disk = disk;
        if regions.is_empty() {
            self.store = Some(Blockstore::open(disk, self.config.clone()).expect("reopen"));
            return false;
        }
        if std::env::var("BLOCKSTORE_MODEL_DUMP").is_ok() {
            eprintln!("before flip: meta {}", meta["entries"]);
            eprintln!(
                "before flip: journal {} records {}",
                journal["entries"], journal["newest_flush_batch"]
            );
        }
        for _ in 0..self.rng.gen_range(1..=2) {
            let kind = self.rng.gen_range(0..regions.len());
            let (start, len) = regions[kind][self.rng.gen_range(0..regions[kind].len())];
            let at = start + self.rng.gen_range(0..len);
            let bit = self.rng.gen_range(0..8);
            self.log.push(format!(
                "flip bit {bit} at {at} (region kind {kind} of {}, after crash {after_crash})",
                regions.len()
            ));
            disk.flip_bit(at, bit);
        }
        let store = match Blockstore::open(disk, self.config.clone()) {
            Err(BlockstoreError::Corrupted { .. }) | Err(BlockstoreError::BadSuperblock(_)) => {
                return true
            }
            Err(other) => self.fail(format!("unexpected open error after a bit flip: {other}")),
            Ok(store) => store,
        };
        self.store = Some(store);
        let mut detected = !self.store().damaged_objects().is_empty();
        for object in 0..OBJECTS as usize {
            match self.read_object(object) {
                Ok((_, ids)) => {
                    let expected = self.model[object].current();
                    if ids != expected {
                        self.fail(format!(
                            "after a bit flip object {object} reads {ids:?}, model {expected:?}"
                        ));
                    }
                }
                Err(error) if error.contains("EDOM") => {
                    if !self
                        .store()
                        .damaged_objects()
                        .contains_key(&oid(object as u64))
                    {
                        self.fail(format!(
                            "object {object} failed with {error} but is not marked damaged"
                        ));
                    }
                    detected = true;
                }
                Err(error) => self.fail(format!("unexpected read error after a bit flip: {error}")),
            }
        }
        self.repair_damaged();
        self.check_data();
        self.log.push("clean reopen after repair".into());
        let seed = self.rng.gen();
        let disk = self
            .store
            .take()
            .expect("open")
            .close()
            .unwrap_or_else(|e| panic!("close: {e}"))
            .reopen(seed);
        let store = Blockstore::open(disk, self.config.clone())
            .unwrap_or_else(|e| self.fail(format!("reopen after repair failed: {e}")));
        self.store = Some(store);
        if !self.store().damaged_objects().is_empty() {
            let damaged = format!("{:?}", self.store().damaged_objects());
            self.fail(format!(
                "repaired objects are damaged again after a restart: {damaged}"
            ));
        }
        self.check_data();
        detected
    }

    /// What the OSD does with a peer's copy: a stable write of the whole block at the
    /// peer's version, which must clear the mark.
    fn repair_damaged(&mut self) {
        let damaged: Vec<ObjectId> = self.store().damaged_objects().keys().copied().collect();
        for damaged_oid in damaged {
            let Some(object) = (0..OBJECTS as usize).find(|o| oid(*o as u64) == damaged_oid) else {
                self.fail(format!("unknown object {damaged_oid} marked damaged"));
            };
            let ids: Vec<u64> = (0..SECTORS)
                .map(|_| {
                    self.next_id += 1;
                    self.next_id
                })
                .collect();
            let mut data = AlignedBuf::new(BLOCK as usize);
            for (i, id) in ids.iter().enumerate() {
                data[i * SECTOR..(i + 1) * SECTOR].copy_from_slice(&sector_pattern(*id, i));
            }
            self.log.push(format!("repair obj {object} ids {ids:?}"));
            // Newer than the damaged version, which the store may never have seen (a
            // lost entry); the OSD writes the peer's newer version the same way.
            let damage = self.store().damaged_objects()[&damaged_oid];
            let version = (damage.version + 1).max(self.store().object_version(&damaged_oid) + 1);
            let repair = |store: &mut Blockstore<SimDisk>| {
                store.run(Op::Write {
                    oid: damaged_oid,
                    version,
                    offset: 0,
                    data: data.clone(),
                    stable: true,
                })
            };
            let mut result = repair(self.store());
            if matches!(&result, Err(e) if e.errno == errno::ENOSPC) {
                // Unstable versions may pin the journal, as for any write.
                self.on_enospc();
                result = repair(self.store());
            }
            match result {
                Ok(OpOutput::Version(version)) => {
                    self.log
                        .push(format!("  -> v{version} (damage {damage:?})"));
                    self.model[object].push(version, true, Mutation::Write { first: 0, ids })
                }
                other => self.fail(format!("repair write failed: {other:?}")),
            }
            if self.store().damaged_objects().contains_key(&damaged_oid) {
                let summary = self.store().debug_summary();
                self.fail(format!(
                    "object {object} still damaged after a whole-block write: {summary}"
                ));
            }
        }
        self.sync();
    }

    /// Every object reads back exactly as the model says (data only).
    fn check_data(&mut self) {
        for object in 0..OBJECTS as usize {
            let (_, ids) = self.read_object(object).unwrap_or_else(|e| self.fail(e));
            let expected = self.model[object].current();
            if ids != expected {
                self.fail(format!("object {object}: read {ids:?}, model {expected:?}"));
            }
        }
    }
}
