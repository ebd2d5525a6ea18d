//! The monitor's decision: the PG map every pool should have now, and the history entries
//! that must go with it. Pure: a [`MonState`] and the time in, a [`Decision`] out.
//!
//! Per pool:
//! - Candidates: OSDs that reported a size, have reweight > 0, carry the pool's `osd_tags`,
//!   lie under its `root_node`, and are in (up, or down for less than `osd_out_time`, or
//!   `noout`). Weight = size x reweight; domain = ancestor at `failure_domain`.
//! - A pool whose `pg_count` differs from the PGs in the map is changed in two steps: first
//!   all its PGs are paused (OSDs stop serving them), then, once no `/pg/state` of the pool
//!   is left, the new PGs are written with history pointing at every old PG whose objects
//!   they may now hold.
//! - Otherwise the LP placement runs from the current map. A PG whose set changes gets
//!   its old set added to `/pg/history` (`osd_sets`, `all_peers`), so its new primary
//!   looks for data there; the OSDs drop history once the PG is clean.
//! - A pool with no candidates at all keeps its map as it is (losing every OSD's stats must
//!   not wipe a placement).

use crate::placement::{place_pool, Candidate, PoolRequest};
use crate::state::MonState;
use crate::tree::PlacementTree;
use std::collections::{BTreeMap, BTreeSet};
use vitastor_proto::cluster::PgKey;
use vitastor_proto::etcd::{PgConfig, PgConfigItem, PgHistory, PoolConfig};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// The full new `/pg/config`.
    pub pg_config: PgConfig,
    /// `/pg/history/<pool>/<pg>` values to write with it.
    pub history: BTreeMap<PgKey, PgHistory>,
    /// Whether `pg_config` differs from what etcd has.
    pub changed: bool,
    /// Per pool: uniformity of the placement (ideal/max load), for stats.
    pub uniformity: BTreeMap<u32, f64>,
    /// What happened, for the log.
    pub notes: Vec<String>,
}

pub fn decide(state: &MonState, now: f64, osd_out_time: f64) -> Decision {
    let mut decision = Decision::default();
    let hosts: BTreeMap<u64, Option<String>> = state
        .osd_stats
        .iter()
        .map(|(&osd, stats)| {
            let host = stats
                .host
                .clone()
                .or_else(|| state.view.osd_states.get(&osd).and_then(|s| s.host.clone()));
            (osd, host)
        })
        .collect();
    let (tree, problems) = PlacementTree::build(
        &state.node_placement,
        &hosts,
        state.view.global.placement_levels.as_ref(),
    );
    decision.notes.extend(problems);

    let mut current: BTreeMap<u32, BTreeMap<u32, PgConfigItem>> = BTreeMap::new();
    for (&(pool, pg), item) in &state.view.pg_config {
        current.entry(pool).or_default().insert(pg, item.clone());
    }
    let mut items: BTreeMap<u32, BTreeMap<u32, PgConfigItem>> = BTreeMap::new();
    for (pool_id, pool) in &state.view.pools {
        let pool_num = pool_id.get();
        let old = current.remove(&pool_num).unwrap_or_default();
        let candidates = pool_candidates(state, &tree, pool, now, osd_out_time);
        if candidates.is_empty() {
            if !old.is_empty() {
                decision.notes.push(format!(
                    "pool {pool_num} ({}): no OSD can hold it now; its PG map stays as it is",
                    pool.name
                ));
            }
            items.insert(pool_num, old);
            continue;
        }
        let new = if !old.is_empty() && old.len() != pool.pg_count as usize {
            resize_pool(state, &mut decision, pool_num, pool, &old, candidates)
        } else {
            place(
                &mut decision,
                pool_num,
                pool,
                &old,
                candidates,
                &state.view.pg_history,
            )
        };
        items.insert(pool_num, new);
    }
    if !current.is_empty() {
        decision.notes.push(format!(
            "pools {:?} are gone from /config/pools; their PGs leave the map",
            current.keys().collect::<Vec<_>>()
        ));
    }
    for (pool, pgs) in items {
        if pgs.is_empty() {
            continue;
        }
        decision.pg_config.items.insert(
            pool.to_string(),
            pgs.into_iter()
                .map(|(pg, item)| (pg.to_string(), item))
                .collect(),
        );
    }
    let old_items: BTreeMap<PgKey, &PgConfigItem> =
        state.view.pg_config.iter().map(|(k, v)| (*k, v)).collect();
    let new_items: BTreeMap<PgKey, &PgConfigItem> = decision
        .pg_config
        .items
        .iter()
        .flat_map(|(pool, pgs)| {
            pgs.iter()
                .filter_map(move |(pg, item)| Some(((pool.parse().ok()?, pg.parse().ok()?), item)))
        })
        .collect();
    // An unparsable /pg/config in etcd is rewritten even when the map we decided equals
    // the last valid one we hold.
    decision.changed = old_items != new_items || state.view.pg_config_error.is_some();
    decision
}

