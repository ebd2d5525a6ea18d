//! Image commands: create, ls, modify (rm and rm-data are in rm.rs).

use crate::etcd::Context;
use crate::output;
use etcd_client::TxnOp;
use serde_json::json;
use vitastor_proto::etcd::{keys, InodeConfig};
use vitastor_proto::size::{format_size, parse_size};

fn parse_image_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if size == 0 || !size.is_multiple_of(4096) {
        return Err(format!(
            "invalid size {text:?}: must be a positive multiple of 4 KiB"
        ));
    }
    Ok(size)
}

/// Longest image name, in bytes. Vitastor's CLI sets no explicit limit; its NFS proxy,
/// which shows images as files, announces `name_max` = 255, so a longer name would be an
/// image some of Vitastor's own tools cannot reach.
pub const IMAGE_NAME_MAX_BYTES: usize = 255;

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
        return Err(format!("invalid image name {name:?}"));
    }
    if name.len() > IMAGE_NAME_MAX_BYTES {
        return Err(format!(
            "image name is {} bytes long, the limit is {IMAGE_NAME_MAX_BYTES}",
            name.len()
        ));
    }
    // Vitastor refuses it too: `@` separates an image from its snapshot.
    if name.contains('@') {
        return Err(format!("image name {name:?} can't contain @"));
    }
    Ok(())
}

pub async fn create(
    ctx: &Context,
    name: &str,
    size: &str,
    pool: Option<&str>,
) -> Result<(), String> {
    check_name(name)?;
    let size = parse_image_size(size)?;
    let state = ctx.state();
    let (pool_id, _) = match pool {
        Some(pool) => ctx.find_pool(&state, pool)?,
        None => match state.view.pools.iter().collect::<Vec<_>>().as_slice() {
            [(id, pool)] => (id.get(), (*pool).clone()),
            [] => return Err("no pools exist; create one with create-pool".into()),
            _ => return Err("several pools exist; choose one with -p POOL".into()),
        },
    };
    let index_key = format!("{}{name}", keys::INDEX_IMAGE);
    let maxid_key = format!("{}{pool_id}", keys::INDEX_MAXID);
    for _ in 0..100 {
        if state.find_image(name).is_some() || ctx.get(&index_key).await?.0.is_some() {
            return Err(format!("image {name:?} already exists"));
        }
        let (maxid, maxid_revision) = ctx.get(&maxid_key).await?;
        let last: u64 = maxid
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or(0);
        // Inodes created by hand (without maxid) must not be reused.
        let used = state
            .inodes
            .keys()
            .filter(|(p, _)| *p == pool_id)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        let id = last.max(used) + 1;
        let inode_key = format!("{}{pool_id}/{id}", keys::CONFIG_INODE);
        let config = InodeConfig {
            name: name.to_string(),
            size,
            parent_id: None,
            parent_pool: None,
            readonly: false,
        };
        let done = ctx
            .txn(
                vec![
                    ctx.unchanged(&maxid_key, maxid_revision),
                    ctx.unchanged(&index_key, 0),
                    ctx.unchanged(&inode_key, 0),
                ],
                vec![
                    TxnOp::put(ctx.key(&maxid_key), id.to_string(), None),
                    TxnOp::put(
                        ctx.key(&inode_key),
                        serde_json::to_string(&config).expect("serializes"),
                        None,
                    ),
                    TxnOp::put(
                        ctx.key(&index_key),
                        json!({"id": id, "pool_id": pool_id}).to_string(),
                        None,
                    ),
                ],
            )
            .await?;
        if done {
            println!("Image {name} created");
            return Ok(());
        }
    }
    Err("etcd kept changing under the create; try again".into())
}

pub fn ls(ctx: &Context, long: bool) -> Result<(), String> {
    let state = ctx.state();
    let pool_name = |pool: u32| {
        vitastor_proto::PoolId::new(pool)
            .ok()
            .and_then(|id| state.view.pools.get(&id))
            .map(|p| p.name.clone())
            .unwrap_or_else(|| pool.to_string())
    };
    let mut images: Vec<(&(u32, u64), &InodeConfig)> = state.inodes.iter().collect();
    images.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    if ctx.json {
        let list: Vec<_> = images
            .iter()
            .map(|((pool, id), c)| {
                json!({"name": c.name, "pool_id": pool, "pool_name": pool_name(*pool), "inode_num": id, "size": c.size, "readonly": c.readonly})
            })
            .collect();
        output::json(&json!(list));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|((pool, id), c)| {
            let mut row = vec![
                c.name.clone(),
                pool_name(*pool),
                format_size(c.size),
                if c.readonly { "RO" } else { "-" }.to_string(),
            ];
            if long {
                row.push(id.to_string());
            }
            row
        })
        .collect();
    let mut headers = vec!["NAME", "POOL", "SIZE", "FLAGS"];
    if long {
        headers.push("ID");
    }
    output::table(&headers, &rows);
    Ok(())
}

pub(crate) fn find(ctx: &Context, name: &str) -> Result<((u32, u64), InodeConfig), String> {
    let state = ctx.state();
    let key = state
        .find_image(name)
        .ok_or_else(|| format!("image {name:?} does not exist"))?;
    let config = state
        .inodes
        .get(&key)
        .cloned()
        .ok_or_else(|| format!("image {name:?} has no config"))?;
    Ok((key, config))
}

pub async fn modify(
    ctx: &Context,
    name: &str,
    resize: Option<&str>,
    rename: Option<&str>,
    readonly: Option<bool>,
) -> Result<(), String> {
    let ((pool, id), mut config) = find(ctx, name)?;
    let inode_key = format!("{}{pool}/{id}", keys::CONFIG_INODE);
    let (_, inode_revision) = ctx.get(&inode_key).await?;
    let mut compares = vec![ctx.unchanged(&inode_key, inode_revision)];
    let mut ops = Vec::new();
    if let Some(size) = resize {
        let size = parse_image_size(size)?;
        if size < config.size {
            // Data past the new end goes first, so a later grow reads zeros there.
            let image = ctx.client.open_inode(pool, id).map_err(|e| e.to_string())?;
            let object = image.object_size().map_err(|e| e.to_string())?;
            let from = size.div_ceil(object) * object;
            let to = config.size.div_ceil(object) * object;
            if from < to {
                image
                    .trim_objects(from, to - from)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if from > size {
                let tail = (from.min(config.size) - size) as usize;
                image
                    .write(size, &vec![0; tail])
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        config.size = size;
    }
    if let Some(new_name) = rename {
        check_name(new_name)?;
        if ctx.state().find_image(new_name).is_some() {
            return Err(format!("image {new_name:?} already exists"));
        }
        let new_index = format!("{}{new_name}", keys::INDEX_IMAGE);
        compares.push(ctx.unchanged(&new_index, 0));
        ops.push(TxnOp::delete(
            ctx.key(&format!("{}{name}", keys::INDEX_IMAGE)),
            None,
        ));
        ops.push(TxnOp::put(
            ctx.key(&new_index),
            json!({"id": id, "pool_id": pool}).to_string(),
            None,
        ));
        config.name = new_name.to_string();
    }
    if let Some(readonly) = readonly {
        config.readonly = readonly;
    }
    ops.push(TxnOp::put(
        ctx.key(&inode_key),
        serde_json::to_string(&config).expect("serializes"),
        None,
    ));
    if !ctx.txn(compares, ops).await? {
        return Err(format!("image {name:?} changed meanwhile; try again"));
    }
    println!("Image {name} modified");
    Ok(())
}
