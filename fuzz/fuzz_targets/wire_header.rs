//! Any bytes given to the wire decoders: an error or a packet, never a panic, and a
//! decoded packet re-encodes to a header that decodes to the same packet. Also the stream
//! framers on the same bytes.
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
    // The stream framers, fed the input in two pieces.
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut requests = vitastor_proto::wire::RequestDecoder::new();
    requests.push(&data[..split]);
    requests.push(&data[split..]);
    while let Ok(Some(_)) = requests.next_event() {}
    let mut replies = vitastor_proto::wire::ReplyDecoder::new();
    replies.push(data);
    while let Ok(Some(_)) = replies.next_reply() {}
});