fn pool_candidates(
    state: &MonState,
    tree: &PlacementTree,
    pool: &PoolConfig,
    now: f64,
    osd_out_time: f64,
) -> Vec<Candidate> {
    let default_config = Default::default();
    state
        .osd_stats
        .iter()
        .filter(|(_, stats)| stats.size > 0)
        .filter_map(|(&osd, stats)| {
            let config: &vitastor_proto::etcd::OsdConfig =
                state.osd_config.get(&osd).unwrap_or(&default_config);
            let reweight = config.reweight();
            if reweight <= 0.0
                || !pool.osd_tags.iter().all(|tag| config.tags.contains(tag))
                || pool
                    .root_node
                    .as_deref()
                    .is_some_and(|root| !tree.is_under(osd, root))
                || !state.is_in(osd, now, osd_out_time)
            {
                return None;
            }
            Some(Candidate {
                osd,
                domain: tree.domain_of(osd, pool.failure_domain()),
                weight: stats.size as f64 * reweight,
                up: state.view.is_up(osd),
            })
        })
        .collect()
}

fn place(
    decision: &mut Decision,
    pool_num: u32,
    pool: &PoolConfig,
    old: &BTreeMap<u32, PgConfigItem>,
    candidates: Vec<Candidate>,
    histories: &BTreeMap<PgKey, PgHistory>,
) -> BTreeMap<u32, PgConfigItem> {
    let request = PoolRequest {
        pg_count: pool.pg_count,
        pg_size: pool.pg_size,
        current_sets: old
            .iter()
            .map(|(&pg, item)| (pg, item.osd_set.clone()))
            .collect(),
        current_primaries: old.iter().map(|(&pg, item)| (pg, item.primary)).collect(),
        candidates: candidates.clone(),
    };
    let placement = match place_pool(&request) {
        Ok(placement) => placement,
        Err(error) => {
            decision.notes.push(format!(
                "pool {pool_num} ({}): placement failed, PG map unchanged: {error}",
                pool.name
            ));
            return old.clone();
        }
    };
    decision
        .uniformity
        .insert(pool_num, uniformity(&candidates, &placement.sets));
    if placement.moved_slots > 0 && !old.is_empty() {
        decision.notes.push(format!(
            "pool {pool_num} ({}): {} PG slots move",
            pool.name, placement.moved_slots
        ));
    }
    let mut items = BTreeMap::new();
    for (pg, set) in placement.sets {
        let primary = placement.primaries[&pg];
        if let Some(previous) = old.get(&pg) {
            if previous.osd_set != set && previous.osd_set.iter().any(|&o| o != 0) {
                let key = (pool_num, pg);
                let mut history = histories.get(&key).cloned().unwrap_or_default();
                add_to_history(&mut history, &previous.osd_set);
                decision.history.insert(key, history);
            }
        }
        items.insert(
            pg,
            PgConfigItem {
                osd_set: set,
                primary,
                pause: false,
            },
        );
    }
    items
}

fn add_to_history(history: &mut PgHistory, set: &[u64]) {
    if !history.osd_sets.iter().any(|s| s == set) {
        history.osd_sets.push(set.to_vec());
    }
    let mut peers: BTreeSet<u64> = history.all_peers.iter().copied().collect();
    peers.extend(set.iter().copied().filter(|&o| o != 0));
    history.all_peers = peers.into_iter().collect();
}

