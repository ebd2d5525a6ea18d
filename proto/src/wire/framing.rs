//! Framing on a byte stream: a connection carries header, payload, header, payload, ...
//! These decoders take bytes as they arrive (in any chunks) and hand out whole messages.
//!
//! - A request or reply whose header cannot be trusted (bad magic, bad checksum, oversized
//!   payload) is an error after which the stream is unusable: close the connection.
//! - A request with an unknown opcode but an intact header is reported as
//!   [`RequestEvent::Unknown`] (reply -EINVAL to its id); it is taken to have no payload,
//!   and the stream goes on.
//! - An intact header of an op that requires the seal but has none (a stock Vitastor OSD
//!   sending a mutating sub-op) is reported as [`RequestEvent::Unsealed`] (reply -EPERM);
//!   its payload is skipped and the stream goes on, so the sender sees an error instead of
//!   a reconnect loop.

use super::{Reply, Request, WireError, PACKET_SIZE};

/// What [`RequestDecoder::next_event`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent {
    Request(Request, Vec<u8>),
    /// Intact header with an opcode we do not know.
    Unknown {
        id: u64,
        opcode: u64,
    },
    /// Intact header without the seal its op requires; its payload was skipped.
    Unsealed {
        id: u64,
        opcode: super::Opcode,
    },
}

/// Bytes received and not yet handed out, and the header of the message being received
/// (decoded once, even when its payload arrives in many pieces).
#[derive(Debug)]
struct Framer<H> {
    buf: Vec<u8>,
    start: usize,
    header: Option<(H, usize)>,
    failed: Option<WireError>,
}

/// Capacity a stream's reassembly buffer keeps between messages; a larger one (left by a
/// big message) is released once it has been consumed.
pub const FRAMER_IDLE_CAPACITY_BYTES: usize = 64 << 10;

impl<H> Default for Framer<H> {
    fn default() -> Self {
        Framer {
            buf: Vec::new(),
            start: 0,
            header: None,
            failed: None,
        }
    }
}

impl<H> Framer<H> {
    fn push(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            if self.buf.capacity() > FRAMER_IDLE_CAPACITY_BYTES {
                // Everything was consumed: a connection that once carried a 4 MiB
                // write does not keep 4 MiB for the rest of its life.
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next `(header, payload)` once both have arrived. `decode` turns a header into
    /// the value handed out and its payload length; its error makes the stream unusable
    /// (the same error is returned on every later call).
    fn next(
        &mut self,
        decode: impl Fn(&[u8]) -> Result<(H, usize), WireError>,
    ) -> Result<Option<(H, Vec<u8>)>, WireError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.header.is_none() {
            let available = &self.buf[self.start..];
            if available.len() < PACKET_SIZE {
                return Ok(None);
            }
            match decode(&available[..PACKET_SIZE]) {
                Ok(header) => self.header = Some(header),
                Err(error) => {
                    self.failed = Some(error.clone());
                    return Err(error);
                }
            }
        }
        let payload_len = self.header.as_ref().map_or(0, |(_, len)| *len);
        let end = self.start + PACKET_SIZE + payload_len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload = self.buf[self.start + PACKET_SIZE..end].to_vec();
        self.start = end;
        // Keep memory bounded: drop consumed bytes once they dominate the buffer.
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(self.header.take().map(|(header, _)| (header, payload)))
    }
}

/// A request header, or the id and opcode of one we do not know (taken to have no payload).
#[derive(Debug)]
enum RequestHeader {
    Known(Request),
    Unknown { id: u64, opcode: u64 },
    Unsealed { id: u64, opcode: super::Opcode },
}

/// Splits an incoming byte stream into requests (the OSD side of a connection).
#[derive(Debug, Default)]
pub struct RequestDecoder {
    framer: Framer<RequestHeader>,
}

impl RequestDecoder {
    pub fn new() -> RequestDecoder {
        RequestDecoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
    }

    /// Bytes received but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }

