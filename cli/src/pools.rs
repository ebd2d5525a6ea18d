//! Pool commands: create-pool, modify-pool, rm-pool, ls-pools. `/config/pools` is changed
//! with a transaction conditioned on its revision, and every pool is validated with the
//! same rules the OSDs and the monitor apply.

use crate::etcd::Context;
use crate::output;
use etcd_client::TxnOp;
use serde_json::{json, Map, Value};
use vitastor_proto::etcd::{keys, ImmediateCommit, PoolConfig, PoolScheme};
use vitastor_proto::size::{format_size, parse_size};

/// `create-pool NAME (-s PG_SIZE | --ec N+K) -n PG_COUNT [...]`.
#[derive(clap::Args)]
pub struct NewPool {
    pub name: String,
    #[arg(short = 's', long = "pg_size")]
    pub pg_size: Option<u32>,
    #[arg(long)]
    pub ec: Option<String>,
    #[arg(short = 'n', long = "pg_count")]
    pub pg_count: u32,
    #[arg(long = "pg_minsize")]
    pub pg_minsize: Option<u32>,
    #[arg(long = "failure_domain")]
    pub failure_domain: Option<String>,
    #[arg(long = "block_size")]
    pub block_size: Option<String>,
    #[arg(long = "immediate_commit")]
    pub immediate_commit: Option<String>,
    /// Scrub this pool's PGs this often (number + unit s/m/h/d/M/y; Vitastor's option).
    #[arg(long = "scrub_interval")]
    pub scrub_interval: Option<String>,
}

/// A `--scrub_interval` value as stored, checked the way the OSDs read it.
fn scrub_interval(text: &str) -> Result<Value, String> {
    let value = Value::from(text);
    vitastor_proto::etcd::parse_interval_s(&value)
        .map(|_| value)
        .ok_or_else(|| format!("--scrub_interval {text:?}: expected a number with an optional unit s, m, h, d, M or y"))
}

/// Reads `/config/pools` as raw JSON (unknown fields of other pools are kept as they are).
async fn load(ctx: &Context) -> Result<(Map<String, Value>, i64), String> {
    let (value, revision) = ctx.get(keys::CONFIG_POOLS).await?;
    let pools = match value {
        None => Map::new(),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("/config/pools in etcd is not valid JSON: {e}"))?,
    };
    Ok((pools, revision))
}

async fn store(ctx: &Context, pools: &Map<String, Value>, revision: i64) -> Result<(), String> {
    let ops = vec![TxnOp::put(
        ctx.key(keys::CONFIG_POOLS),
        Value::Object(pools.clone()).to_string(),
        None,
    )];
    if !ctx
        .txn(vec![ctx.unchanged(keys::CONFIG_POOLS, revision)], ops)
        .await?
    {
        return Err("/config/pools changed meanwhile; try again".into());
    }
    Ok(())
}

fn validated(id: &str, value: &Value) -> Result<PoolConfig, String> {
    let pool: PoolConfig =
        serde_json::from_value(value.clone()).map_err(|e| format!("pool {id}: {e}"))?;
    pool.validate(id).map_err(|e| e.to_string())?;
    Ok(pool)
}

fn find_id(pools: &Map<String, Value>, name: &str) -> Result<String, String> {
    pools
        .iter()
        .find(|(id, p)| p["name"] == name || id.as_str() == name)
        .map(|(id, _)| id.clone())
        .ok_or_else(|| format!("pool {name:?} does not exist"))
}

