//! The JSON payloads of SHOW_CONFIG (op 10), the first exchange on every connection.
//!
//! Request: `{"osd_num": <client's or peer's OSD number, 0 for clients>, "features": {..}}`.
//! Reply (payload of `retval` bytes): the OSD's identity and settings, the same fields as
//! Vitastor's OSD (`osd_num`, `protocol_version`, `block_size`, `bitmap_granularity`,
//! `primary_enabled`, `blockstore_enabled`, `readonly`, `immediate_commit`,
//! `lease_timeout`, `features`).
//!
//! NUL convention: Vitastor's OSD sends the JSON followed by one NUL byte and sets
//! `retval` = JSON length + 1, because its client reads the payload as a C string (a reply
//! without the NUL makes it read past the buffer: "bad JSON: unexpected trailing ...").
//! We send the same; our parsers accept the JSON with or without trailing NULs, so they
//! work against both our older OSDs and Vitastor's.

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
    /// Vitastor's read-only OSD mode (only reads, listings and SHOW_CONFIG are served).
    #[serde(default)]
    pub readonly: bool,
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

/// The JSON part of a SHOW_CONFIG payload: without the trailing NUL(s) of the C-string
/// convention (see the module doc).
pub fn json_part(payload: &[u8]) -> &[u8] {
    let end = payload.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    &payload[..end]
}

impl ShowConfigRequest {
    /// Parses a request payload, with or without a trailing NUL; empty = all defaults.
    pub fn parse(payload: &[u8]) -> Result<ShowConfigRequest, serde_json::Error> {
        let json = json_part(payload);
        if json.is_empty() {
            return Ok(ShowConfigRequest::default());
        }
        serde_json::from_slice(json)
    }
}

impl ShowConfigReply {
    /// The reply payload as Vitastor sends it: the JSON and one NUL; `retval` must be its
    /// length.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut payload = serde_json::to_vec(self).expect("invariant: the config serializes");
        payload.push(0);
        payload
    }

    /// Parses a reply payload, with or without trailing NULs.
    pub fn parse(payload: &[u8]) -> Result<ShowConfigReply, serde_json::Error> {
        serde_json::from_slice(json_part(payload))
    }
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
            readonly: false,
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

    /// Issue 18: the reply payload ends in one NUL (Vitastor's C-string convention), and
    /// our parser takes both forms.
    #[test]
    fn reply_payload_has_a_trailing_nul_and_both_forms_parse() {
        let reply = ShowConfigReply {
            osd_num: 7,
            protocol_version: 1,
            block_size: 131072,
            bitmap_granularity: 4096,
            primary_enabled: true,
            blockstore_enabled: true,
            readonly: false,
            immediate_commit: crate::etcd::ImmediateCommit::All,
            lease_timeout: 15,
            features: serde_json::Map::new(),
        };
        let payload = reply.to_payload();
        assert_eq!(payload.last(), Some(&0));
        assert_eq!(payload.iter().filter(|b| **b == 0).count(), 1);
        assert_eq!(ShowConfigReply::parse(&payload).unwrap(), reply);
        assert_eq!(
            ShowConfigReply::parse(&payload[..payload.len() - 1]).unwrap(),
            reply
        );
        let json = String::from_utf8(payload[..payload.len() - 1].to_vec()).unwrap();
        for field in [
            "osd_num",
            "protocol_version",
            "block_size",
            "bitmap_granularity",
            "primary_enabled",
            "blockstore_enabled",
            "readonly",
            "immediate_commit",
            "lease_timeout",
            "features",
        ] {
            assert!(json.contains(&format!("\"{field}\":")), "{field} in {json}");
        }
        assert_eq!(
            ShowConfigRequest::parse(b"{\"osd_num\":2}\0")
                .unwrap()
                .osd_num,
            2
        );
        assert_eq!(
            ShowConfigRequest::parse(b"").unwrap(),
            ShowConfigRequest::default()
        );
    }
}
