//! Submission and completion queue entries, opcodes and status codes (NVMe base spec).
//!
//! ```text
//! SQE (64 bytes): 0 opcode | 1 flags (PSDT bits 6-7) | 2 cid u16 | 4 nsid u32 | 8 cdw2 | 12 cdw3
//!                 16 mptr u64 | 24 dptr: SGL descriptor (16) | 40 cdw10 .. 60 cdw15
//! SGL descriptor: 0 address u64 | 8 length u32 | 12 reserved (3) | 15 type << 4 | subtype
//! CQE (16 bytes): 0 dw0 | 4 dw1 | 8 sqhd u16 | 10 sqid u16 | 12 cid u16 | 14 status u16
//!                 status: bit 0 phase, 1-8 SC, 9-11 SCT, 12-13 CRD, 14 more, 15 DNR
//! ```

use crate::pdu::{CQE_BYTES, SQE_BYTES};

/// A command as the host sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sqe(pub [u8; SQE_BYTES]);

impl Sqe {
    pub fn opcode(&self) -> u8 {
        self.0[0]
    }

    pub fn cid(&self) -> u16 {
        u16::from_le_bytes([self.0[2], self.0[3]])
    }

    pub fn nsid(&self) -> u32 {
        self.dword_at(4)
    }

    /// Fabrics commands: the fabrics command type (byte 4, where others hold the nsid).
    pub fn fctype(&self) -> u8 {
        self.0[4]
    }

    fn dword_at(&self, at: usize) -> u32 {
        u32::from_le_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }

    /// Command dword 10..15.
    pub fn cdw(&self, n: usize) -> u32 {
        assert!((10..=15).contains(&n), "command dwords 10..15 only");
        self.dword_at(40 + (n - 10) * 4)
    }

    pub fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }

    pub fn u32_at(&self, at: usize) -> u32 {
        self.dword_at(at)
    }

    pub fn u64_at(&self, at: usize) -> u64 {
        u64::from(self.dword_at(at)) | (u64::from(self.dword_at(at + 4)) << 32)
    }

    /// The data length the SGL descriptor announces.
    pub fn sgl_length_bytes(&self) -> u32 {
        self.dword_at(32)
    }

    /// The SGL descriptor's type and subtype byte.
    pub fn sgl_type(&self) -> u8 {
        self.0[39]
    }

    /// Whether data moves host to controller: the low opcode bits (01) for NVMe
    /// commands, the fctype's for fabrics commands.
    pub fn host_to_controller(&self) -> bool {
        let bits = if self.opcode() == FABRICS_OPCODE {
            self.fctype()
        } else {
            self.opcode()
        };
        bits & 3 == 1
    }

    pub fn controller_to_host(&self) -> bool {
        let bits = if self.opcode() == FABRICS_OPCODE {
            self.fctype()
        } else {
            self.opcode()
        };
        bits & 3 == 2
    }
}

/// SGL descriptor types the Linux host sends over TCP.
pub mod sgl {
    /// Data block, offset subtype: the data is in the capsule.
    pub const IN_CAPSULE: u8 = 0x01;
    /// Transport data block: data moves in H2CData/C2HData PDUs.
    pub const TRANSPORT: u8 = 0x5A;
}

pub const FABRICS_OPCODE: u8 = 0x7f;

pub mod fctype {
    pub const PROPERTY_SET: u8 = 0x00;
    pub const CONNECT: u8 = 0x01;
    pub const PROPERTY_GET: u8 = 0x04;
}

pub mod admin_op {
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0a;
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0c;
    pub const KEEP_ALIVE: u8 = 0x18;
}

pub mod io_op {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// A completion status: status code type and status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub sct: u8,
    pub sc: u8,
    /// Do not retry: the same command would fail again.
    pub dnr: bool,
}

impl Status {
    pub const SUCCESS: Status = Status::generic(0x00);
    pub const INVALID_OPCODE: Status = Status::generic(0x01).no_retry();
    pub const INVALID_FIELD: Status = Status::generic(0x02).no_retry();
    pub const DATA_TRANSFER_ERROR: Status = Status::generic(0x04);
    pub const INTERNAL_ERROR: Status = Status::generic(0x06);
    pub const ABORTED: Status = Status::generic(0x07);
    pub const INVALID_NAMESPACE: Status = Status::generic(0x0b).no_retry();
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::generic(0x0c).no_retry();
    pub const SGL_INVALID_DATA_LENGTH: Status = Status::generic(0x0f).no_retry();
    pub const SGL_INVALID_TYPE: Status = Status::generic(0x11).no_retry();
    pub const LBA_OUT_OF_RANGE: Status = Status::generic(0x80).no_retry();
    pub const NAMESPACE_NOT_READY: Status = Status::generic(0x82);
    pub const INVALID_QUEUE_SIZE: Status = Status::specific(0x02).no_retry();
    pub const AER_LIMIT_EXCEEDED: Status = Status::specific(0x05).no_retry();
    pub const INVALID_LOG_PAGE: Status = Status::specific(0x09).no_retry();
    pub const FEATURE_NOT_SAVEABLE: Status = Status::specific(0x0d).no_retry();
    pub const WRITE_TO_READ_ONLY: Status = Status::specific(0x82).no_retry();
    /// Fabrics Connect statuses (command specific).
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = Status::specific(0x80).no_retry();
    pub const CONNECT_CONTROLLER_BUSY: Status = Status::specific(0x81);
    pub const CONNECT_INVALID_PARAMETERS: Status = Status::specific(0x82).no_retry();
    pub const CONNECT_INVALID_HOST: Status = Status::specific(0x84).no_retry();
    pub const WRITE_FAULT: Status = Status::media(0x80);
    pub const UNRECOVERED_READ_ERROR: Status = Status::media(0x81);
    /// Path related: the namespace is not reachable through this controller's ANA group.
    pub const ANA_INACCESSIBLE: Status = Status::path(0x02);

