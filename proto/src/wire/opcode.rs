//! Opcode numbers (Vitastor's).

/// Every opcode of the protocol. Client-facing ops (10-15, 18) are the compatibility
/// contract; secondary ops are between OSDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Opcode {
    SecRead = 1,
    SecWrite = 2,
    SecWriteStable = 3,
    SecSync = 4,
    SecStabilize = 5,
    SecRollback = 6,
    SecDelete = 7,
    TestSyncStabAll = 8,
    SecList = 9,
    ShowConfig = 10,
    Read = 11,
    Write = 12,
    Sync = 13,
    Delete = 14,
    Ping = 15,
    SecReadBmp = 16,
    Scrub = 17,
    Describe = 18,
    SecLock = 19,
}

impl Opcode {
    pub const ALL: [Opcode; 19] = [
        Opcode::SecRead,
        Opcode::SecWrite,
        Opcode::SecWriteStable,
        Opcode::SecSync,
        Opcode::SecStabilize,
        Opcode::SecRollback,
        Opcode::SecDelete,
        Opcode::TestSyncStabAll,
        Opcode::SecList,
        Opcode::ShowConfig,
        Opcode::Read,
        Opcode::Write,
        Opcode::Sync,
        Opcode::Delete,
        Opcode::Ping,
        Opcode::SecReadBmp,
        Opcode::Scrub,
        Opcode::Describe,
        Opcode::SecLock,
    ];

    pub fn from_u64(value: u64) -> Option<Opcode> {
        Opcode::ALL.iter().copied().find(|op| *op as u64 == value)
    }

    /// Ops that clients (including Vitastor's own) send; they may omit the header crc.
    pub fn is_client_facing(self) -> bool {
        matches!(
            self,
            Opcode::ShowConfig
                | Opcode::Read
                | Opcode::Write
                | Opcode::Sync
                | Opcode::Delete
                | Opcode::Ping
                | Opcode::Describe
                | Opcode::Scrub
        )
    }
}
