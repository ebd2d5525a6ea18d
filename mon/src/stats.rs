//! Aggregates the monitor writes (`/pool/stats/<pool>`, `/stats`) and the Prometheus text
//! it serves, computed from `/osd/stats`, `/osd/state`, `/pg/state` and `/pgstats`.

use crate::state::MonState;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write;

const TB: f64 = (1u64 << 40) as f64;

/// Sums counters that OSDs report as `{"<op>": {"count": n, "bytes": n, ...}}` (or bare
/// numbers), field by field; anything that is not a number is skipped.
fn sum_counters<'a>(tables: impl Iterator<Item = &'a Value>) -> Map<String, Value> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut plain: BTreeMap<String, f64> = BTreeMap::new();
    for table in tables.filter_map(Value::as_object) {
        for (name, value) in table {
            match value {
                Value::Object(fields) => {
                    let entry = out.entry(name.clone()).or_default();
                    for (field, number) in fields {
                        if let Some(n) = number.as_f64() {
                            *entry.entry(field.clone()).or_default() += n;
                        }
                    }
                }
                other => {
                    if let Some(n) = other.as_f64() {
                        *plain.entry(name.clone()).or_default() += n;
                    }
                }
            }
        }
    }
    let mut map = Map::new();
    for (name, fields) in out {
        map.insert(
            name,
            json!(fields
                .into_iter()
                .map(|(f, n)| (f, n as u64))
                .collect::<BTreeMap<_, _>>()),
        );
    }
    for (name, n) in plain {
        map.insert(name, json!(n as u64));
    }
    map
}

/// PG count per base state of each pool; PGs in the map with no `/pg/state` are `offline`.
pub fn pg_state_counts(state: &MonState) -> BTreeMap<u32, BTreeMap<String, u64>> {
    let mut counts: BTreeMap<u32, BTreeMap<String, u64>> = BTreeMap::new();
    for key in state.view.pg_config.keys() {
        let base = state
            .view
            .pg_states
            .get(key)
            .and_then(|s| s.base_state())
            .unwrap_or("offline");
        *counts
            .entry(key.0)
            .or_default()
            .entry(base.to_string())
            .or_default() += 1;
        if let Some(pg_state) = state.view.pg_states.get(key) {
            for flag in pg_state.state.iter().filter(|s| s.as_str() != base) {
                *counts
                    .entry(key.0)
                    .or_default()
                    .entry(flag.clone())
                    .or_default() += 1;
            }
        }
    }
    counts
}

/// Vitastor's `raw_to_usable`: raw bytes per usable byte, `pg_real_size` for replicated
/// pools (2 for two replicas) and `pg_real_size / data_chunks` for EC/XOR ((k+m)/k).
/// Readers divide raw sizes by it (`vitastor-cli df`).
pub fn raw_to_usable(pg_real_size: u32, data_chunks: u32) -> f64 {
    f64::from(pg_real_size) / f64::from(data_chunks.max(1))
}

/// The raw space a pool's placement can use, as Vitastor's monitor estimates it.
struct PoolSpace {
    /// Smallest number of OSDs in any PG set of the pool (`pg_size` when all are full).
    pg_real_size: u32,
    /// `pg_real_size` x the most data one set slot can take before some member is full:
    /// a PG is picked in 1/pg_count of the cases, an OSD serving x PG slots fills at
    /// `size * pg_count / x`, and the first OSD to fill bounds the pool.
    total_raw_bytes: f64,
    /// Sum of the sizes of the OSDs the pool's sets use (`space_efficiency` divisor).
    member_bytes: u64,
}

impl PoolSpace {
    fn of(state: &MonState, pool_num: u32, pg_size: u32) -> PoolSpace {
        let mut slots = BTreeMap::<u64, u64>::new();
        let mut pg_real_size = pg_size;
        let mut pg_count = 0u64;
        for (_, item) in state
            .view
            .pg_config
            .range((pool_num, 0)..=(pool_num, u32::MAX))
        {
            pg_count += 1;
            let members = item.osd_set.iter().filter(|osd| **osd != 0);
            let size = members.clone().count() as u32;
            if size > 0 {
                pg_real_size = pg_real_size.min(size);
            }
            for osd in members {
                *slots.entry(*osd).or_default() += 1;
            }
        }
        let mut per_slot: Option<f64> = None;
        let mut member_bytes = 0;
        for (osd, count) in &slots {
            let Some(stats) = state.osd_stats.get(osd) else {
                continue;
            };
            member_bytes += stats.size;
            let estimate = stats.size as f64 * pg_count as f64 / *count as f64;
            per_slot = Some(per_slot.map_or(estimate, |s: f64| s.min(estimate)));
        }
        PoolSpace {
            pg_real_size,
            total_raw_bytes: per_slot.unwrap_or(0.0) * f64::from(pg_real_size),
            member_bytes,
        }
    }
}