pub async fn create(ctx: &Context, spec: NewPool) -> Result<(), String> {
    let (scheme, pg_size, parity) = match (&spec.ec, spec.pg_size) {
        (Some(ec), None) => {
            let (n, k) = ec
                .split_once('+')
                .and_then(|(n, k)| Some((n.parse::<u32>().ok()?, k.parse::<u32>().ok()?)))
                .ok_or_else(|| format!("invalid --ec {ec:?}: expected N+K, e.g. 4+2"))?;
            (PoolScheme::Ec, n + k, k)
        }
        (None, Some(size)) => (PoolScheme::Replicated, size, 0),
        _ => return Err("give either -s PG_SIZE (replicated) or --ec N+K".into()),
    };
    let mut pool = json!({
        "name": spec.name,
        "scheme": if scheme == PoolScheme::Ec { "ec" } else { "replicated" },
        "pg_size": pg_size,
        "pg_minsize": spec.pg_minsize.unwrap_or_else(|| PoolConfig::default_pg_minsize(scheme, pg_size, parity)),
        "pg_count": spec.pg_count,
        "failure_domain": spec.failure_domain.unwrap_or_else(|| "host".into()),
    });
    if scheme == PoolScheme::Ec {
        pool["parity_chunks"] = parity.into();
    }
    if let Some(block) = spec.block_size {
        pool["block_size"] = parse_size(&block)?.into();
    }
    if let Some(commit) = spec.immediate_commit {
        let commit: ImmediateCommit = commit.parse()?;
        pool["immediate_commit"] = commit.as_str().into();
    }
    if let Some(interval) = spec.scrub_interval {
        pool["scrub_interval"] = scrub_interval(&interval)?;
    }
    let (mut pools, revision) = load(ctx).await?;
    if pools.values().any(|p| p["name"] == spec.name) {
        return Err(format!("pool {:?} already exists", spec.name));
    }
    let id = (1..65536u32)
        .find(|id| !pools.contains_key(&id.to_string()))
        .ok_or("no free pool id")?
        .to_string();
    validated(&id, &pool)?;
    pools.insert(id.clone(), pool);
    store(ctx, &pools, revision).await?;
    println!("Pool {} created (id {id})", spec.name);
    Ok(())
}

/// What `modify-pool` changes: pg_count, pg_minsize, failure_domain, name, scrub_interval.
pub type PoolChanges = (
    Option<u32>,
    Option<u32>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub async fn modify(ctx: &Context, name: &str, changes: PoolChanges) -> Result<(), String> {
    let (pg_count, pg_minsize, failure_domain, new_name, interval) = changes;
    let (mut pools, revision) = load(ctx).await?;
    let id = find_id(&pools, name)?;
    if let Some(new_name) = &new_name {
        if pools.values().any(|p| p["name"] == new_name.as_str()) {
            return Err(format!("pool {new_name:?} already exists"));
        }
    }
    let pool = pools.get_mut(&id).expect("found");
    if let Some(n) = pg_count {
        pool["pg_count"] = n.into();
    }
    if let Some(n) = pg_minsize {
        pool["pg_minsize"] = n.into();
    }
    if let Some(domain) = failure_domain {
        pool["failure_domain"] = domain.into();
    }
    if let Some(new_name) = new_name {
        pool["name"] = new_name.into();
    }
    if let Some(interval) = interval {
        pool["scrub_interval"] = scrub_interval(&interval)?;
    }
    validated(&id, pool)?;
    store(ctx, &pools, revision).await?;
    println!("Pool {name} modified");
    Ok(())
}

pub async fn rm(ctx: &Context, name: &str) -> Result<(), String> {
    let (mut pools, revision) = load(ctx).await?;
    let id = find_id(&pools, name)?;
    let pool_num: u32 = id
        .parse()
        .map_err(|_| format!("pool id {id:?} is not a number"))?;
    let images = ctx
        .state()
        .inodes
        .keys()
        .filter(|(p, _)| *p == pool_num)
        .count();
    if images > 0 {
        return Err(format!(
            "pool {name:?} still has {images} images; remove them first"
        ));
    }
    pools.remove(&id);
    store(ctx, &pools, revision).await?;
    println!("Pool {name} removed");
    Ok(())
}

pub fn ls(ctx: &Context) -> Result<(), String> {
    let state = ctx.state();
    if ctx.json {
        let list: Vec<Value> = state
            .view
            .pools
            .iter()
            .map(|(id, p)| {
                let mut value = serde_json::to_value(p).expect("serializes");
                value["id"] = id.get().into();
                value
            })
            .collect();
        output::json(&json!(list));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = state
        .view
        .pools
        .iter()
        .map(|(id, p)| {
            let scheme = match p.scheme {
                PoolScheme::Replicated => format!("{}/{}", p.pg_size, p.pg_minsize),
                _ => format!("EC {}+{}", p.data_chunks(), p.parity_chunks()),
            };
            let block = p
                .block_size
                .unwrap_or_else(|| state.view.global.block_size());
            vec![
                id.get().to_string(),
                p.name.clone(),
                scheme,
                p.pg_count.to_string(),
                p.failure_domain().to_string(),
                format_size(u64::from(block)),
            ]
        })
        .collect();
    output::table(
        &["ID", "NAME", "SCHEME", "PGS", "FAILURE_DOMAIN", "BLOCK"],
        &rows,
    );
    Ok(())
}