    /// The next complete request, `Ok(None)` if more bytes are needed, or the error that
    /// makes this stream unusable (returned again on every later call).
    pub fn next_event(&mut self) -> Result<Option<RequestEvent>, WireError> {
        let frame = self.framer.next(|header| match Request::decode(header) {
            Ok(request) => Ok((
                RequestHeader::Known(request),
                request.payload_len() as usize,
            )),
            Err(WireError::UnknownOpcode { id, opcode }) => {
                Ok((RequestHeader::Unknown { id, opcode }, 0))
            }
            Err(WireError::MissingChecksum {
                id,
                opcode,
                payload_len,
            }) => Ok((RequestHeader::Unsealed { id, opcode }, payload_len as usize)),
            Err(error) => Err(error),
        })?;
        Ok(frame.map(|(header, payload)| match header {
            RequestHeader::Known(request) => RequestEvent::Request(request, payload),
            RequestHeader::Unknown { id, opcode } => RequestEvent::Unknown { id, opcode },
            RequestHeader::Unsealed { id, opcode } => RequestEvent::Unsealed { id, opcode },
        }))
    }
}

/// Splits an incoming byte stream into replies (the client side of a connection).
#[derive(Debug, Default)]
pub struct ReplyDecoder {
    framer: Framer<Reply>,
}

impl ReplyDecoder {
    pub fn new() -> ReplyDecoder {
        ReplyDecoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
    }

    /// Hands out the bytes received after the last whole reply (for handing a stream over
    /// to another decoder after a handshake).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.framer.buf[self.framer.start..].to_vec();
        self.framer = Framer::default();
        rest
    }

    /// The next complete reply with its payload, `Ok(None)` if more bytes are needed, or
    /// the error that makes this stream unusable. Any decode error is fatal here: a reply
    /// we cannot read leaves its request unanswered, so the connection must be dropped.
    pub fn next_reply(&mut self) -> Result<Option<(Reply, Vec<u8>)>, WireError> {
        self.framer
            .next(|header| Reply::decode(header).map(|reply| (reply, reply.payload_len() as usize)))
    }
}

