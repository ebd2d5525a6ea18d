//! Objects by PG, so that listing one PG (peering, scrub) looks only at that PG's
//! objects instead of every object on the OSD (a 1 TB OSD holds ~8M objects; a startup
//! peers hundreds of PGs).
//!
//! The PG of an object depends on its pool's `pg_count` and `pg_stripe_size`, which only
//! the caller knows, so each pool's index is built on the first listing that names them
//! (one pass over the store) and rebuilt when they change. From then on every object the
//! store starts a version chain for is added ([`PgIndex::object_added`]). Objects are
//! never removed here: a PG's list is a superset of its objects (purged ones stay until
//! that PG is listed again, which prunes them), so a listing checks each candidate
//! against the store.

use super::clean_index::CleanIndex;
use super::dirty::DirtyMap;
use hashbrown::HashMap;
use vitastor_proto::placement::pg_of_stripe;
use vitastor_proto::ObjectId;

#[derive(Debug, Default)]
pub(super) struct PgIndex {
    pools: HashMap<u64, PoolIndex>,
}

#[derive(Debug)]
struct PoolIndex {
    pg_count: u32,
    pg_stripe_size: u64,
    by_pg: HashMap<u32, PgObjects>,
}

/// One PG's candidates, and their count after the last sort and dedup (an object
/// rewritten after each flush is pushed again each time: deduplicating whenever the
/// list doubles keeps it within twice the PG's objects, at O(log n) per push).
#[derive(Debug, Default)]
struct PgObjects {
    oids: Vec<ObjectId>,
    deduped: usize,
}

impl PgObjects {
    fn push(&mut self, oid: ObjectId) {
        self.oids.push(oid);
        if self.oids.len() > 2 * self.deduped + 64 {
            self.dedup();
        }
    }

    fn dedup(&mut self) {
        self.oids.sort_unstable();
        self.oids.dedup();
        self.deduped = self.oids.len();
    }
}

impl PoolIndex {
    fn pg_of(&self, oid: &ObjectId) -> u32 {
        pg_of_stripe(oid.stripe, self.pg_stripe_size, self.pg_count).get()
    }
}

fn pool_of(oid: &ObjectId) -> u64 {
    oid.inode >> 48
}

impl PgIndex {
    /// The objects of PG `pg_num` of pool `pool` that may exist (sorted, without
    /// duplicates; some may have been purged), building the pool's index if needed.
    pub fn candidates(
        &mut self,
        pool: u64,
        (pg_num, pg_count, pg_stripe_size): (u32, u32, u64),
        clean: &CleanIndex,
        dirty: &DirtyMap,
    ) -> &mut Vec<ObjectId> {
        let stale = self
            .pools
            .get(&pool)
            .is_none_or(|p| p.pg_count != pg_count || p.pg_stripe_size != pg_stripe_size);
        if stale {
            let mut index = PoolIndex {
                pg_count,
                pg_stripe_size,
                by_pg: HashMap::new(),
            };
            let oids = clean
                .iter()
                .map(|(oid, _)| oid)
                .chain(dirty.keys().copied());
            for oid in oids.filter(|oid| pool_of(oid) == pool) {
                let pg = index.pg_of(&oid);
                index.by_pg.entry(pg).or_default().oids.push(oid);
            }
            self.pools.insert(pool, index);
        }
        let objects = self
            .pools
            .get_mut(&pool)
            .expect("built above")
            .by_pg
            .entry(pg_num)
            .or_default();
        objects.dedup();
        &mut objects.oids
    }

    /// After a listing pruned a PG's purged objects from its candidates.
    pub fn pruned(&mut self, pool: u64, pg_num: u32) {
        if let Some(objects) = self
            .pools
            .get_mut(&pool)
            .and_then(|p| p.by_pg.get_mut(&pg_num))
        {
            objects.deduped = objects.oids.len();
        }
    }

    /// The store started a version chain for `oid` (it may be new).
    pub fn object_added(&mut self, oid: ObjectId) {
        if let Some(index) = self.pools.get_mut(&pool_of(&oid)) {
            let pg = index.pg_of(&oid);
            index.by_pg.entry(pg).or_default().push(oid);
        }
    }
}
