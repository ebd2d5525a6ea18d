//! The blockstore: the OSD's local storage engine on one file or block device.
//!
//! Objects are versioned. Writes of a whole block, and writes to objects that have no data
//! yet, are redirected to a fresh data block ("big writes"); other writes are journaled
//! with their data ("small writes"). A stable version is made permanent by the flusher,
//! which first journals the block's complete new metadata (a flush record), then writes
//! the journaled data in place and the metadata slot, and finally moves the journal start.
//! Every journal entry, metadata slot and 4 KiB of data carries a crc32c; a torn or
//! corrupted entry is detected and never applied, and a data mismatch on read is -EDOM.
//! Damage at rest found by replay or by a read puts the object in
//! [`Blockstore::damaged_objects`], for the OSD to recover from peers ([`damage`]).
//!
//! The on-disk layout is in [`layout`]; the journal and metadata formats in
//! [`journal_format`] and [`meta_format`]; memory costs in [`clean_index`].
//!
//! Everything runs on one thread without locks: [`Blockstore::submit`] starts an
//! operation, [`Blockstore::poll`] drives disk completions, and finished operations come
//! out of [`Blockstore::take_completions`]. The same code drives the io_uring driver
//! ([`uring::UringDisk`]) and the simulated disk of the tests ([`sim::SimDisk`]).

pub mod aligned;
pub mod alloc;
pub mod bitmap;
pub mod clean_index;
mod codec;
pub mod damage;
pub mod device_lock;
pub mod dirty;
pub mod disk;
pub mod dump;
pub mod error;
mod flusher;
pub mod fuzz_records;
mod group_commit;
pub mod journal;
pub mod journal_batch;
pub mod journal_format;
mod journal_triage;
mod journal_walk;
pub mod layout;
pub mod meta_format;
mod open;
mod pg_index;
pub mod prepare;
mod read;
pub mod sim;
mod store;
pub mod uring;
mod write;

pub use aligned::AlignedBuf;
pub use damage::{DamageReason, DamagedObject};
pub use disk::Disk;
pub use error::{BlockstoreError, OpError};
pub use layout::{FormatOptions, Superblock};
pub use store::{
    Blockstore, BlockstoreConfig, BlockstoreStats, Completion, ListedVersion, Op, OpId, OpOutput,
};
