//! `describe`: objects that are not as they should be (degraded, misplaced, corrupted,
//! inconsistent), as every primary reports them (DESCRIBE; Vitastor's command, options
//! and output format).

use crate::etcd::Context;
use serde_json::json;
use vitastor_proto::wire::describe::{
    LOC_CORRUPTED, LOC_INCONSISTENT, LOC_OUTDATED, OBJ_CORRUPTED, OBJ_DEGRADED, OBJ_INCOMPLETE,
    OBJ_INCONSISTENT, OBJ_MISPLACED,
};
use vitastor_proto::wire::request::Describe;

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// Only ask these primary OSDs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub osds: Vec<u64>,
    /// Only objects in these states: degraded, misplaced, incomplete, corrupted,
    /// inconsistent (comma-separated; default all).
    #[arg(long = "object-state")]
    pub object_state: Option<String>,
    #[arg(long)]
    pub pool: Option<String>,
    #[arg(long)]
    pub pg: Option<u32>,
    #[arg(long)]
    pub inode: Option<u64>,
    #[arg(long = "min-inode")]
    pub min_inode: Option<u64>,
    #[arg(long = "max-inode")]
    pub max_inode: Option<u64>,
    #[arg(long = "min-offset")]
    pub min_offset: Option<u64>,
    #[arg(long = "max-offset")]
    pub max_offset: Option<u64>,
}

/// The OBJ_* mask of an `--object-state` list.
fn state_mask(text: &str) -> Result<u64, String> {
    let mut mask = 0;
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        mask |= match name {
            "degraded" => OBJ_DEGRADED,
            "misplaced" => OBJ_MISPLACED,
            "incomplete" => OBJ_INCOMPLETE,
            "corrupted" => OBJ_CORRUPTED,
            "inconsistent" => OBJ_INCONSISTENT,
            other => return Err(format!("--object-state: unknown state {other:?}")),
        };
    }
    Ok(mask)
}

pub async fn describe(ctx: &Context, args: DescribeArgs) -> Result<(), String> {
    let pool_id = match &args.pool {
        Some(pool) => ctx.find_pool(&ctx.state(), pool)?.0,
        None => 0,
    };
    if args.pg.is_some() && pool_id == 0 {
        return Err("--pg needs --pool".into());
    }
    let pool_bits = u64::from(pool_id) << 48;
    let (min_inode, max_inode) = match args.inode {
        Some(inode) => (pool_bits | inode, pool_bits | inode),
        None => (
            args.min_inode.map_or(pool_bits, |n| pool_bits | n),
            args.max_inode.map_or(
                if pool_id == 0 {
                    0
                } else {
                    pool_bits | ((1 << 48) - 1)
                },
                |n| pool_bits | n,
            ),
        ),
    };
    let request = Describe {
        object_state: args.object_state.as_deref().map_or(Ok(0), state_mask)?,
        min_inode,
        max_inode,
        min_offset: args.min_offset.unwrap_or(0),
        max_offset: args.max_offset.unwrap_or(0),
        limit: 0,
        pool_id,
        pg_num: args.pg.unwrap_or(0),
    };
    let description = ctx.client.describe(request, &args.osds).await;
    for (osd, error) in &description.unasked {
        eprintln!("warning: OSD {osd} did not answer: {error}");
    }
    let flags = |loc: u32| {
        [
            (LOC_CORRUPTED, "corrupted"),
            (LOC_INCONSISTENT, "inconsistent"),
            (LOC_OUTDATED, "outdated"),
        ]
        .into_iter()
        .filter(move |(bit, _)| loc & bit != 0)
        .map(|(_, name)| name)
    };
    if ctx.json {
        let items: Vec<serde_json::Value> = description
            .items
            .iter()
            .map(|item| {
                let mut value = json!({
                    "inode": format!("{:#x}", item.inode),
                    "stripe": format!("{:#x}", item.stripe),
                    "part": item.role,
                    "osd_num": item.osd_num,
                });
                for name in flags(item.loc_bad) {
                    value[name] = true.into();
                }
                value
            })
            .collect();
        crate::output::json(&serde_json::Value::Array(items));
    } else {
        for item in &description.items {
            let names: String = flags(item.loc_bad).map(|n| format!(" {n}")).collect();
            println!(
                "{:#x}:{:#x} part {} on OSD {}{names}",
                item.inode, item.stripe, item.role, item.osd_num
            );
        }
    }
    if description.unasked.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} OSD(s) did not answer",
            description.unasked.len()
        ))
    }
}