    pub const fn generic(sc: u8) -> Status {
        Status {
            sct: 0,
            sc,
            dnr: false,
        }
    }

    pub const fn specific(sc: u8) -> Status {
        Status {
            sct: 1,
            sc,
            dnr: false,
        }
    }

    pub const fn media(sc: u8) -> Status {
        Status {
            sct: 2,
            sc,
            dnr: false,
        }
    }

    pub const fn path(sc: u8) -> Status {
        Status {
            sct: 3,
            sc,
            dnr: false,
        }
    }

    pub const fn no_retry(self) -> Status {
        Status { dnr: true, ..self }
    }

    pub fn is_success(self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// The CQE status field (phase bit 0: fabrics have no phase).
    pub fn field(self) -> u16 {
        assert!(self.sct < 8, "status code type is three bits");
        (u16::from(self.sc) << 1) | (u16::from(self.sct) << 9) | (u16::from(self.dnr) << 15)
    }

    pub fn from_field(field: u16) -> Status {
        Status {
            sc: (field >> 1) as u8,
            sct: ((field >> 9) & 7) as u8,
            dnr: field & 0x8000 != 0,
        }
    }
}

/// A completion, before the transport fills in the SQ head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub dw0: u32,
    pub dw1: u32,
    pub status: Status,
}

impl Completion {
    pub fn ok(dw0: u32) -> Completion {
        Completion {
            dw0,
            dw1: 0,
            status: Status::SUCCESS,
        }
    }

    pub fn error(status: Status) -> Completion {
        Completion {
            dw0: 0,
            dw1: 0,
            status,
        }
    }

    pub fn encode(&self, cid: u16, sqid: u16, sqhd: u16) -> [u8; CQE_BYTES] {
        let mut cqe = [0u8; CQE_BYTES];
        cqe[0..4].copy_from_slice(&self.dw0.to_le_bytes());
        cqe[4..8].copy_from_slice(&self.dw1.to_le_bytes());
        cqe[8..10].copy_from_slice(&sqhd.to_le_bytes());
        cqe[10..12].copy_from_slice(&sqid.to_le_bytes());
        cqe[12..14].copy_from_slice(&cid.to_le_bytes());
        cqe[14..16].copy_from_slice(&self.status.field().to_le_bytes());
        cqe
    }
}

impl From<Status> for Completion {
    fn from(status: Status) -> Completion {
        Completion::error(status)
    }
}

/// Writes an ASCII field space-padded, as Identify's strings are.
pub fn put_ascii(buf: &mut [u8], text: &str) {
    buf.fill(b' ');
    let bytes = text.as_bytes();
    let n = bytes.len().min(buf.len());
    buf[..n].copy_from_slice(&bytes[..n]);
}

/// Writes a string NUL-padded (NQNs, addresses).
pub fn put_nul_padded(buf: &mut [u8], text: &str) {
    buf.fill(0);
    let bytes = text.as_bytes();
    let n = bytes.len().min(buf.len().saturating_sub(1));
    buf[..n].copy_from_slice(&bytes[..n]);
}

/// Reads a NUL-terminated (or full-length) string field.
pub fn get_nul_padded(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_round_trip() {
        for status in [
            Status::SUCCESS,
            Status::CONNECT_INVALID_HOST,
            Status::ANA_INACCESSIBLE,
            Status::LBA_OUT_OF_RANGE,
        ] {
            assert_eq!(Status::from_field(status.field()), status);
        }
        // Connect Invalid Host: SCT 1, SC 0x84, DNR.
        assert_eq!(
            Status::CONNECT_INVALID_HOST.field(),
            0x8000 | (1 << 9) | (0x84 << 1)
        );
    }

    #[test]
    fn sqe_fields() {
        let mut raw = [0u8; SQE_BYTES];
        raw[0] = 0x02;
        raw[2..4].copy_from_slice(&0x1234u16.to_le_bytes());
        raw[4..8].copy_from_slice(&1u32.to_le_bytes());
        raw[32..36].copy_from_slice(&8192u32.to_le_bytes());
        raw[39] = sgl::TRANSPORT;
        raw[48..52].copy_from_slice(&7u32.to_le_bytes());
        let sqe = Sqe(raw);
        assert_eq!(sqe.cid(), 0x1234);
        assert_eq!(sqe.nsid(), 1);
        assert_eq!(sqe.cdw(12), 7);
        assert_eq!(sqe.sgl_length_bytes(), 8192);
        assert!(sqe.controller_to_host());
        assert!(!sqe.host_to_controller());
    }
}
