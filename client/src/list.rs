//! Listing the objects of one inode on every up OSD (SEC_LIST with `pg_count` 0 = all of
//! an OSD's objects in the inode range), for `vitastor-cli rm` (to see whether an image is
//! being written) and `rm-data` (to find data whose image config is gone, so its size is
//! unknown). Vitastor's tools list the same way.

use crate::client::Client;
use crate::error::{ClientError, Result};
use std::collections::BTreeMap;
use std::time::Duration;
use vitastor_proto::wire::request::{SecList, LIST_TOMBSTONES};
use vitastor_proto::wire::{decode_obj_versions, ReplyBody, RequestBody};

/// Low bits of a listed stripe that carry the EC chunk number on secondaries; object
/// stripes are multiples of the 4 KiB alignment, so clearing them gives the object.
const CHUNK_BITS: u64 = 0xfff;
/// Limit of one OSD's listing.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the up OSDs hold of one inode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectListing {
    /// Object stripe -> newest version found on any OSD (live objects; tombstones are
    /// not listed).
    pub objects: BTreeMap<u64, u64>,
    /// OSDs that are up but could not be listed, with why: data may remain there.
    pub unlisted: Vec<(u64, String)>,
}

impl Client {
    /// Lists the live objects of `inode` (global number) on every up OSD.
    pub async fn list_objects(&self, inode: u64) -> Result<ObjectListing> {
        let state = self.state();
        let mut listing = ObjectListing::default();
        let osds: Vec<(u64, Option<String>)> = state
            .view
            .osd_states
            .keys()
            .filter(|osd| state.view.is_up(**osd))
            .map(|osd| (*osd, state.osd_address(*osd)))
            .collect();
        for (osd, address) in osds {
            let Some(address) = address else {
                listing.unlisted.push((osd, "no address".into()));
                continue;
            };
            match self.list_one(osd, &address, inode).await {
                Ok(versions) => {
                    for (stripe, version) in versions {
                        let newest = listing.objects.entry(stripe).or_default();
                        *newest = (*newest).max(version);
                    }
                }
                Err(error) => listing.unlisted.push((osd, error)),
            }
        }
        Ok(listing)
    }

    async fn list_one(
        &self,
        osd: u64,
        address: &str,
        inode: u64,
    ) -> std::result::Result<Vec<(u64, u64)>, String> {
        let connection = self
            .connection(osd, address)
            .await
            .map_err(|e| e.to_string())?;
        // With tombstones: a listing holds every version an OSD still has, so an object
        // deleted but not yet flushed shows its old versions too; only the newest entry,
        // live or tombstone, says whether it exists. (Vitastor's OSDs ignore the flag and
        // list live versions only.)
        let body = RequestBody::SecList(SecList {
            min_inode: inode,
            max_inode: inode,
            flags: LIST_TOMBSTONES,
            ..SecList::default()
        });
        let (reply, payload) = tokio::time::timeout(LIST_TIMEOUT, connection.call(body, &[]))
            .await
            .map_err(|_| format!("no answer in {LIST_TIMEOUT:?}"))?
            .map_err(|_| "connection lost".to_string())?;
        if reply.retval < 0 {
            return Err(ClientError::Osd(reply.retval as i32).to_string());
        }
        let versions = decode_obj_versions(&payload).map_err(|e| e.to_string())?;
        let deleted_count = match reply.body {
            ReplyBody::SecList { deleted_count, .. } => deleted_count as usize,
            _ => 0,
        };
        let live_count = versions.len().saturating_sub(deleted_count);
        // Per object: (newest live version, newest tombstone version).
        let mut newest = BTreeMap::<u64, (u64, u64)>::new();
        for (i, v) in versions.iter().enumerate() {
            if v.oid.inode != inode {
                continue;
            }
            let entry = newest.entry(v.oid.stripe & !CHUNK_BITS).or_default();
            if i < live_count {
                entry.0 = entry.0.max(v.version);
            } else {
                entry.1 = entry.1.max(v.version);
            }
        }
        Ok(newest
            .into_iter()
            .filter(|(_, (live, tombstone))| live > tombstone)
            .map(|(stripe, (live, _))| (stripe, live))
            .collect())
    }
}
