//! Read-only cluster commands: status, df, osd-tree, ls-osd, pg-list. They read the state
//! the client library loaded from etcd, plus `/osd/stats`, `/stats`, `/pool/stats` and
//! `/config/osd`, which only these commands need.

use crate::etcd::Context;
use crate::output;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use vitastor_proto::size::format_size;

/// `key suffix -> JSON` for every key under a prefix, from the state snapshot in etcd.
pub(crate) async fn prefix(
    ctx: &Context,
    relative: &str,
) -> Result<BTreeMap<String, Value>, String> {
    let (mut etcd, root) = ctx.client.etcd();
    let full = format!("{root}{relative}");
    let response = etcd
        .get(
            full.clone(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .map_err(|e| format!("etcd: {e}"))?;
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?.strip_prefix(&full)?.to_string();
            Some((key, serde_json::from_slice(kv.value()).ok()?))
        })
        .collect())
}

pub(crate) fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

fn pg_states(ctx: &Context) -> BTreeMap<String, usize> {
    let state = ctx.state();
    let mut counts = BTreeMap::new();
    for key in state.view.pg_config.keys() {
        let text = state
            .view
            .pg_states
            .get(key)
            .map(|s| s.state.join("+"))
            .unwrap_or_else(|| "offline".into());
        *counts.entry(text).or_default() += 1;
    }
    counts
}

pub fn status(ctx: &Context) -> Result<(), String> {
    let state = ctx.state();
    let stats = block_on(prefix(ctx, "/osd/stats/"))?;
    let master = block_on(prefix(ctx, "/mon/master"))?;
    let up = state.view.osd_states.len();
    let (size, free): (u64, u64) = stats.values().fold((0, 0), |(s, f), v| {
        (
            s + v["size"].as_u64().unwrap_or(0),
            f + v["free"].as_u64().unwrap_or(0),
        )
    });
    let pgs = pg_states(ctx);
    let recovery = recovery_progress(ctx, &stats)?;
    if ctx.json {
        output::json(&json!({
            "recovery": recovery.json(),
            "mon_master": !master.is_empty(),
            "osd_up": up,
            "osd_total": stats.len(),
            "pool_count": state.view.pools.len(),
            "pg_count": state.view.pg_config.len(),
            "pg_states": pgs,
            "raw_total": size,
            "raw_used": size - free.min(size),
            "image_count": state.inodes.len(),
        }));
        return Ok(());
    }
    println!("  cluster:");
    println!(
        "    monitor: {}",
        if master.is_empty() {
            "no master!"
        } else {
            "master is up"
        }
    );
    println!("    osd:     {up} / {} up", stats.len());
    println!("  data:");
    println!(
        "    raw:     {} used, {} / {} available",
        format_size(size - free.min(size)),
        format_size(free),
        format_size(size)
    );
    println!(
        "    pools:   {}, images: {}",
        state.view.pools.len(),
        state.inodes.len()
    );
    println!("    pgs:     {}", state.view.pg_config.len());
    for (pg_state, count) in pgs {
        println!("             {count} {pg_state}");
    }
    if let Some(line) = recovery.line() {
        println!("  recovery:");
        println!("    {line}");
    }
    Ok(())
}

/// What background recovery and rebalance still have to copy, and how fast they go.
struct RecoveryProgress {
    degraded_objects: u64,
    misplaced_objects: u64,
    /// Objects left times the pool's block size: an upper bound (copies move only the
    /// written part of each object).
    bytes_left: u64,
    /// Copied per second over the OSDs' last stats interval.
    bytes_per_sec: f64,
    objects_per_sec: f64,
}

impl RecoveryProgress {
    fn eta_secs(&self) -> Option<f64> {
        (self.bytes_per_sec > 0.0).then(|| self.bytes_left as f64 / self.bytes_per_sec)
    }

    fn json(&self) -> Value {
        json!({
            "degraded_objects": self.degraded_objects,
            "misplaced_objects": self.misplaced_objects,
            "bytes_left_max": self.bytes_left,
            "bytes_per_sec": self.bytes_per_sec,
            "objects_per_sec": self.objects_per_sec,
            "eta_secs": self.eta_secs(),
        })
    }

    fn line(&self) -> Option<String> {
        if self.degraded_objects + self.misplaced_objects == 0 {
            return None;
        }
        let eta = match self.eta_secs() {
            Some(secs) => format!("ETA {secs:.0} s"),
            None => "ETA unknown (no copies in the last interval)".to_string(),
        };
        Some(format!(
            "{} degraded, {} misplaced objects left (at most {}), {}/s, {:.0} objects/s, {eta}",
            self.degraded_objects,
            self.misplaced_objects,
            format_size(self.bytes_left),
            format_size(self.bytes_per_sec as u64),
            self.objects_per_sec
        ))
    }
}

