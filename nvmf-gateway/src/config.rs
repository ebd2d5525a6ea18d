//! The gateway's configuration as the RPCs build it, persisted in etcd as one JSON document
//! and replayed on restart; also what `nvmf_get_subsystems` and `bdev_get_bdevs` show.

use crate::qos::QosLimits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The NQN of the discovery subsystem (rpc.py maps the shortcut `discovery` to it).
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Model number when `nvmf_create_subsystem` gives none.
pub const MODEL_DEFAULT: &str = "Vitastor NVMe-oF gateway";
/// Controller ids a subsystem may hand out (SPDK's defaults; 0xFFF0.. are reserved).
pub const CNTLID_MIN: u16 = 1;
pub const CNTLID_MAX: u16 = 0xffef;
/// Namespaces per subsystem when `max_namespaces` is not given.
pub const NAMESPACES_MAX: u32 = 1024;

/// A transport address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenAddress {
    pub trtype: String,
    pub adrfam: String,
    pub traddr: String,
    pub trsvcid: String,
}

impl ListenAddress {
    /// Listeners are identified by address and port (the transport is always TCP).
    pub fn key(&self) -> (String, String) {
        (self.traddr.clone(), self.trsvcid.clone())
    }
}

/// ANA states, as SPDK names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnaState {
    Optimized,
    NonOptimized,
    Inaccessible,
}

impl AnaState {
    pub fn parse(text: &str) -> Option<AnaState> {
        match text {
            "optimized" => Some(AnaState::Optimized),
            "non_optimized" => Some(AnaState::NonOptimized),
            "inaccessible" => Some(AnaState::Inaccessible),
            _ => None,
        }
    }

    /// The state byte of an ANA group descriptor.
    pub fn code(self) -> u8 {
        match self {
            AnaState::Optimized => 1,
            AnaState::NonOptimized => 2,
            AnaState::Inaccessible => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerConfig {
    pub address: ListenAddress,
    /// ANA state per ANA group id; group 0 is the default of groups not listed, and
    /// without it they are optimized.
    #[serde(default)]
    pub ana_states: BTreeMap<u32, AnaState>,
}

impl ListenerConfig {
    pub fn ana_state(&self, anagrpid: u32) -> AnaState {
        self.ana_states
            .get(&anagrpid)
            .or_else(|| self.ana_states.get(&0))
            .copied()
            .unwrap_or(AnaState::Optimized)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceConfig {
    pub nsid: u32,
    pub bdev_name: String,
    pub uuid: [u8; 16],
    pub nguid: [u8; 16],
    pub anagrpid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubsystemConfig {
    pub nqn: String,
    pub serial_number: String,
    pub model_number: String,
    pub allow_any_host: bool,
    pub hosts: Vec<String>,
    pub min_cntlid: u16,
    pub max_cntlid: u16,
    pub ana_reporting: bool,
    pub max_namespaces: u32,
    pub namespaces: Vec<NamespaceConfig>,
    pub listeners: Vec<ListenerConfig>,
}

impl SubsystemConfig {
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.allow_any_host || self.hosts.iter().any(|h| h == hostnqn)
    }

    pub fn listener(&self, key: &(String, String)) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| &l.address.key() == key)
    }

    pub fn namespace(&self, nsid: u32) -> Option<&NamespaceConfig> {
        self.namespaces.iter().find(|n| n.nsid == nsid)
    }
}

/// Where a bdev's data lives: an image of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BdevConfig {
    pub name: String,
    pub image: Option<String>,
    pub pool: Option<u32>,
    pub inode: Option<u64>,
    pub etcd_address: Option<String>,
    pub etcd_prefix: Option<String>,
    pub read_only: bool,
    pub uuid: [u8; 16],
    #[serde(default)]
    pub qos: QosLimits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayConfig {
    pub bdevs: Vec<BdevConfig>,
    pub subsystems: Vec<SubsystemConfig>,
    /// Listeners of the discovery subsystem.
    pub discovery_listeners: Vec<ListenAddress>,
    /// Command retry delays (units of 100 ms) reported in Identify Controller.
    pub crdt: [u16; 3],
    /// The TCP transport's parameters as given (kept to answer and persist; the limits in
    /// force are the gateway's own, announced in Identify).
    pub transport: Option<serde_json::Value>,
}

/// Formats 16 bytes as a UUID string.
pub fn uuid_string(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Formats 16 bytes as an NGUID (32 upper-case hex digits, SPDK's form).
pub fn nguid_string(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Parses a UUID or an NGUID: 32 hex digits, dashes anywhere ignored.
pub fn parse_hex16(text: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// A random version-4 UUID (from the OS's random source, falling back to time and pid).
pub fn random_uuid() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !filled {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_round_trips() {
        let uuid = random_uuid();
        assert_eq!(parse_hex16(&uuid_string(&uuid)), Some(uuid));
        assert_eq!(parse_hex16(&nguid_string(&uuid)), Some(uuid));
        assert_eq!(parse_hex16("xyz"), None);
        assert_eq!(
            uuid_string(&parse_hex16("ceccf520-691e-4b46-9546-34af789907c5").unwrap()),
            "ceccf520-691e-4b46-9546-34af789907c5"
        );
    }
}
