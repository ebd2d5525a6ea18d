//! Any bytes given to the NVMe/TCP PDU decoder, under every digest setting: an error or a
//! PDU, never a panic, and a decoded PDU re-encodes to bytes that decode to the same PDU.
//! The codec is compiled in by path: it depends only on crc32c and thiserror, so the
//! fuzz build does not pull the gateway's cluster client and runtime.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../nvmf-gateway/src/pdu.rs"]
mod pdu;

use pdu::{CommonHeader, Digests, Pdu, PDU_MAX_BYTES};

fuzz_target!(|data: &[u8]| {
    let bits = data.first().copied().unwrap_or(0) & 3;
    let digests = Digests::from_bits(bits);
    let bytes = data.get(1..).unwrap_or_default();
    if let Ok(header) = CommonHeader::parse(bytes) {
        assert!(header.plen as usize <= PDU_MAX_BYTES);
    }
    if let Ok(pdu) = Pdu::decode(bytes, digests) {
        let again = pdu.encode(digests, 0);
        assert_eq!(Pdu::decode(&again, digests), Ok(pdu));
    }
});
