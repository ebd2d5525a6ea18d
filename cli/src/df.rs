//! `vitastor-cli df`: per-pool space, computed from the monitor's `/pool/stats/<pool>` the
//! way Vitastor's CLI does, so both CLIs print the same numbers for the same cluster:
//!
//! - total = `total_raw_tb` / `raw_to_usable`, used = `used_raw_tb` / `raw_to_usable`
//!   (`raw_to_usable` = raw bytes per usable byte: pg_size for replicas, (k+m)/k for EC);
//! - max available = the free space of the OSD that fills first: for every OSD in the
//!   pool's sets, `free x reweight x pg_count / (PG slots it serves)`, the minimum, times
//!   the data chunks for EC;
//! - used % = 100 - 100 x max available x `raw_to_usable` / `total_raw`.

use crate::cluster::{block_on, prefix};
use crate::etcd::Context;
use crate::output;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use vitastor_proto::etcd::PoolConfig;
use vitastor_proto::size::format_size;

const TB: f64 = (1u64 << 40) as f64;

/// One pool's row.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpace {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub max_available_bytes: u64,
    pub used_percent: f64,
    pub space_efficiency: f64,
}

/// The OSD sets of one pool, its `/pool/stats` value, and per OSD `(free bytes, reweight)`.
pub fn pool_space(
    pool: &PoolConfig,
    sets: &[&[u64]],
    stats: &Value,
    osd_free: &BTreeMap<u64, (u64, f64)>,
) -> PoolSpace {
    let mut raw_to_usable = stats["raw_to_usable"].as_f64().unwrap_or(0.0);
    if raw_to_usable.abs() < 1e-6 {
        // Vitastor's CLI treats a missing ratio as 1; an absent key here means no
        // monitor has written stats yet, so the pool's own ratio is closer.
        raw_to_usable = f64::from(pool.pg_size) / f64::from(pool.data_chunks().max(1));
    }
    let total_raw = stats["total_raw_tb"].as_f64().unwrap_or(0.0) * TB;
    let used_raw = stats["used_raw_tb"].as_f64().unwrap_or(0.0) * TB;
    let mut slots = BTreeMap::<u64, u64>::new();
    for set in sets {
        for osd in set.iter().filter(|osd| **osd != 0) {
            *slots.entry(*osd).or_default() += 1;
        }
    }
    let max_available = slots
        .iter()
        .map(|(osd, count)| {
            let (free, reweight) = osd_free.get(osd).copied().unwrap_or((0, 1.0));
            free as f64 * reweight * sets.len() as f64 / *count as f64
        })
        .fold(None, |min: Option<f64>, x| {
            Some(min.map_or(x, |m| m.min(x)))
        })
        .unwrap_or(0.0)
        * f64::from(pool.data_chunks().max(1));
    let used_percent = if total_raw > 0.0 {
        (100.0 - 100.0 * max_available * raw_to_usable / total_raw).clamp(0.0, 100.0)
    } else {
        100.0
    };
    PoolSpace {
        total_bytes: (total_raw / raw_to_usable) as u64,
        used_bytes: (used_raw / raw_to_usable) as u64,
        max_available_bytes: max_available as u64,
        used_percent,
        space_efficiency: stats["space_efficiency"].as_f64().unwrap_or(1.0),
    }
}

