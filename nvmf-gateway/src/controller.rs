//! One controller: what a host's admin queue Connect creates and its I/O queues join.
//!
//! ```text
//!   Connect (qid 0) --> Disabled --CC.EN=1--> Ready --CC.SHN--> ShutDown
//!                          ^                    |
//!                          +------CC.EN=0-------+       any state --(admin queue closed,
//!                                                       keep-alive expired, subsystem
//!                                                       deleted)--> torn down
//! ```
//!
//! Properties (CAP, VS, CC, CSTS), features, pending Async Event Requests and queued
//! events live here; the queues' connections watch [`Controller::torn_down`] and close when
//! it fires.

use crate::command::Status;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Entries per queue (CAP.MQES + 1); also the in-flight commands a queue may hold.
pub const QUEUE_ENTRIES_MAX: u16 = 128;
/// I/O queues granted per controller.
pub const IO_QUEUES_MAX: u16 = 64;
/// Async Event Requests a controller keeps outstanding (AERL + 1).
pub const AER_OUTSTANDING_MAX: usize = 4;
/// Events held for a host that has no AER outstanding; older ones are dropped (the host
/// reads the log pages anyway after the next event).
pub const EVENTS_QUEUED_MAX: usize = 16;
/// Changed namespace list entries before the list overflows to "more than 1024".
pub const CHANGED_NS_MAX: usize = 1024;
/// Keep-alive timeout when the host gives none on Connect (SPDK's default: 10 s; 0 is
/// allowed and disables the timer, as discovery controllers do).
pub const KATO_DEFAULT_MS: u32 = 10_000;
/// Largest transfer of one command: MDTS 2^5 pages of 4 KiB = 128 KiB (SPDK's default
/// max_io_size; hosts split larger I/O). It also bounds the write data a queue holds:
/// [`QUEUE_WRITE_DATA_MAX_BYTES`].
pub const MDTS_POW2: u8 = 5;
pub const TRANSFER_MAX_BYTES: u32 = 4096 << MDTS_POW2;
/// Write data one queue may hold at once (received or being written): every entry with a
/// whole transfer. 64 queues of a controller hold at most 1 GiB.
pub const QUEUE_WRITE_DATA_MAX_BYTES: usize =
    QUEUE_ENTRIES_MAX as usize * TRANSFER_MAX_BYTES as usize;
const _: () = assert!(TRANSFER_MAX_BYTES as usize <= crate::pdu::PDU_DATA_MAX_BYTES);
const _: () = assert!(QUEUE_WRITE_DATA_MAX_BYTES <= 16 << 20);

/// Property offsets.
pub mod property {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1c;
}

/// NVMe 1.4.
pub const VERSION: u32 = 0x0001_0400;

/// CAP: MQES (0's based), CQR (contiguous queues required), TO = 15 x 500 ms to become
/// ready, CSS bit 37 (NVM command set), MPSMIN = MPSMAX = 0 (4 KiB pages).
pub const CAP: u64 = (QUEUE_ENTRIES_MAX as u64 - 1) | (1 << 16) | (15 << 24) | (1 << 37);

/// Async event types and the log page each points at.
pub mod event {
    /// Notice: namespace attribute changed (log page 4).
    /// (type 2 = notice, information 0, log page 4 in bits 16-23)
    pub const NS_CHANGED: u32 = 2 | (0x04 << 16);
    /// Notice: ANA change (log page 0x0C).
    pub const ANA_CHANGED: u32 = 2 | (3 << 8) | (0x0c << 16);
    /// Async Event Configuration bits enabling them.
    pub const AEC_NS_ATTR: u32 = 1 << 8;
    pub const AEC_ANA: u32 = 1 << 11;
}

/// Why a controller was torn down (logged, so an operator sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeardownReason {
    AdminQueueClosed,
    KeepAliveExpired,
    SubsystemDeleted,
    HostRemoved,
}

#[derive(Debug)]
struct Registers {
    cc: u32,
    csts: u32,
    kato_ms: u32,
    last_activity: Instant,
    num_queues_requested: Option<u32>,
    async_event_config: u32,
    host_behavior: [u8; 512],
    aers: Vec<(u16, oneshot::Sender<u32>)>,
    events: VecDeque<u32>,
    changed_ns: Vec<u32>,
    changed_ns_overflow: bool,
}

