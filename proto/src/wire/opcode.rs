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

    /// Ops that clients (including Vitastor's own) send to a primary.
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

    /// Whether a request (or reply) of this op is refused without the header crc.
    ///
    /// | ops | seal | why |
    /// |---|---|---|
    /// | client ops (10-15, 17, 18) | optional | Vitastor clients never send one |
    /// | SEC_READ, SEC_READ_BMP, SEC_LIST, SEC_SYNC | optional | Vitastor's tools send them (`rm`, `merge`, `flatten`, `describe` list objects with SEC_LIST); they change no data, so an unchecked header can at worst return the wrong objects |
    /// | SEC_WRITE, SEC_WRITE_STABLE, SEC_DELETE, SEC_STABILIZE, SEC_ROLLBACK, TEST_SYNC_STAB_ALL, SEC_LOCK | required | they change what a PG holds; only our primaries send them, and only a sealed header proves their fencing fields (pg, epoch) are the ones the primary wrote |
    /// | SEC_DELETE with `OSD_OP_IGNORE_PG_LOCK` (`vitastor-cli fix`) | optional | decoded as [`super::RequestBody::CondemnCopy`]: the copy is only marked bad, never deleted, so no PG can lose data by it |
    ///
    /// An unsealed header never carries fencing: [`super::Request::decode`] zeroes `pg` and
    /// `pg_epoch` of an unsealed read-only op, so Vitastor's tools (which leave that padding
    /// zero) cannot raise a PG's fence or depose its primary by accident or by a torn byte.
    /// A stock Vitastor OSD acting as a primary for our OSDs is not supported: its
    /// mutating sub-ops are answered -EPERM (see [`super::RequestEvent::Unsealed`]).
    pub fn requires_seal(self) -> bool {
        matches!(
            self,
            Opcode::SecWrite
                | Opcode::SecWriteStable
                | Opcode::SecDelete
                | Opcode::SecStabilize
                | Opcode::SecRollback
                | Opcode::TestSyncStabAll
                | Opcode::SecLock
        )
    }
}