pub fn df(ctx: &Context) -> Result<(), String> {
    let state = ctx.state();
    let pool_stats = block_on(prefix(ctx, "/pool/stats/"))?;
    let osd_stats = block_on(prefix(ctx, "/osd/stats/"))?;
    let osd_config = block_on(prefix(ctx, "/config/osd/"))?;
    let osd_free: BTreeMap<u64, (u64, f64)> = osd_stats
        .iter()
        .filter_map(|(osd, stats)| {
            let osd_config = osd_config.get(osd).cloned().unwrap_or(Value::Null);
            let reweight = osd_config["reweight"].as_f64().unwrap_or(1.0);
            Some((osd.parse().ok()?, (stats["free"].as_u64()?, reweight)))
        })
        .collect();
    let rows: Vec<(String, String, PoolSpace)> = state
        .view
        .pools
        .iter()
        .map(|(id, pool)| {
            let pool_num = id.get();
            let sets: Vec<&[u64]> = state
                .view
                .pg_config
                .range((pool_num, 0)..=(pool_num, u32::MAX))
                .map(|(_, item)| item.osd_set.as_slice())
                .collect();
            let stats = pool_stats
                .get(&pool_num.to_string())
                .cloned()
                .unwrap_or(Value::Null);
            let scheme = format!("{:?}", pool.scheme).to_lowercase();
            let space = pool_space(pool, &sets, &stats, &osd_free);
            (pool.name.clone(), scheme, space)
        })
        .collect();
    if ctx.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(name, scheme, s)| {
                json!({"name": name, "scheme": scheme, "total_usable": s.total_bytes,
                    "used_usable": s.used_bytes, "max_available": s.max_available_bytes,
                    "used_pct": s.used_percent, "space_efficiency": s.space_efficiency})
            })
            .collect();
        output::json(&json!(list));
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, scheme, s)| {
            vec![
                name.clone(),
                scheme.clone(),
                format_size(s.total_bytes),
                format_size(s.used_bytes),
                format_size(s.max_available_bytes),
                format!("{:.1}%", s.used_percent),
                format!("{:.1}%", s.space_efficiency * 100.0),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "SCHEME",
            "TOTAL",
            "USED",
            "AVAILABLE",
            "USED%",
            "EFFICIENCY",
        ],
        &table,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(json: &str) -> PoolConfig {
        serde_json::from_str(json).expect("valid pool")
    }

    /// Issue 18: an empty 2-replica pool on two OSDs of 1.4 GiB each shows 1.4 GiB total,
    /// nothing used, 1.4 GiB available, 0% used (the inverted ratio showed 5.6 G and 75%).
    #[test]
    fn empty_replicated_pool_is_its_osd_size_and_unused() {
        let pool =
            pool(r#"{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":2}"#);
        let gib = 1u64 << 30;
        let osd_size = 1.4 * gib as f64;
        let stats = json!({"total_raw_tb": 2.0 * osd_size / TB, "used_raw_tb": 0.0,
            "raw_to_usable": 2.0, "space_efficiency": 1.0, "pg_real_size": 2});
        let free = BTreeMap::from([(1, (osd_size as u64, 1.0)), (2, (osd_size as u64, 1.0))]);
        let sets: [&[u64]; 2] = [&[1, 2], &[2, 1]];
        let space = pool_space(&pool, &sets, &stats, &free);
        assert!(
            (space.total_bytes as f64 - osd_size).abs() < 2.0,
            "{space:?}"
        );
        assert_eq!(space.used_bytes, 0);
        assert!((space.max_available_bytes as f64 - osd_size).abs() < 2.0);
        assert!(space.used_percent.abs() < 0.01, "{space:?}");
    }

    #[test]
    fn ec_pool_divides_raw_by_k_plus_m_over_k() {
        let pool = pool(
            r#"{"name":"e","scheme":"ec","pg_size":3,"parity_chunks":1,"pg_minsize":2,"pg_count":1}"#,
        );
        let stats = json!({"total_raw_tb": 3.0, "used_raw_tb": 1.5, "raw_to_usable": 1.5});
        let free = BTreeMap::from([
            (1, (1u64 << 40, 1.0)),
            (2, (1 << 40, 1.0)),
            (3, (1 << 40, 1.0)),
        ]);
        let sets: [&[u64]; 1] = [&[1, 2, 3]];
        let space = pool_space(&pool, &sets, &stats, &free);
        assert_eq!(space.total_bytes, 2 << 40);
        assert_eq!(space.used_bytes, 1 << 40);
        assert_eq!(
            space.max_available_bytes,
            2 << 40,
            "free per OSD x data chunks"
        );
    }
}