/// A controller of a subsystem (or of the discovery subsystem).
#[derive(Debug)]
pub struct Controller {
    pub cntlid: u16,
    pub subnqn: String,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    pub discovery: bool,
    /// The listener (traddr, trsvcid) the admin queue came in on: its ANA states apply.
    pub listen_key: (String, String),
    regs: Mutex<Registers>,
    teardown: watch::Sender<Option<TeardownReason>>,
}

impl Controller {
    pub fn new(
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
        hostid: [u8; 16],
        discovery: bool,
        listen_key: (String, String),
        kato_ms: u32,
    ) -> Controller {
        Controller {
            cntlid,
            subnqn: subnqn.to_string(),
            hostnqn: hostnqn.to_string(),
            hostid,
            discovery,
            listen_key,
            regs: Mutex::new(Registers {
                cc: 0,
                csts: 0,
                kato_ms,
                last_activity: Instant::now(),
                num_queues_requested: None,
                async_event_config: 0,
                host_behavior: [0; 512],
                aers: Vec::new(),
                events: VecDeque::new(),
                changed_ns: Vec::new(),
                changed_ns_overflow: false,
            }),
            teardown: watch::channel(None).0,
        }
    }

    fn regs(&self) -> std::sync::MutexGuard<'_, Registers> {
        self.regs.lock().expect("not poisoned")
    }

    /// A receiver that sees the teardown reason once the controller is gone.
    pub fn torn_down(&self) -> watch::Receiver<Option<TeardownReason>> {
        self.teardown.subscribe()
    }

    pub fn is_torn_down(&self) -> bool {
        self.teardown.borrow().is_some()
    }

    /// Ends the controller: every queue's connection closes, pending AERs are dropped.
    pub fn tear_down(&self, reason: TeardownReason) {
        self.teardown.send_if_modified(|current| {
            if current.is_none() {
                tracing::info!(
                    "controller {} of {} for {}: torn down ({reason:?})",
                    self.cntlid,
                    self.subnqn,
                    self.hostnqn
                );
                *current = Some(reason);
                true
            } else {
                false
            }
        });
        self.regs().aers.clear();
    }

    /// Any command on any of its queues counts as keep-alive traffic.
    pub fn touch(&self) {
        self.regs().last_activity = Instant::now();
    }

    /// Whether the keep-alive timer ran out at `now`. The host sends Keep Alive at half
    /// the timeout; one more timeout of grace absorbs a slow host without hiding a dead one.
    pub fn keep_alive_expired(&self, now: Instant) -> bool {
        let regs = self.regs();
        regs.kato_ms > 0
            && now.duration_since(regs.last_activity)
                > Duration::from_millis(u64::from(regs.kato_ms) * 2)
    }

    pub fn kato_ms(&self) -> u32 {
        self.regs().kato_ms
    }

    pub fn set_kato_ms(&self, kato_ms: u32) {
        self.regs().kato_ms = kato_ms;
    }

    pub fn property_get(&self, offset: u32) -> Option<u64> {
        let regs = self.regs();
        Some(match offset {
            property::CAP => CAP,
            property::VS => u64::from(VERSION),
            property::CC => u64::from(regs.cc),
            property::CSTS => u64::from(regs.csts),
            _ => return None,
        })
    }

    /// Property Set: only CC is writable. Enabling makes the controller ready at once
    /// (nothing to initialize); a shutdown request completes at once too (writes are
    /// acknowledged only when the cluster has them, so there is nothing to flush).
    pub fn property_set(&self, offset: u32, value: u64) -> Result<(), Status> {
        if offset != property::CC {
            return Err(Status::INVALID_FIELD);
        }
        let mut regs = self.regs();
        let cc = value as u32;
        let enable = cc & 1 != 0;
        let shutdown = (cc >> 14) & 3;
        regs.cc = cc;
        if shutdown != 0 {
            // SHST = 2: shutdown complete; RDY follows EN.
            regs.csts = (regs.csts & !0xc) | (2 << 2);
        } else {
            regs.csts &= !0xc;
        }
        if enable {
            regs.csts |= 1;
        } else {
            regs.csts &= !1;
        }
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.regs().csts & 1 != 0
    }

    /// Set Features: number of queues; returns what is granted (0's based in both halves).
    pub fn set_num_queues(&self, requested: u32) -> u32 {
        let mut regs = self.regs();
        regs.num_queues_requested = Some(requested);
        let granted = u32::from(IO_QUEUES_MAX - 1);
        let sq = (requested & 0xffff).min(granted);
        let cq = (requested >> 16).min(granted);
        sq | (cq << 16)
    }

    pub fn num_queues(&self) -> u32 {
        let granted = u32::from(IO_QUEUES_MAX - 1);
        match self.regs().num_queues_requested {
            Some(requested) => {
                (requested & 0xffff).min(granted) | ((requested >> 16).min(granted) << 16)
            }
            None => granted | (granted << 16),
        }
    }

    pub fn set_async_event_config(&self, config: u32) {
        self.regs().async_event_config = config;
    }

    pub fn async_event_config(&self) -> u32 {
        self.regs().async_event_config
    }

    pub fn set_host_behavior(&self, data: &[u8]) {
        let mut regs = self.regs();
        let n = data.len().min(512);
        regs.host_behavior[..n].copy_from_slice(&data[..n]);
    }

    pub fn host_behavior(&self) -> Vec<u8> {
        self.regs().host_behavior.to_vec()
    }

    /// Registers an Async Event Request; an already queued event answers it at once.
    /// Err when the host has more outstanding than AERL allows.
    pub fn add_aer(&self, cid: u16) -> Result<oneshot::Receiver<u32>, Status> {
        let (sender, receiver) = oneshot::channel();
        let mut regs = self.regs();
        if let Some(event) = regs.events.pop_front() {
            let _ = sender.send(event);
            return Ok(receiver);
        }
        if regs.aers.len() >= AER_OUTSTANDING_MAX {
            return Err(Status::AER_LIMIT_EXCEEDED);
        }
        regs.aers.push((cid, sender));
        Ok(receiver)
    }

    /// Raises an event if the host enabled it: to an outstanding AER, else queued.
    pub fn raise_event(&self, event: u32, enable_bit: u32) {
        let mut regs = self.regs();
        if regs.async_event_config & enable_bit == 0 {
            return;
        }
        while let Some((_, sender)) = regs.aers.pop() {
            if sender.send(event).is_ok() {
                return;
            }
        }
        if regs.events.len() >= EVENTS_QUEUED_MAX {
            regs.events.pop_front();
        }
        regs.events.push_back(event);
    }

    /// Records a namespace change for the Changed Namespace List log page and raises the
    /// event.
    pub fn namespace_changed(&self, nsid: u32) {
        {
            let mut regs = self.regs();
            if !regs.changed_ns.contains(&nsid) {
                if regs.changed_ns.len() >= CHANGED_NS_MAX {
                    regs.changed_ns_overflow = true;
                } else {
                    regs.changed_ns.push(nsid);
                }
            }
        }
        self.raise_event(event::NS_CHANGED, event::AEC_NS_ATTR);
    }

    /// The changed namespace list (cleared by reading it, as the spec says); `None` when it
    /// overflowed.
    pub fn take_changed_ns(&self) -> Option<Vec<u32>> {
        let mut regs = self.regs();
        let list = std::mem::take(&mut regs.changed_ns);
        let overflow = std::mem::take(&mut regs.changed_ns_overflow);
        if overflow {
            None
        } else {
            Some(list)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> Controller {
        Controller::new(
            1,
            "nqn.sub",
            "nqn.host",
            [0; 16],
            false,
            ("127.0.0.1".into(), "4420".into()),
            0,
        )
    }

    #[test]
    fn enable_and_shutdown() {
        let c = controller();
        assert_eq!(c.property_get(property::CSTS), Some(0));
        c.property_set(property::CC, 1).unwrap();
        assert_eq!(c.property_get(property::CSTS), Some(1));
        c.property_set(property::CC, 1 | (1 << 14)).unwrap();
        assert_eq!(c.property_get(property::CSTS), Some(1 | (2 << 2)));
        assert!(c.property_set(property::CAP, 0).is_err());
        assert_eq!(c.property_get(property::CAP).unwrap() & 0xffff, 127);
    }

    #[test]
    fn events_wait_for_an_aer_and_respect_the_config() {
        let c = controller();
        c.namespace_changed(1);
        let mut aer = c.add_aer(1).unwrap();
        assert!(aer.try_recv().is_err(), "disabled events are not queued");
        c.set_async_event_config(event::AEC_NS_ATTR);
        c.namespace_changed(2);
        assert_eq!(aer.try_recv(), Ok(event::NS_CHANGED));
        assert_eq!(c.take_changed_ns(), Some(vec![1, 2]));
        assert_eq!(c.take_changed_ns(), Some(vec![]));
        for cid in 0..AER_OUTSTANDING_MAX as u16 {
            c.add_aer(cid).unwrap();
        }
        assert_eq!(c.add_aer(9).err(), Some(Status::AER_LIMIT_EXCEEDED));
    }
}
