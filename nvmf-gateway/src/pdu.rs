//! The NVMe/TCP PDU codec: one enum of every PDU, encoded and decoded here and nowhere else.
//!
//! Every PDU starts with the 8-byte common header:
//!
//! ```text
//!  0      1      2      3      4                8
//! +------+------+------+------+----------------+
//! | type | flags| hlen | pdo  | plen (u32 LE)  |  then the rest of the header (hlen bytes in all),
//! +------+------+------+------+----------------+  [header digest: 4], [pad to pdo], [data], [data digest: 4]
//! ```
//!
//! Header and data digests are crc32c (stored little-endian) and are present only after the
//! ICReq/ICResp exchange negotiated them; the initialize PDUs and the termination requests
//! never carry them. A decoder is given the negotiated [`Digests`] and refuses a PDU whose
//! flags disagree: a peer that sends digests it did not negotiate is broken, and the only
//! safe answer to a broken peer is to close its connection (see [`PduError::fes`]).

use thiserror::Error;

/// Bytes of the common header.
pub const COMMON_HEADER_BYTES: usize = 8;
/// Bytes of a header or data digest.
pub const DIGEST_BYTES: usize = 4;
/// Bytes of a submission queue entry (a command).
pub const SQE_BYTES: usize = 64;
/// Bytes of a completion queue entry.
pub const CQE_BYTES: usize = 16;
/// Bytes of ICReq and ICResp (header only, no data).
pub const IC_BYTES: usize = 128;
/// Header bytes of CapsuleCmd.
pub const CAPSULE_CMD_HLEN: usize = COMMON_HEADER_BYTES + SQE_BYTES;
/// Header bytes of CapsuleResp, the data PDUs, R2T and the termination requests.
pub const SHORT_HLEN: usize = 24;
/// Data a termination request may carry: the offending PDU header, at most this many bytes.
pub const TERM_DATA_MAX_BYTES: usize = 152;
/// Largest data any PDU may carry: the transfer limit of one command (the controller's
/// MDTS, 128 KiB) bounds in-capsule data, H2C data (maxh2cdata) and C2H data alike.
pub const PDU_DATA_MAX_BYTES: usize = 128 << 10;
/// Largest PDU accepted on the wire: the longest header, its digest, the largest alignment
/// padding (pda 31 = 128 bytes), the data and its digest. Checked before any buffer for
/// the PDU is allocated, so a lying `plen` cannot make us allocate more.
pub const PDU_MAX_BYTES: usize = IC_BYTES + DIGEST_BYTES + 128 + PDU_DATA_MAX_BYTES + DIGEST_BYTES;

/// Flag bits of the common header.
pub const FLAG_HDGST: u8 = 0x01;
pub const FLAG_DDGST: u8 = 0x02;
/// Data PDUs: the last PDU of this command's transfer.
pub const FLAG_LAST_PDU: u8 = 0x04;
/// C2HData: the command succeeded and no CapsuleResp follows (we never set it: with SQ
/// flow control the host needs the CQE's SQ head).
pub const FLAG_SUCCESS: u8 = 0x08;

/// PDU types.
pub mod pdu_type {
    pub const IC_REQ: u8 = 0;
    pub const IC_RESP: u8 = 1;
    pub const H2C_TERM_REQ: u8 = 2;
    pub const C2H_TERM_REQ: u8 = 3;
    pub const CAPSULE_CMD: u8 = 4;
    pub const CAPSULE_RESP: u8 = 5;
    pub const H2C_DATA: u8 = 6;
    pub const C2H_DATA: u8 = 7;
    pub const R2T: u8 = 9;
}

/// Fatal error statuses of a termination request.
pub mod fes {
    pub const INVALID_HEADER_FIELD: u16 = 1;
    pub const PDU_SEQUENCE_ERROR: u16 = 2;
    pub const HEADER_DIGEST_ERROR: u16 = 3;
    pub const DATA_OUT_OF_RANGE: u16 = 4;
    pub const UNSUPPORTED_PARAMETER: u16 = 6;
}

/// Which digests a connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

impl Digests {
    /// The ICReq/ICResp `dgst` byte: bit 0 header, bit 1 data.
    pub fn from_bits(bits: u8) -> Digests {
        Digests {
            header: bits & 1 != 0,
            data: bits & 2 != 0,
        }
    }

    pub fn bits(self) -> u8 {
        u8::from(self.header) | (u8::from(self.data) << 1)
    }
}