/// `/pool/stats/<pool>` values and the `/stats` value.
pub fn aggregate(
    state: &MonState,
    uniformity: &BTreeMap<u32, f64>,
) -> (BTreeMap<u32, Value>, Value) {
    let pg_counts = pg_state_counts(state);
    let total_raw: u64 = state.osd_stats.values().map(|s| s.size).sum();
    let free_raw: u64 = state.osd_stats.values().map(|s| s.free).sum();
    let mut pools = BTreeMap::new();
    let mut cluster_objects = BTreeMap::<&str, u64>::new();
    for (pool_id, pool) in &state.view.pools {
        let pool_num = pool_id.get();
        let block_size = u64::from(pool.block_size.unwrap_or(state.view.global.block_size()));
        let mut objects = BTreeMap::<&str, u64>::new();
        for (_, stats) in state.pgstats.range((pool_num, 0)..=(pool_num, u32::MAX)) {
            for (name, n) in [
                ("object", stats.object_count),
                ("clean", stats.clean_count),
                ("misplaced", stats.misplaced_count),
                ("degraded", stats.degraded_count),
                ("incomplete", stats.incomplete_count),
            ] {
                *objects.entry(name).or_default() += n;
                *cluster_objects.entry(name).or_default() += n;
            }
        }
        let object_count = objects.get("object").copied().unwrap_or(0);
        let space = PoolSpace::of(state, pool_num, pool.pg_size);
        // Each object has at most one block per member of its set.
        let used_raw = object_count * block_size * u64::from(space.pg_real_size);
        let efficiency = if space.member_bytes > 0 {
            space.total_raw_bytes / space.member_bytes as f64
        } else {
            uniformity.get(&pool_num).copied().unwrap_or(1.0)
        };
        pools.insert(
            pool_num,
            json!({
                "used_raw_tb": used_raw as f64 / TB,
                "total_raw_tb": space.total_raw_bytes / TB,
                "raw_to_usable": raw_to_usable(space.pg_real_size, pool.data_chunks()),
                "space_efficiency": efficiency,
                "pg_real_size": space.pg_real_size,
                "pg_states": pg_counts.get(&pool_num).cloned().unwrap_or_default(),
                "object_counts": objects,
            }),
        );
    }
    let up = state
        .osd_stats
        .keys()
        .filter(|&&osd| state.view.is_up(osd))
        .count();
    let cluster = json!({
        "op_stats": sum_counters(state.osd_stats.values().map(|s| &s.op_stats)),
        "subop_stats": sum_counters(state.osd_stats.values().map(|s| &s.subop_stats)),
        "recovery_stats": sum_counters(state.osd_stats.values().map(|s| &s.recovery_stats)),
        "object_counts": cluster_objects,
        "osd_count": {"up": up, "total": state.osd_stats.len()},
        "total_raw_bytes": total_raw,
        "free_raw_bytes": free_raw,
    });
    (pools, cluster)
}

