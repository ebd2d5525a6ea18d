//! Asking every up OSD which of its PGs' objects are not as they should be (DESCRIBE,
//! for `vitastor-cli describe`; Vitastor's tool asks the same way).

use crate::client::Client;
use crate::error::ClientError;
use std::time::Duration;
use vitastor_proto::wire::describe::{decode_describe_items, DescribeItem};
use vitastor_proto::wire::request::Describe;
use vitastor_proto::wire::RequestBody;

/// Limit of one OSD's answer.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the up OSDs reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Description {
    /// Items from every OSD asked, sorted.
    pub items: Vec<DescribeItem>,
    /// OSDs that are up but did not answer, with why.
    pub unasked: Vec<(u64, String)>,
}

impl Client {
    /// Sends `request` to every up OSD (or only to `osds` when not empty).
    pub async fn describe(&self, request: Describe, osds: &[u64]) -> Description {
        let state = self.state();
        let targets: Vec<(u64, Option<String>)> = state
            .view
            .osd_states
            .keys()
            .filter(|osd| state.view.is_up(**osd) && (osds.is_empty() || osds.contains(osd)))
            .map(|osd| (*osd, state.osd_address(*osd)))
            .collect();
        let mut description = Description::default();
        for (osd, address) in targets {
            let answer = match address {
                Some(address) => self.describe_one(osd, &address, request).await,
                None => Err("no address".to_string()),
            };
            match answer {
                Ok(items) => description.items.extend(items),
                Err(error) => description.unasked.push((osd, error)),
            }
        }
        description.items.sort();
        description
    }

    async fn describe_one(
        &self,
        osd: u64,
        address: &str,
        request: Describe,
    ) -> Result<Vec<DescribeItem>, String> {
        let connection = self
            .connection(osd, address)
            .await
            .map_err(|e| e.to_string())?;
        let call = connection.call(RequestBody::Describe(request), &[]);
        let (reply, payload) = tokio::time::timeout(DESCRIBE_TIMEOUT, call)
            .await
            .map_err(|_| format!("no answer in {DESCRIBE_TIMEOUT:?}"))?
            .map_err(|_| "connection lost".to_string())?;
        if reply.retval < 0 {
            return Err(ClientError::Osd(reply.retval as i32).to_string());
        }
        decode_describe_items(&payload)
    }
}