/// A request followed by its payload, as sent on the wire. The payload must have exactly
/// the length the header announces.
pub fn encode_request(request: &Request, payload: &[u8]) -> Result<Vec<u8>, WireError> {
    if payload.len() as u64 != request.payload_len() {
        return Err(WireError::InvalidField {
            field: "payload length",
            value: payload.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(PACKET_SIZE + payload.len());
    out.extend_from_slice(&request.encode());
    out.extend_from_slice(payload);
    Ok(out)
}

/// A reply followed by its payload, as sent on the wire.
pub fn encode_reply(reply: &Reply, payload: &[u8]) -> Result<Vec<u8>, WireError> {
    if payload.len() as u64 != reply.payload_len() {
        return Err(WireError::InvalidField {
            field: "payload length",
            value: payload.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(PACKET_SIZE + payload.len());
    out.extend_from_slice(&reply.encode());
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::request::Rw;
    use super::super::{Opcode, ReplyBody, RequestBody, REQUEST_MAGIC};
    use super::*;
    use crate::ObjectId;
    use proptest::prelude::*;

    fn write_request(id: u64, len: u32) -> (Request, Vec<u8>) {
        let rw = Rw {
            inode: 1 << 48 | 1,
            offset: id * 4096,
            len,
            ..Rw::default()
        };
        (
            Request {
                id,
                body: RequestBody::Write(rw),
            },
            (0..len).map(|i| (i as u8) ^ (id as u8)).collect(),
        )
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_requests(sizes in proptest::collection::vec(0u32..20000, 1..12), cuts in proptest::collection::vec(1usize..5000, 1..40)) {
            let messages: Vec<(Request, Vec<u8>)> = sizes.iter().enumerate().map(|(i, len)| {
                if i % 3 == 2 {
                    (Request { id: i as u64, body: RequestBody::Sync }, Vec::new())
                } else {
                    write_request(i as u64, *len)
                }
            }).collect();
            let stream: Vec<u8> = messages.iter().flat_map(|(r, p)| encode_request(r, p).unwrap()).collect();
            let mut decoder = RequestDecoder::new();
            let mut got = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < stream.len() {
                let end = (at + cut.next().unwrap()).min(stream.len());
                decoder.push(&stream[at..end]);
                at = end;
                while let Some(event) = decoder.next_event().unwrap() {
                    match event {
                        RequestEvent::Request(request, payload) => got.push((request, payload)),
                        other => prop_assert!(false, "only known sealed ops were sent: {:?}", other),
                    }
                }
            }
            prop_assert_eq!(got, messages);
            prop_assert_eq!(decoder.buffered(), 0);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut decoder = RequestDecoder::new();
            decoder.push(&bytes);
            for _ in 0..20 {
                if !matches!(decoder.next_event(), Ok(Some(_))) {
                    break;
                }
            }
            let mut replies = ReplyDecoder::new();
            replies.push(&bytes);
            let _ = replies.next_reply();
        }
    }

    #[test]
    fn unknown_opcode_is_reported_and_the_stream_goes_on() {
        let mut unknown = [0u8; PACKET_SIZE];
        unknown[..8].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
        unknown[8..16].copy_from_slice(&5u64.to_le_bytes());
        unknown[16..24].copy_from_slice(&99u64.to_le_bytes());
        let (ping, _) = (
            Request {
                id: 6,
                body: RequestBody::Ping,
            },
            (),
        );
        let mut decoder = RequestDecoder::new();
        decoder.push(&unknown);
        decoder.push(&ping.encode());
        assert_eq!(
            decoder.next_event().unwrap(),
            Some(RequestEvent::Unknown { id: 5, opcode: 99 })
        );
        assert_eq!(
            decoder.next_event().unwrap(),
            Some(RequestEvent::Request(ping, Vec::new()))
        );
        assert_eq!(decoder.next_event().unwrap(), None);
    }

    /// Issue 18: a stock Vitastor tool lists objects with an unsealed SEC_LIST; a mutating
    /// sub-op without the seal is refused but its payload skipped, and the stream goes on.
    #[test]
    fn unsealed_secondary_ops_are_accepted_or_refused_without_closing() {
        use super::super::request::{SecList, SecRw};
        let unseal = |mut header: [u8; PACKET_SIZE]| {
            header[124..].copy_from_slice(&[0; 4]);
            header
        };
        let list = Request {
            id: 1,
            body: RequestBody::SecList(SecList {
                list_pg: 3,
                pg_count: 32,
                pg_stripe_size: 131072,
                min_inode: 1 << 48,
                max_inode: 2 << 48,
                epoch: 9,
                ..SecList::default()
            }),
        };
        let write = Request {
            id: 2,
            body: RequestBody::SecWriteStable(SecRw {
                len: 4096,
                epoch: 9,
                pg: 3,
                ..SecRw::default()
            }),
        };
        let mut decoder = RequestDecoder::new();
        decoder.push(&unseal(list.encode()));
        decoder.push(&unseal(write.encode()));
        decoder.push(&[0xaa; 4096]);
        decoder.push(
            &Request {
                id: 3,
                body: RequestBody::Ping,
            }
            .encode(),
        );
        let Some(RequestEvent::Request(got, _)) = decoder.next_event().unwrap() else {
            panic!("an unsealed SEC_LIST is accepted");
        };
        assert_eq!(
            got,
            Request {
                id: 1,
                body: list.body.without_fencing()
            }
        );
        assert!(matches!(got.body, RequestBody::SecList(l) if l.epoch == 0 && l.list_pg == 3));
        assert_eq!(
            decoder.next_event().unwrap(),
            Some(RequestEvent::Unsealed {
                id: 2,
                opcode: Opcode::SecWriteStable
            })
        );
        assert!(matches!(
            decoder.next_event().unwrap(),
            Some(RequestEvent::Request(
                Request {
                    id: 3,
                    body: RequestBody::Ping
                },
                _
            ))
        ));
    }

    /// `vitastor-cli fix` removes a copy with an unsealed SEC_DELETE carrying
    /// `OSD_OP_IGNORE_PG_LOCK`: accepted, as a copy to condemn; the same delete without
    /// that flag is a primary's and needs the seal.
    #[test]
    fn fix_deletes_need_no_seal_but_plain_deletes_do() {
        use super::super::request::{SecDelete, SEC_IGNORE_PG_LOCK};
        let oid = ObjectId {
            inode: 1 << 48 | 5,
            stripe: 0x20000,
        };
        let mut fix = Request {
            id: 1,
            body: RequestBody::CondemnCopy(oid),
        }
        .encode();
        assert_eq!(
            u32::from_le_bytes(fix[48..52].try_into().unwrap()),
            SEC_IGNORE_PG_LOCK
        );
        fix[124..].copy_from_slice(&[0; 4]);
        let mut plain = Request {
            id: 2,
            body: RequestBody::SecDelete(SecDelete {
                oid,
                ..SecDelete::default()
            }),
        }
        .encode();
        plain[124..].copy_from_slice(&[0; 4]);
        let mut decoder = RequestDecoder::new();
        decoder.push(&fix);
        decoder.push(&plain);
        assert_eq!(
            decoder.next_event().unwrap(),
            Some(RequestEvent::Request(
                Request {
                    id: 1,
                    body: RequestBody::CondemnCopy(oid)
                },
                Vec::new()
            ))
        );
        assert_eq!(
            decoder.next_event().unwrap(),
            Some(RequestEvent::Unsealed {
                id: 2,
                opcode: Opcode::SecDelete
            })
        );
    }

    #[test]
    fn bad_magic_poisons_only_this_stream() {
        let mut decoder = RequestDecoder::new();
        decoder.push(&[0x55; PACKET_SIZE]);
        assert!(matches!(decoder.next_event(), Err(WireError::BadMagic(_))));
        decoder.push(
            &Request {
                id: 1,
                body: RequestBody::Ping,
            }
            .encode(),
        );
        assert!(decoder.next_event().is_err(), "once broken, always broken");
        let mut fresh = RequestDecoder::new();
        fresh.push(
            &Request {
                id: 1,
                body: RequestBody::Ping,
            }
            .encode(),
        );
        assert!(matches!(
            fresh.next_event(),
            Ok(Some(RequestEvent::Request(..)))
        ));
    }

    #[test]
    fn a_truncated_payload_waits_for_more() {
        let (request, payload) = write_request(3, 8192);
        let bytes = encode_request(&request, &payload).unwrap();
        let mut decoder = RequestDecoder::new();
        decoder.push(&bytes[..PACKET_SIZE + 100]);
        assert_eq!(decoder.next_event().unwrap(), None);
        decoder.push(&bytes[PACKET_SIZE + 100..]);
        assert!(matches!(
            decoder.next_event().unwrap(),
            Some(RequestEvent::Request(..))
        ));
    }

    #[test]
    fn replies_with_payload_round_trip() {
        let reply = Reply {
            id: 9,
            opcode: Opcode::Read,
            retval: 4096,
            body: ReplyBody::Rw {
                bitmap_len: 4,
                version: 3,
            },
        };
        let payload = vec![7u8; 4100];
        let bytes = encode_reply(&reply, &payload).unwrap();
        let mut decoder = ReplyDecoder::new();
        decoder.push(&bytes[..1000]);
        assert_eq!(decoder.next_reply().unwrap(), None);
        decoder.push(&bytes[1000..]);
        assert_eq!(decoder.next_reply().unwrap(), Some((reply, payload)));
        assert!(
            encode_reply(&reply, &[1, 2, 3]).is_err(),
            "payload length must match the header"
        );
        let (request, _) = write_request(1, 4096);
        assert!(encode_request(&request, &[0; 10]).is_err());
    }

    #[test]
    fn a_consumed_big_message_does_not_keep_its_buffer() {
        let (request, payload) = write_request(1, 4 << 20);
        let bytes = encode_request(&request, &payload).unwrap();
        let mut decoder = RequestDecoder::new();
        decoder.push(&bytes);
        assert!(matches!(decoder.next_event(), Ok(Some(_))));
        assert!(decoder.framer.buf.capacity() >= 4 << 20);
        let (small, small_payload) = write_request(2, 4096);
        decoder.push(&encode_request(&small, &small_payload).unwrap());
        assert!(
            decoder.framer.buf.capacity() <= FRAMER_IDLE_CAPACITY_BYTES,
            "the 4 MiB buffer is released once consumed"
        );
        assert!(matches!(decoder.next_event(), Ok(Some(_))));
    }
}