/// `pg_count` changed: pause, wait for the OSDs to stop, then place the new PGs.
fn resize_pool(
    state: &MonState,
    decision: &mut Decision,
    pool_num: u32,
    pool: &PoolConfig,
    old: &BTreeMap<u32, PgConfigItem>,
    candidates: Vec<Candidate>,
) -> BTreeMap<u32, PgConfigItem> {
    if old.values().any(|item| !item.pause) {
        decision.notes.push(format!(
            "pool {pool_num} ({}): pg_count {} -> {}: pausing its PGs first",
            pool.name,
            old.len(),
            pool.pg_count
        ));
        return old
            .iter()
            .map(|(&pg, item)| {
                (
                    pg,
                    PgConfigItem {
                        pause: true,
                        ..item.clone()
                    },
                )
            })
            .collect();
    }
    let still_served = state
        .view
        .pg_states
        .keys()
        .filter(|(p, _)| *p == pool_num)
        .count();
    if still_served > 0 {
        decision.notes.push(format!(
            "pool {pool_num} ({}): waiting for {still_served} paused PGs to stop before changing pg_count",
            pool.name
        ));
        return old.clone();
    }
    // Objects of stripe s live in PG s % count + 1: new PG n may hold objects of every old
    // PG j with j = n (mod gcd(old, new)).
    let old_count = old.len() as u32;
    let step = gcd(old_count, pool.pg_count);
    let mut histories = BTreeMap::new();
    for n in 1..=pool.pg_count {
        let mut history = state
            .view
            .pg_history
            .get(&(pool_num, n))
            .cloned()
            .unwrap_or_default();
        for (&j, item) in old {
            if (j - 1) % step == (n - 1) % step {
                add_to_history(&mut history, &item.osd_set);
                if let Some(old_history) = state.view.pg_history.get(&(pool_num, j)) {
                    for set in &old_history.osd_sets {
                        add_to_history(&mut history, set);
                    }
                    // OSDs that may hold old copies or tombstones of the old PG's objects
                    // keep blocking purges (and are listed) in the new PG.
                    let mut peers: BTreeSet<u64> = history.all_peers.iter().copied().collect();
                    peers.extend(old_history.all_peers.iter().copied());
                    history.all_peers = peers.into_iter().collect();
                }
            }
        }
        histories.insert(n, history);
    }
    // New PG n starts from old PG n's set where there was one: less data moves when the
    // count grows by a multiple.
    let seed: BTreeMap<u32, PgConfigItem> = old
        .iter()
        .filter(|(&pg, _)| pg <= pool.pg_count)
        .map(|(&pg, item)| {
            (
                pg,
                PgConfigItem {
                    pause: false,
                    ..item.clone()
                },
            )
        })
        .collect();
    let mut placed = place(
        decision,
        pool_num,
        pool,
        &seed,
        candidates,
        &BTreeMap::new(),
    );
    for (n, history) in histories {
        decision.history.insert((pool_num, n), history);
    }
    for item in placed.values_mut() {
        item.pause = false;
    }
    decision.notes.push(format!(
        "pool {pool_num} ({}): pg_count is now {}",
        pool.name, pool.pg_count
    ));
    placed
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// ideal / max over OSDs of (slots / ideal slots by weight).
pub fn uniformity(candidates: &[Candidate], sets: &BTreeMap<u32, Vec<u64>>) -> f64 {
    let mut slots: BTreeMap<u64, f64> = BTreeMap::new();
    for set in sets.values() {
        for &osd in set.iter().filter(|&&o| o != 0) {
            *slots.entry(osd).or_default() += 1.0;
        }
    }
    let total_slots: f64 = slots.values().sum();
    let total_weight: f64 = candidates.iter().map(|c| c.weight).sum();
    if total_slots == 0.0 || total_weight == 0.0 {
        return 1.0;
    }
    let worst = candidates
        .iter()
        .filter(|c| c.weight > 0.0)
        .map(|c| {
            slots.get(&c.osd).copied().unwrap_or(0.0) / (total_slots * c.weight / total_weight)
        })
        .fold(0.0, f64::max);
    if worst > 0.0 {
        1.0 / worst
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests;
