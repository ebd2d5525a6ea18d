//! Settling an inconsistent object for `vitastor-cli fix`, the way Vitastor's tool does it
//! (so either tool works against either cluster): ask the object's primary to DESCRIBE it,
//! send each copy on a bad OSD a SEC_DELETE with `OSD_OP_IGNORE_PG_LOCK`
//! ([`RequestBody::CondemnCopy`]), then ask the primary to SCRUB the object, which rewrites
//! it from the copies left. Our OSDs mark such a copy bad rather than deleting it
//! (`osd/src/daemon/fix.rs` says why).

use crate::client::Client;
use std::time::Duration;
use vitastor_proto::errno;
use vitastor_proto::placement::EC_CHUNK_MASK;
use vitastor_proto::wire::describe::{decode_describe_items, LOC_INCONSISTENT};
use vitastor_proto::wire::request::{Describe, Rw};
use vitastor_proto::wire::RequestBody;
use vitastor_proto::ObjectId;

/// Limit of one OSD's answer.
const FIX_TIMEOUT: Duration = Duration::from_secs(30);

/// One copy a fix condemned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovedCopy {
    pub inode: u64,
    pub stripe: u64,
    /// The EC part (0 for replicas).
    pub part: u64,
    pub osd_num: u64,
}

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct FixOptions {
    /// OSDs whose copies are bad.
    pub bad_osds: Vec<u64>,
    /// Only this EC part.
    pub part: Option<u64>,
    /// Remove only copies the primary reports inconsistent (`--check no` clears it).
    pub check: bool,
}

impl Client {
    /// Fixes object `inode:stripe` (its stripe's chunk bits are ignored). Returns the
    /// copies removed; an error says which step failed.
    pub async fn fix_object(
        &self,
        inode: u64,
        stripe: u64,
        options: &FixOptions,
    ) -> Result<Vec<RemovedCopy>, String> {
        let stripe = stripe & !EC_CHUNK_MASK;
        let name = format!("{inode:#x}:{stripe:#x}");
        let state = self.state();
        let pool = (inode >> 48) as u32;
        let striping = state
            .striping(pool)
            .ok_or_else(|| format!("object {name} is from unknown pool {pool}"))?;
        let pg = striping.pg_of(stripe).get();
        let primary = state.active_primary(pool, pg).ok_or_else(|| {
            format!("object {name} is from PG {pool}/{pg} which is not currently active")
        })?;
        let describe = Describe {
            min_inode: inode,
            max_inode: inode,
            min_offset: stripe,
            max_offset: stripe,
            ..Describe::default()
        };
        let (retval, payload) = self.ask(primary, RequestBody::Describe(describe)).await?;
        if retval < 0 {
            return Err(format!(
                "failed to describe {name} on OSD {primary} ({retval})"
            ));
        }
        let items = decode_describe_items(&payload)?;
        let mut removed = Vec::new();
        for item in items {
            let wanted = (item.loc_bad & LOC_INCONSISTENT != 0 || !options.check)
                && options.bad_osds.contains(&item.osd_num)
                && options.part.is_none_or(|part| part == u64::from(item.role));
            if !wanted {
                continue;
            }
            let part = u64::from(item.role);
            let copy = ObjectId {
                inode,
                stripe: stripe | part,
            };
            let (retval, _) = self
                .ask(item.osd_num, RequestBody::CondemnCopy(copy))
                .await?;
            if retval < 0 {
                return Err(format!(
                    "failed to remove {name} (part {part}) from OSD {} ({retval})",
                    item.osd_num
                ));
            }
            removed.push(RemovedCopy {
                inode,
                stripe,
                part,
                osd_num: item.osd_num,
            });
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        let scrub = Rw {
            inode,
            offset: stripe,
            ..Rw::default()
        };
        let (retval, _) = self.ask(primary, RequestBody::Scrub(scrub)).await?;
        if retval < 0 && retval != -i64::from(errno::ENOENT) {
            return Err(format!(
                "failed to scrub {name} on OSD {primary} ({retval})"
            ));
        }
        Ok(removed)
    }

    /// Sends `body` to OSD `osd` and returns the reply's retval and payload.
    async fn ask(&self, osd: u64, body: RequestBody) -> Result<(i64, Vec<u8>), String> {
        let address = self
            .state()
            .osd_address(osd)
            .ok_or_else(|| format!("OSD {osd} has no address"))?;
        let connection = self
            .connection(osd, &address)
            .await
            .map_err(|e| format!("OSD {osd}: {e}"))?;
        let (reply, payload) = tokio::time::timeout(FIX_TIMEOUT, connection.call(body, &[]))
            .await
            .map_err(|_| format!("OSD {osd}: no answer in {FIX_TIMEOUT:?}"))?
            .map_err(|_| format!("OSD {osd}: connection lost"))?;
        Ok((reply.retval, payload))
    }
}