/// One PDU, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    IcReq {
        pfv: u16,
        /// Host PDU data alignment, in dwords minus one.
        hpda: u8,
        digests: Digests,
        /// Outstanding R2Ts per command the host accepts, minus one.
        maxr2t: u32,
    },
    IcResp {
        pfv: u16,
        /// Controller PDU data alignment, in dwords minus one.
        cpda: u8,
        digests: Digests,
        maxh2cdata_bytes: u32,
    },
    TermReq {
        /// H2CTermReq when true, C2HTermReq otherwise.
        from_host: bool,
        fes: u16,
        fei: u32,
        data: Vec<u8>,
    },
    CapsuleCmd {
        sqe: [u8; SQE_BYTES],
        data: Vec<u8>,
    },
    CapsuleResp {
        cqe: [u8; CQE_BYTES],
    },
    H2CData {
        cccid: u16,
        ttag: u16,
        offset_bytes: u32,
        data: Vec<u8>,
        last: bool,
    },
    C2HData {
        cccid: u16,
        offset_bytes: u32,
        data: Vec<u8>,
        last: bool,
        success: bool,
    },
    R2T {
        cccid: u16,
        ttag: u16,
        offset_bytes: u32,
        length_bytes: u32,
    },
}

/// Why a PDU could not be decoded; each maps to a termination request's status.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PduError {
    #[error("PDU of {got} bytes is shorter than its {need}-byte header")]
    Truncated { got: usize, need: usize },
    #[error("unknown PDU type {0}")]
    UnknownType(u8),
    #[error("PDU type {pdu_type}: header length {hlen}, expected {expected}")]
    BadHlen {
        pdu_type: u8,
        hlen: u8,
        expected: usize,
    },
    #[error("PDU length {plen} does not fit (header {hlen}, max {max})")]
    BadPlen { plen: u32, hlen: u8, max: usize },
    #[error("PDU data offset {pdo} is invalid (header end {header_end}, plen {plen})")]
    BadPdo {
        pdo: u8,
        header_end: usize,
        plen: u32,
    },
    #[error("PDU flags {flags:#x} disagree with the negotiated digests {digests:?}")]
    BadDigestFlags { flags: u8, digests: Digests },
    #[error("header digest mismatch")]
    HeaderDigest,
    #[error("data digest mismatch")]
    DataDigest,
    #[error("data length field {field} differs from the {actual} bytes carried")]
    BadDataLength { field: u32, actual: usize },
    #[error("PDU type {0} carries data it must not")]
    UnexpectedData(u8),
}

impl PduError {
    /// The fatal error status a termination request reports for this error, and the byte
    /// offset of the offending header field.
    pub fn fes(&self) -> (u16, u32) {
        match self {
            PduError::HeaderDigest => (fes::HEADER_DIGEST_ERROR, 0),
            PduError::UnknownType(_) => (fes::INVALID_HEADER_FIELD, 0),
            PduError::BadDigestFlags { .. } => (fes::INVALID_HEADER_FIELD, 1),
            PduError::BadHlen { .. } => (fes::INVALID_HEADER_FIELD, 2),
            PduError::BadPdo { .. } => (fes::INVALID_HEADER_FIELD, 3),
            PduError::BadPlen { .. } | PduError::Truncated { .. } => (fes::INVALID_HEADER_FIELD, 4),
            PduError::BadDataLength { .. } => (fes::DATA_OUT_OF_RANGE, 16),
            PduError::DataDigest | PduError::UnexpectedData(_) => (fes::INVALID_HEADER_FIELD, 0),
        }
    }
}

/// The common header, validated on its own so a reader knows how many bytes to read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    pub pdu_type: u8,
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: u32,
}

/// The fixed header length of a PDU type.
fn expected_hlen(pdu_type: u8) -> Result<usize, PduError> {
    use pdu_type::*;
    Ok(match pdu_type {
        IC_REQ | IC_RESP => IC_BYTES,
        CAPSULE_CMD => CAPSULE_CMD_HLEN,
        H2C_TERM_REQ | C2H_TERM_REQ | CAPSULE_RESP | H2C_DATA | C2H_DATA | R2T => SHORT_HLEN,
        other => return Err(PduError::UnknownType(other)),
    })
}

/// Whether a PDU type takes part in digest negotiation.
fn digested(pdu_type: u8) -> bool {
    use pdu_type::*;
    !matches!(pdu_type, IC_REQ | IC_RESP | H2C_TERM_REQ | C2H_TERM_REQ)
}

