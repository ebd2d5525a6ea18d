//! `rm NAME [--writers-stopped]` and `rm-data --pool P --inode N`.
//!
//! Writers: neither Vitastor nor we register who has an image open, so an idle writer
//! cannot be seen. What can be seen is writing: every write creates an object or raises
//! its version, so `rm` lists the image's objects on every up OSD twice,
//! [`WRITER_PROBE`] apart, and refuses when anything changed. `--writers-stopped` is
//! Vitastor's flag by which the caller states that the writers are stopped; with it the
//! probe is skipped. After removing, `rm` lists once more: objects that a writer
//! re-created meanwhile are reported with the `rm-data` command that removes them.
//! `rm-data` (Vitastor's command) deletes whatever objects of an inode the OSDs hold,
//! config or not, so such leftovers never become unremovable.

use crate::etcd::Context;
use crate::images::find;
use etcd_client::TxnOp;
use std::io::Write;
use std::time::Duration;
use vitastor_client::ObjectListing;
use vitastor_proto::etcd::keys;

/// How long `rm` watches an image's objects for writes before removing it.
pub const WRITER_PROBE: Duration = Duration::from_secs(2);

async fn list(ctx: &Context, inode: u64) -> Result<ObjectListing, String> {
    ctx.client
        .list_objects(inode)
        .await
        .map_err(|e| e.to_string())
}

pub async fn rm(ctx: &Context, name: &str, writers_stopped: bool) -> Result<(), String> {
    let ((pool, id), config) = find(ctx, name)?;
    if config.readonly {
        return Err(format!(
            "image {name:?} is read-only; make it --readwrite first"
        ));
    }
    let image = ctx.client.open_inode(pool, id).map_err(|e| e.to_string())?;
    if writers_stopped {
        eprintln!("warning: not checking {name:?} for writers (--writers-stopped)");
    } else {
        let before = list(ctx, image.inode).await?;
        tokio::time::sleep(WRITER_PROBE).await;
        let after = list(ctx, image.inode).await?;
        let changed = after
            .objects
            .iter()
            .filter(|(stripe, version)| before.objects.get(stripe) != Some(version))
            .count();
        if changed > 0 {
            return Err(format!(
                "image {name:?} is being written ({changed} objects changed in {} s); stop \
                 its writers first, or pass --writers-stopped once they are stopped",
                WRITER_PROBE.as_secs()
            ));
        }
    }
    let object = image.object_size().map_err(|e| e.to_string())?;
    let objects = config.size.div_ceil(object);
    // Objects are deleted in batches; the progress goes to stderr.
    const BATCH: u64 = 64;
    let mut done = 0;
    let mut stderr = std::io::stderr();
    while done < objects {
        let count = BATCH.min(objects - done);
        image
            .trim_objects(done * object, count * object)
            .await
            .map_err(|e| e.to_string())?;
        done += count;
        let _ = write!(
            stderr,
            "\rremoving data: {done}/{objects} objects ({}%)",
            done * 100 / objects
        );
    }
    if objects > 0 {
        let _ = writeln!(stderr);
    }
    let inode_key = format!("{}{pool}/{id}", keys::CONFIG_INODE);
    let ops = vec![
        TxnOp::delete(ctx.key(&inode_key), None),
        TxnOp::delete(ctx.key(&format!("{}{name}", keys::INDEX_IMAGE)), None),
    ];
    ctx.txn(Vec::new(), ops).await?;
    let left = list(ctx, image.inode).await?;
    if !left.objects.is_empty() {
        return Err(format!(
            "image {name} removed, but {} of its objects were written meanwhile; stop its \
             writers and run: vitastor-cli rm-data --pool {pool} --inode {id}",
            left.objects.len()
        ));
    }
    println!("Image {name} removed");
    Ok(())
}

/// Deletes every object of inode `number` in `pool` that the up OSDs hold.
pub async fn rm_data(ctx: &Context, pool: &str, number: u64) -> Result<(), String> {
    let state = ctx.state();
    let (pool_id, _) = ctx.find_pool(&state, pool)?;
    if number == 0 || number >= 1 << 48 {
        return Err(format!("invalid inode number {number}"));
    }
    if state.inodes.contains_key(&(pool_id, number)) {
        eprintln!(
            "warning: inode {number} of pool {pool_id} still has a config; removing its data only"
        );
    }
    let inode = u64::from(pool_id) << 48 | number;
    let listing = list(ctx, inode).await?;
    let total = listing.objects.len();
    for (done, stripe) in listing.objects.keys().enumerate() {
        ctx.client
            .delete_objects(inode, *stripe, vitastor_client::ALIGNMENT)
            .await
            .map_err(|e| e.to_string())?;
        eprint!("\rremoving data: {}/{total} objects", done + 1);
    }
    if total > 0 {
        eprintln!();
    }
    if let Some((osd, why)) = listing.unlisted.first() {
        return Err(format!(
            "removed {total} objects, but OSD {osd} could not be listed ({why}); data may remain there"
        ));
    }
    println!("Removed {total} objects of inode {number} in pool {pool_id}");
    Ok(())
}
