//! The JSON payloads of SHOW_CONFIG (op 10), the first exchange on every connection.
//!
//! Request: `{"osd_num": <client's or peer's OSD number, 0 for clients>, "features": {..}}`.
//! Reply (payload of `retval` bytes): the OSD's identity and settings.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ShowConfigRequest {
    #[serde(default)]
    pub osd_num: u64,
    #[serde(default)]
    pub features: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShowConfigReply {
    pub osd_num: u64,
    pub protocol_version: u32,
    pub block_size: u32,
    pub bitmap_granularity: u32,
    #[serde(default = "yes")]
    pub primary_enabled: bool,
    #[serde(default = "yes")]
    pub blockstore_enabled: bool,
    pub immediate_commit: crate::etcd::ImmediateCommit,
    /// Seconds.
    #[serde(default)]
    pub lease_timeout: u64,
    #[serde(default)]
    pub features: serde_json::Map<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_fields() {
        let request: ShowConfigRequest =
            serde_json::from_str(r#"{"osd_num":0,"features":{"check_sequencing":true},"x":1}"#)
                .unwrap();
        assert_eq!(
            request.features.get("check_sequencing"),
            Some(&serde_json::Value::Bool(true))
        );
        let reply = ShowConfigReply {
            osd_num: 3,
            protocol_version: super::super::PROTOCOL_VERSION,
            block_size: 131072,
            bitmap_granularity: 4096,
            primary_enabled: true,
            blockstore_enabled: true,
            immediate_commit: crate::etcd::ImmediateCommit::All,
            lease_timeout: 10,
            features: serde_json::Map::new(),
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert!(json.contains(r#""immediate_commit":"all""#));
        assert_eq!(
            serde_json::from_str::<ShowConfigReply>(&json).unwrap(),
            reply
        );
        assert!(serde_json::from_str::<ShowConfigReply>(r#"{"osd_num":3}"#).is_err());
    }
}
