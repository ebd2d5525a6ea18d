//! Any bytes given to the wire decoders: an error or a packet, never a panic, and a
//! decoded packet re-encodes to a header that decodes to the same packet.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vitastor_proto::wire::{Reply, Request, MAX_PAYLOAD_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        assert!(request.payload_len() <= MAX_PAYLOAD_BYTES);
        assert_eq!(Request::decode(&request.encode()), Ok(request));
    }
    if let Ok(reply) = Reply::decode(data) {
        assert_eq!(Reply::decode(&reply.encode()), Ok(reply));
    }
    let _ = vitastor_proto::wire::decode_obj_versions(data);
});