fn recovery_progress(
    ctx: &Context,
    osd_stats: &BTreeMap<String, Value>,
) -> Result<RecoveryProgress, String> {
    let state = ctx.state();
    let pg_stats = block_on(prefix(ctx, "/pgstats/"))?;
    let mut progress = RecoveryProgress {
        degraded_objects: 0,
        misplaced_objects: 0,
        bytes_left: 0,
        bytes_per_sec: 0.0,
        objects_per_sec: 0.0,
    };
    for (key, stats) in &pg_stats {
        let pool = key.split('/').next().and_then(|p| p.parse::<u32>().ok());
        let block_size = pool
            .and_then(|p| vitastor_proto::PoolId::new(p).ok())
            .and_then(|id| state.view.pools.get(&id))
            .and_then(|p| p.block_size)
            .unwrap_or(state.view.global.block_size());
        let degraded = stats["degraded_count"].as_u64().unwrap_or(0);
        let misplaced = stats["misplaced_count"].as_u64().unwrap_or(0);
        progress.degraded_objects += degraded;
        progress.misplaced_objects += misplaced;
        progress.bytes_left += (degraded + misplaced) * u64::from(block_size);
    }
    for stats in osd_stats.values() {
        progress.bytes_per_sec += stats["recovery_rate"]["bps"].as_f64().unwrap_or(0.0);
        progress.objects_per_sec += stats["recovery_rate"]["ops"].as_f64().unwrap_or(0.0);
    }
    Ok(progress)
}

struct OsdRow {
    num: u64,
    host: String,
    up: bool,
    size: u64,
    free: u64,
    reweight: f64,
    tags: Vec<String>,
}

fn osd_rows(ctx: &Context) -> Result<Vec<OsdRow>, String> {
    let state = ctx.state();
    let stats = block_on(prefix(ctx, "/osd/stats/"))?;
    let config = block_on(prefix(ctx, "/config/osd/"))?;
    let mut nums: Vec<u64> = stats
        .keys()
        .filter_map(|k| k.parse().ok())
        .chain(state.view.osd_states.keys().copied())
        .collect();
    nums.sort_unstable();
    nums.dedup();
    Ok(nums
        .into_iter()
        .map(|num| {
            let s = stats.get(&num.to_string()).cloned().unwrap_or(Value::Null);
            let c = config.get(&num.to_string()).cloned().unwrap_or(Value::Null);
            let host = s["host"]
                .as_str()
                .map(str::to_string)
                .or_else(|| state.view.osd_states.get(&num).and_then(|o| o.host.clone()))
                .unwrap_or_default();
            let tags = match &c["tags"] {
                Value::String(tag) => vec![tag.clone()],
                Value::Array(tags) => tags
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            OsdRow {
                num,
                host,
                up: state.view.is_up(num),
                size: s["size"].as_u64().unwrap_or(0),
                free: s["free"].as_u64().unwrap_or(0),
                reweight: c["reweight"].as_f64().unwrap_or(1.0),
                tags,
            }
        })
        .collect())
}

pub fn ls_osd(ctx: &Context) -> Result<(), String> {
    let rows = osd_rows(ctx)?;
    if ctx.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|o| json!({"osd_num": o.num, "host": o.host, "state": if o.up { "up" } else { "down" }, "size": o.size, "free": o.free, "reweight": o.reweight, "tags": o.tags}))
            .collect();
        output::json(&json!(list));
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|o| {
            vec![
                o.num.to_string(),
                o.host.clone(),
                if o.up { "up" } else { "down" }.into(),
                format_size(o.size),
                format_size(o.size - o.free.min(o.size)),
                format!("{}", o.reweight),
                o.tags.join(","),
            ]
        })
        .collect();
    output::table(
        &["OSD", "HOST", "STATE", "SIZE", "USED", "WEIGHT", "TAGS"],
        &table,
    );
    Ok(())
}

pub fn osd_tree(ctx: &Context) -> Result<(), String> {
    let rows = osd_rows(ctx)?;
    let mut hosts: BTreeMap<String, Vec<&OsdRow>> = BTreeMap::new();
    for row in &rows {
        hosts.entry(row.host.clone()).or_default().push(row);
    }
    if ctx.json {
        let tree: serde_json::Map<String, Value> = hosts
            .iter()
            .map(|(host, osds)| {
                let list: Vec<Value> = osds.iter().map(|o| json!({"osd_num": o.num, "state": if o.up { "up" } else { "down" }, "size": o.size})).collect();
                (host.clone(), json!(list))
            })
            .collect();
        output::json(&Value::Object(tree));
        return Ok(());
    }
    for (host, osds) in hosts {
        println!("host {}", if host.is_empty() { "(unknown)" } else { &host });
        for o in osds {
            println!(
                "  osd.{}  {}  {}",
                o.num,
                if o.up { "up" } else { "down" },
                format_size(o.size)
            );
        }
    }
    Ok(())
}

pub fn pg_list(ctx: &Context, pool: Option<&str>) -> Result<(), String> {
    let state = ctx.state();
    let only = pool
        .map(|p| ctx.find_pool(&state, p))
        .transpose()?
        .map(|(id, _)| id);
    let items: Vec<_> = state
        .view
        .pg_config
        .iter()
        .filter(|((p, _), _)| only.is_none_or(|o| o == *p))
        .map(|((p, pg), item)| {
            let pg_state = state
                .view
                .pg_states
                .get(&(*p, *pg))
                .map(|s| s.state.clone())
                .unwrap_or_else(|| vec!["offline".into()]);
            (*p, *pg, item.osd_set.clone(), item.primary, pg_state)
        })
        .collect();
    if ctx.json {
        let list: Vec<Value> = items
            .iter()
            .map(|(p, pg, set, primary, st)| json!({"pool_id": p, "pg_num": pg, "osd_set": set, "primary": primary, "state": st}))
            .collect();
        output::json(&json!(list));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|(p, pg, set, primary, st)| {
            vec![
                format!("{p}/{pg}"),
                format!("{set:?}"),
                primary.to_string(),
                st.join("+"),
            ]
        })
        .collect();
    output::table(&["PG", "OSD_SET", "PRIMARY", "STATE"], &rows);
    Ok(())
}