/// Operation rates from two `/stats` samples taken `seconds` apart.
pub fn op_rates(previous: &Value, current: &Value, seconds: f64) -> BTreeMap<String, f64> {
    let mut rates = BTreeMap::new();
    let (Some(before), Some(after)) = (
        previous["op_stats"].as_object(),
        current["op_stats"].as_object(),
    ) else {
        return rates;
    };
    for (op, counters) in after {
        let now = counters["count"].as_f64().unwrap_or(0.0);
        let then = before
            .get(op)
            .and_then(|c| c["count"].as_f64())
            .unwrap_or(0.0);
        if seconds > 0.0 && now >= then {
            rates.insert(op.clone(), (now - then) / seconds);
        }
    }
    rates
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of the cluster's state.
pub fn prometheus_text(
    state: &MonState,
    pools: &BTreeMap<u32, Value>,
    cluster: &Value,
    rates: &BTreeMap<String, f64>,
    is_master: bool,
) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# HELP vitastor_mon_master 1 if this monitor is the master\n# TYPE vitastor_mon_master gauge");
    let _ = writeln!(text, "vitastor_mon_master {}", u8::from(is_master));

    let mut osds: Vec<u64> = state
        .osd_stats
        .keys()
        .chain(state.view.osd_states.keys())
        .copied()
        .collect();
    osds.sort_unstable();
    osds.dedup();
    let _ = writeln!(text, "# HELP vitastor_osd_up 1 if the OSD holds its /osd/state lease\n# TYPE vitastor_osd_up gauge");
    for &osd in &osds {
        let _ = writeln!(
            text,
            "vitastor_osd_up{{osd=\"{osd}\"}} {}",
            u8::from(state.view.is_up(osd))
        );
    }
    let _ = writeln!(
        text,
        "# HELP vitastor_osd_size_bytes Data area size\n# TYPE vitastor_osd_size_bytes gauge"
    );
    for (osd, stats) in &state.osd_stats {
        let _ = writeln!(
            text,
            "vitastor_osd_size_bytes{{osd=\"{osd}\"}} {}",
            stats.size
        );
    }
    let _ = writeln!(
        text,
        "# HELP vitastor_osd_free_bytes Free data space\n# TYPE vitastor_osd_free_bytes gauge"
    );
    for (osd, stats) in &state.osd_stats {
        let _ = writeln!(
            text,
            "vitastor_osd_free_bytes{{osd=\"{osd}\"}} {}",
            stats.free
        );
    }
    let name_of = |pool: u32| {
        vitastor_proto::PoolId::new(pool)
            .ok()
            .and_then(|id| state.view.pools.get(&id))
            .map(|p| escape(&p.name))
            .unwrap_or_default()
    };
    let _ = writeln!(text, "# HELP vitastor_pool_pgs PGs of a pool by state (base states and flags)\n# TYPE vitastor_pool_pgs gauge");
    for (pool, counts) in pg_state_counts(state) {
        for (pg_state, n) in counts {
            let _ = writeln!(
                text,
                "vitastor_pool_pgs{{pool=\"{pool}\",pool_name=\"{}\",state=\"{}\"}} {n}",
                name_of(pool),
                escape(&pg_state)
            );
        }
    }
    let _ = writeln!(text, "# HELP vitastor_pool_used_raw_bytes Raw space used by a pool\n# TYPE vitastor_pool_used_raw_bytes gauge");
    for (pool, stats) in pools {
        let used = stats["used_raw_tb"].as_f64().unwrap_or(0.0) * TB;
        let _ = writeln!(
            text,
            "vitastor_pool_used_raw_bytes{{pool=\"{pool}\",pool_name=\"{}\"}} {used:.0}",
            name_of(*pool)
        );
    }
    let _ = writeln!(text, "# HELP vitastor_cluster_raw_bytes Raw space of all OSDs\n# TYPE vitastor_cluster_raw_bytes gauge");
    let _ = writeln!(
        text,
        "vitastor_cluster_raw_bytes{{kind=\"total\"}} {}",
        cluster["total_raw_bytes"]
    );
    let _ = writeln!(
        text,
        "vitastor_cluster_raw_bytes{{kind=\"free\"}} {}",
        cluster["free_raw_bytes"]
    );
    let _ = writeln!(text, "# HELP vitastor_ops_total Client operations served by primaries\n# TYPE vitastor_ops_total counter");
    if let Some(ops) = cluster["op_stats"].as_object() {
        for (op, counters) in ops {
            let _ = writeln!(
                text,
                "vitastor_ops_total{{op=\"{}\"}} {}",
                escape(op),
                counters["count"].as_u64().unwrap_or(0)
            );
        }
        let _ = writeln!(text, "# HELP vitastor_op_bytes_total Bytes of client operations\n# TYPE vitastor_op_bytes_total counter");
        for (op, counters) in ops {
            let _ = writeln!(
                text,
                "vitastor_op_bytes_total{{op=\"{}\"}} {}",
                escape(op),
                counters["bytes"].as_u64().unwrap_or(0)
            );
        }
    }
    let _ = writeln!(text, "# HELP vitastor_op_rate Client operations per second over the last stats interval\n# TYPE vitastor_op_rate gauge");
    for (op, rate) in rates {
        let _ = writeln!(text, "vitastor_op_rate{{op=\"{}\"}} {rate:.1}", escape(op));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_and_metrics_from_synthetic_keys() {
        let mut state = MonState::default();
        let pools = br#"{"1":{"name":"p\"q","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":2}}"#;
        state.apply("/config/pools", Some(pools), 1, 0.0);
        for osd in [1, 2] {
            let stats = format!(
                r#"{{"time":"1","size":1000,"free":400,"op_stats":{{"write":{{"count":{osd}0,"bytes":4096}}}},"recovery_stats":{{"objects":1}}}}"#
            );
            state.apply(&format!("/osd/stats/{osd}"), Some(stats.as_bytes()), 1, 0.0);
        }
        state.apply("/osd/state/1", Some(br#"{"state":"up","port":1}"#), 1, 0.0);
        state.apply(
            "/pg/config",
            Some(br#"{"items":{"1":{"1":{"osd_set":[1,2],"primary":1},"2":{"osd_set":[2,1],"primary":1}}}}"#),
            1,
            0.0,
        );
        state.apply(
            "/pg/state/1/1",
            Some(br#"{"primary":1,"state":["active","degraded"],"peers":[1]}"#),
            1,
            0.0,
        );
        state.apply(
            "/pgstats/1/1",
            Some(br#"{"object_count":3,"clean_count":0,"degraded_count":3}"#),
            1,
            0.0,
        );
        let (pools, cluster) = aggregate(&state, &BTreeMap::from([(1, 0.98)]));
        assert_eq!(cluster["op_stats"]["write"]["count"], 30);
        assert_eq!(cluster["recovery_stats"]["objects"], 2);
        assert_eq!(cluster["object_counts"]["degraded"], 3);
        assert_eq!(cluster["osd_count"]["up"], 1);
        assert_eq!(pools[&1]["pg_states"]["active"], 1);
        assert_eq!(pools[&1]["pg_states"]["offline"], 1);
        let used = pools[&1]["used_raw_tb"].as_f64().unwrap() * TB;
        assert_eq!(used as u64, 3 * 131072 * 2);
        // Issue 18: Vitastor's meaning. Two replicas: 2 raw bytes per usable byte; both
        // OSDs (1000 bytes each) serve both PGs, so the pool holds 1000 bytes per slot.
        assert_eq!(pools[&1]["raw_to_usable"], 2.0);
        assert_eq!(pools[&1]["pg_real_size"], 2);
        let total = pools[&1]["total_raw_tb"].as_f64().unwrap() * TB;
        assert!((total - 2000.0).abs() < 0.01, "{total}");
        assert_eq!(pools[&1]["space_efficiency"], 1.0);

        let mut later = cluster.clone();
        later["op_stats"]["write"]["count"] = json!(50);
        let rates = op_rates(&cluster, &later, 2.0);
        assert_eq!(rates["write"], 10.0);
        let text = prometheus_text(&state, &pools, &later, &rates, true);
        assert!(text.contains("vitastor_mon_master 1"));
        assert!(text.contains("vitastor_osd_up{osd=\"1\"} 1"));
        assert!(text.contains("vitastor_osd_up{osd=\"2\"} 0"));
        assert!(text
            .contains("vitastor_pool_pgs{pool=\"1\",pool_name=\"p\\\"q\",state=\"degraded\"} 1"));
        assert!(text.contains("vitastor_ops_total{op=\"write\"} 50"));
        assert!(text.contains("vitastor_op_rate{op=\"write\"} 10.0"));
    }

    #[test]
    fn raw_to_usable_is_raw_per_usable_byte() {
        assert_eq!(raw_to_usable(2, 1), 2.0);
        assert_eq!(raw_to_usable(3, 1), 3.0);
        assert_eq!(raw_to_usable(6, 4), 1.5, "EC 4+2");
        assert_eq!(raw_to_usable(3, 2), 1.5, "XOR 2+1");
    }
}