impl CommonHeader {
    /// Parses and checks the first 8 bytes: a known type, its header length, and a total
    /// length that holds the header and stays under [`PDU_MAX_BYTES`].
    pub fn parse(bytes: &[u8]) -> Result<CommonHeader, PduError> {
        if bytes.len() < COMMON_HEADER_BYTES {
            return Err(PduError::Truncated {
                got: bytes.len(),
                need: COMMON_HEADER_BYTES,
            });
        }
        let header = CommonHeader {
            pdu_type: bytes[0],
            flags: bytes[1],
            hlen: bytes[2],
            pdo: bytes[3],
            plen: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        };
        let expected = expected_hlen(header.pdu_type)?;
        if usize::from(header.hlen) != expected {
            return Err(PduError::BadHlen {
                pdu_type: header.pdu_type,
                hlen: header.hlen,
                expected,
            });
        }
        let plen = header.plen as usize;
        if plen < expected || plen > PDU_MAX_BYTES {
            return Err(PduError::BadPlen {
                plen: header.plen,
                hlen: header.hlen,
                max: PDU_MAX_BYTES,
            });
        }
        Ok(header)
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl Pdu {
    /// Decodes one whole PDU (`bytes` is exactly `plen` long) under the negotiated digests.
    pub fn decode(bytes: &[u8], digests: Digests) -> Result<Pdu, PduError> {
        let header = CommonHeader::parse(bytes)?;
        if bytes.len() != header.plen as usize {
            return Err(PduError::BadPlen {
                plen: header.plen,
                hlen: header.hlen,
                max: bytes.len(),
            });
        }
        let hlen = usize::from(header.hlen);
        let (hdgst, ddgst) = if digested(header.pdu_type) {
            (digests.header, digests.data)
        } else {
            (false, false)
        };
        let has_hdgst = header.flags & FLAG_HDGST != 0;
        if has_hdgst != hdgst {
            return Err(PduError::BadDigestFlags {
                flags: header.flags,
                digests,
            });
        }
        let header_end = hlen + if hdgst { DIGEST_BYTES } else { 0 };
        if bytes.len() < header_end {
            return Err(PduError::Truncated {
                got: bytes.len(),
                need: header_end,
            });
        }
        if hdgst {
            let stored = u32_at(bytes, hlen);
            if crc32c::crc32c(&bytes[..hlen]) != stored {
                return Err(PduError::HeaderDigest);
            }
        }
        // The data: after pdo (or right after the header for termination requests, whose
        // pdo is reserved), up to the data digest.
        let data = if bytes.len() == header_end {
            if header.flags & FLAG_DDGST != 0 {
                return Err(PduError::BadDigestFlags {
                    flags: header.flags,
                    digests,
                });
            }
            &bytes[header_end..]
        } else if !digested(header.pdu_type) {
            &bytes[header_end..]
        } else {
            let pdo = usize::from(header.pdo);
            if pdo < header_end || pdo > bytes.len() {
                return Err(PduError::BadPdo {
                    pdo: header.pdo,
                    header_end,
                    plen: header.plen,
                });
            }
            let has_ddgst = header.flags & FLAG_DDGST != 0;
            if has_ddgst != ddgst {
                return Err(PduError::BadDigestFlags {
                    flags: header.flags,
                    digests,
                });
            }
            let data_end = bytes.len() - if ddgst { DIGEST_BYTES } else { 0 };
            if data_end < pdo {
                return Err(PduError::BadPdo {
                    pdo: header.pdo,
                    header_end,
                    plen: header.plen,
                });
            }
            let data = &bytes[pdo..data_end];
            if ddgst && crc32c::crc32c(data) != u32_at(bytes, data_end) {
                return Err(PduError::DataDigest);
            }
            data
        };
        let last = header.flags & FLAG_LAST_PDU != 0;
        let no_data = |pdu_type: u8| -> Result<(), PduError> {
            if data.is_empty() {
                Ok(())
            } else {
                Err(PduError::UnexpectedData(pdu_type))
            }
        };
        use pdu_type::*;
        let pdu = match header.pdu_type {
            IC_REQ => {
                no_data(IC_REQ)?;
                Pdu::IcReq {
                    pfv: u16_at(bytes, 8),
                    hpda: bytes[10],
                    digests: Digests::from_bits(bytes[11]),
                    maxr2t: u32_at(bytes, 12),
                }
            }
            IC_RESP => {
                no_data(IC_RESP)?;
                Pdu::IcResp {
                    pfv: u16_at(bytes, 8),
                    cpda: bytes[10],
                    digests: Digests::from_bits(bytes[11]),
                    maxh2cdata_bytes: u32_at(bytes, 12),
                }
            }
            H2C_TERM_REQ | C2H_TERM_REQ => Pdu::TermReq {
                from_host: header.pdu_type == H2C_TERM_REQ,
                fes: u16_at(bytes, 8),
                fei: u32_at(bytes, 10),
                data: data[..data.len().min(TERM_DATA_MAX_BYTES)].to_vec(),
            },
            CAPSULE_CMD => {
                let mut sqe = [0u8; SQE_BYTES];
                sqe.copy_from_slice(&bytes[COMMON_HEADER_BYTES..CAPSULE_CMD_HLEN]);
                Pdu::CapsuleCmd {
                    sqe,
                    data: data.to_vec(),
                }
            }
            CAPSULE_RESP => {
                no_data(CAPSULE_RESP)?;
                let mut cqe = [0u8; CQE_BYTES];
                cqe.copy_from_slice(&bytes[COMMON_HEADER_BYTES..COMMON_HEADER_BYTES + CQE_BYTES]);
                Pdu::CapsuleResp { cqe }
            }
            H2C_DATA | C2H_DATA => {
                let field = u32_at(bytes, 16);
                if field as usize != data.len() {
                    return Err(PduError::BadDataLength {
                        field,
                        actual: data.len(),
                    });
                }
                if header.pdu_type == H2C_DATA {
                    Pdu::H2CData {
                        cccid: u16_at(bytes, 8),
                        ttag: u16_at(bytes, 10),
                        offset_bytes: u32_at(bytes, 12),
                        data: data.to_vec(),
                        last,
                    }
                } else {
                    Pdu::C2HData {
                        cccid: u16_at(bytes, 8),
                        offset_bytes: u32_at(bytes, 12),
                        data: data.to_vec(),
                        last,
                        success: header.flags & FLAG_SUCCESS != 0,
                    }
                }
            }
            R2T => {
                no_data(R2T)?;
                Pdu::R2T {
                    cccid: u16_at(bytes, 8),
                    ttag: u16_at(bytes, 10),
                    offset_bytes: u32_at(bytes, 12),
                    length_bytes: u32_at(bytes, 16),
                }
            }
            other => return Err(PduError::UnknownType(other)),
        };
        Ok(pdu)
    }

    fn pdu_type(&self) -> u8 {
        use pdu_type::*;
        match self {
            Pdu::IcReq { .. } => IC_REQ,
            Pdu::IcResp { .. } => IC_RESP,
            Pdu::TermReq {
                from_host: true, ..
            } => H2C_TERM_REQ,
            Pdu::TermReq { .. } => C2H_TERM_REQ,
            Pdu::CapsuleCmd { .. } => CAPSULE_CMD,
            Pdu::CapsuleResp { .. } => CAPSULE_RESP,
            Pdu::H2CData { .. } => H2C_DATA,
            Pdu::C2HData { .. } => C2H_DATA,
            Pdu::R2T { .. } => R2T,
        }
    }

    /// Encodes under the negotiated digests, placing data at the peer's alignment
    /// (`pda`: its ICReq hpda or ICResp cpda, dwords minus one).
    pub fn encode(&self, digests: Digests, pda: u8) -> Vec<u8> {
        let pdu_type = self.pdu_type();
        let hlen = expected_hlen(pdu_type).expect("every variant has a known type");
        let (hdgst, ddgst) = if digested(pdu_type) {
            (digests.header, digests.data)
        } else {
            (false, false)
        };
        let mut out = vec![0u8; hlen];
        out[0] = pdu_type;
        out[2] = hlen as u8;
        let mut flags = 0u8;
        let data: &[u8] = match self {
            Pdu::IcReq {
                pfv,
                hpda,
                digests,
                maxr2t,
            } => {
                out[8..10].copy_from_slice(&pfv.to_le_bytes());
                out[10] = *hpda;
                out[11] = digests.bits();
                out[12..16].copy_from_slice(&maxr2t.to_le_bytes());
                &[]
            }
            Pdu::IcResp {
                pfv,
                cpda,
                digests,
                maxh2cdata_bytes,
            } => {
                out[8..10].copy_from_slice(&pfv.to_le_bytes());
                out[10] = *cpda;
                out[11] = digests.bits();
                out[12..16].copy_from_slice(&maxh2cdata_bytes.to_le_bytes());
                &[]
            }
            Pdu::TermReq { fes, fei, data, .. } => {
                out[8..10].copy_from_slice(&fes.to_le_bytes());
                out[10..14].copy_from_slice(&fei.to_le_bytes());
                &data[..data.len().min(TERM_DATA_MAX_BYTES)]
            }
            Pdu::CapsuleCmd { sqe, data } => {
                out[COMMON_HEADER_BYTES..].copy_from_slice(sqe);
                data
            }
            Pdu::CapsuleResp { cqe } => {
                out[COMMON_HEADER_BYTES..COMMON_HEADER_BYTES + CQE_BYTES].copy_from_slice(cqe);
                &[]
            }
            Pdu::H2CData {
                cccid,
                ttag,
                offset_bytes,
                data,
                last,
            } => {
                out[8..10].copy_from_slice(&cccid.to_le_bytes());
                out[10..12].copy_from_slice(&ttag.to_le_bytes());
                out[12..16].copy_from_slice(&offset_bytes.to_le_bytes());
                out[16..20].copy_from_slice(&(data.len() as u32).to_le_bytes());
                if *last {
                    flags |= FLAG_LAST_PDU;
                }
                data
            }
            Pdu::C2HData {
                cccid,
                offset_bytes,
                data,
                last,
                success,
            } => {
                out[8..10].copy_from_slice(&cccid.to_le_bytes());
                out[12..16].copy_from_slice(&offset_bytes.to_le_bytes());
                out[16..20].copy_from_slice(&(data.len() as u32).to_le_bytes());
                if *last {
                    flags |= FLAG_LAST_PDU;
                }
                if *success {
                    flags |= FLAG_SUCCESS;
                }
                data
            }
            Pdu::R2T {
                cccid,
                ttag,
                offset_bytes,
                length_bytes,
            } => {
                out[8..10].copy_from_slice(&cccid.to_le_bytes());
                out[10..12].copy_from_slice(&ttag.to_le_bytes());
                out[12..16].copy_from_slice(&offset_bytes.to_le_bytes());
                out[16..20].copy_from_slice(&length_bytes.to_le_bytes());
                &[]
            }
        };
        assert!(data.len() <= PDU_DATA_MAX_BYTES, "PDU data over the limit");
        if hdgst {
            flags |= FLAG_HDGST;
        }
        if ddgst && !data.is_empty() {
            flags |= FLAG_DDGST;
        }
        out[1] = flags;
        let header_end = hlen + if hdgst { DIGEST_BYTES } else { 0 };
        let pdo = if data.is_empty() || !digested(pdu_type) {
            0
        } else {
            let align = (usize::from(pda) + 1) * 4;
            header_end.div_ceil(align) * align
        };
        assert!(pdo <= usize::from(u8::MAX), "pdo fits its byte");
        out[3] = pdo as u8;
        let plen = pdo.max(header_end)
            + data.len()
            + if ddgst && !data.is_empty() {
                DIGEST_BYTES
            } else {
                0
            };
        out[4..8].copy_from_slice(&(plen as u32).to_le_bytes());
        if hdgst {
            let digest = crc32c::crc32c(&out[..hlen]);
            out.extend_from_slice(&digest.to_le_bytes());
        }
        out.resize(pdo.max(header_end), 0);
        out.extend_from_slice(data);
        if ddgst && !data.is_empty() {
            out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        }
        assert_eq!(out.len(), plen, "plen matches the bytes written");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_DIGESTS: [Digests; 4] = [
        Digests {
            header: false,
            data: false,
        },
        Digests {
            header: true,
            data: false,
        },
        Digests {
            header: false,
            data: true,
        },
        Digests {
            header: true,
            data: true,
        },
    ];

    fn samples() -> Vec<Pdu> {
        let mut sqe = [0u8; SQE_BYTES];
        sqe[0] = 0x7f;
        sqe[2] = 9;
        vec![
            Pdu::IcReq {
                pfv: 0,
                hpda: 0,
                digests: Digests {
                    header: true,
                    data: false,
                },
                maxr2t: 0,
            },
            Pdu::IcResp {
                pfv: 0,
                cpda: 0,
                digests: Digests::default(),
                maxh2cdata_bytes: 131072,
            },
            Pdu::TermReq {
                from_host: false,
                fes: fes::HEADER_DIGEST_ERROR,
                fei: 0,
                data: vec![1; 24],
            },
            Pdu::CapsuleCmd {
                sqe,
                data: vec![7; 1024],
            },
            Pdu::CapsuleCmd { sqe, data: vec![] },
            Pdu::CapsuleResp {
                cqe: [3; CQE_BYTES],
            },
            Pdu::H2CData {
                cccid: 5,
                ttag: 1,
                offset_bytes: 4096,
                data: vec![9; 4096],
                last: true,
            },
            Pdu::C2HData {
                cccid: 5,
                offset_bytes: 0,
                data: vec![8; 512],
                last: true,
                success: false,
            },
            Pdu::R2T {
                cccid: 5,
                ttag: 2,
                offset_bytes: 0,
                length_bytes: 8192,
            },
        ]
    }

    #[test]
    fn every_pdu_round_trips_under_every_digest_setting_and_alignment() {
        for digests in ALL_DIGESTS {
            for pda in [0u8, 3, 31] {
                for pdu in samples() {
                    let bytes = pdu.encode(digests, pda);
                    assert_eq!(Pdu::decode(&bytes, digests), Ok(pdu.clone()), "{pdu:?}");
                }
            }
        }
    }

    #[test]
    fn digest_flags_must_match_the_negotiation() {
        let pdu = Pdu::CapsuleResp { cqe: [0; 16] };
        let with = Digests {
            header: true,
            data: false,
        };
        let bytes = pdu.encode(with, 0);
        assert!(matches!(
            Pdu::decode(&bytes, Digests::default()),
            Err(PduError::BadDigestFlags { .. })
        ));
        let bytes = pdu.encode(Digests::default(), 0);
        assert!(matches!(
            Pdu::decode(&bytes, with),
            Err(PduError::BadDigestFlags { .. })
        ));
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_digests() {
        let both = ALL_DIGESTS[3];
        let pdu = Pdu::H2CData {
            cccid: 1,
            ttag: 1,
            offset_bytes: 0,
            data: vec![5; 64],
            last: true,
        };
        let bytes = pdu.encode(both, 0);
        let mut header = bytes.clone();
        header[9] ^= 1;
        assert_eq!(Pdu::decode(&header, both), Err(PduError::HeaderDigest));
        let mut data = bytes.clone();
        data[40] ^= 1;
        assert_eq!(Pdu::decode(&data, both), Err(PduError::DataDigest));
    }

    #[test]
    fn header_checks() {
        assert_eq!(
            CommonHeader::parse(&[8, 0, 24, 0, 24, 0, 0, 0]),
            Err(PduError::UnknownType(8))
        );
        assert!(matches!(
            CommonHeader::parse(&[5, 0, 23, 0, 24, 0, 0, 0]),
            Err(PduError::BadHlen { .. })
        ));
        assert!(matches!(
            CommonHeader::parse(&[5, 0, 24, 0, 0xff, 0xff, 0xff, 0x7f]),
            Err(PduError::BadPlen { .. })
        ));
        assert!(matches!(
            CommonHeader::parse(&[5, 0, 24, 0, 20, 0, 0, 0]),
            Err(PduError::BadPlen { .. })
        ));
        // An H2CData whose datal lies about its data.
        let mut bytes = Pdu::H2CData {
            cccid: 1,
            ttag: 1,
            offset_bytes: 0,
            data: vec![0; 8],
            last: false,
        }
        .encode(Digests::default(), 0);
        bytes[16] = 9;
        assert!(matches!(
            Pdu::decode(&bytes, Digests::default()),
            Err(PduError::BadDataLength { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), bits in 0u8..4) {
            let digests = Digests::from_bits(bits);
            if let Ok(pdu) = Pdu::decode(&bytes, digests) {
                let again = pdu.encode(digests, 0);
                prop_assert_eq!(Pdu::decode(&again, digests), Ok(pdu));
            }
        }

        #[test]
        fn truncated_pdus_are_refused(cut in 0usize..1100, which in 0usize..9, bits in 0u8..4) {
            let digests = Digests::from_bits(bits);
            let pdu = samples()[which].clone();
            let bytes = pdu.encode(digests, 0);
            let cut = cut.min(bytes.len());
            if cut < bytes.len() {
                prop_assert!(Pdu::decode(&bytes[..cut], digests).is_err());
            }
        }
    }
}
