//! The target over real TCP sockets with in-memory namespaces, driven by the crate's small
//! initiator: Connect and the ACL, properties, Identify, log pages, features, AER, I/O in
//! the capsule and through R2T, digests, keep-alive teardown, and malformed PDUs that close
//! only their own connection.

use std::sync::Arc;
use std::time::Duration;
use vitastor_nvmf::command::{admin_op, io_op, Status};
use vitastor_nvmf::config::{ListenAddress, SubsystemConfig, DISCOVERY_NQN};
use vitastor_nvmf::controller::{event, property};
use vitastor_nvmf::device::MemoryDevice;
use vitastor_nvmf::initiator::{Command, HostQueue};
use vitastor_nvmf::listener::Listeners;
use vitastor_nvmf::pdu::Digests;
use vitastor_nvmf::target::{Bdev, Target};

const SUBNQN: &str = "nqn.2016-06.io.spdk:cnode1";
const HOST_OK: &str = "nqn.2014-08.org.nvmexpress:uuid:allowed";
const HOST_BAD: &str = "nqn.2014-08.org.nvmexpress:uuid:refused";
const SIZE_BYTES: u64 = 8 << 20;

struct Fixture {
    target: Arc<Target>,
    _listeners: Listeners,
    address: String,
}

async fn fixture(allow_any_host: bool) -> Fixture {
    let target = Arc::new(Target::new());
    let bdev = vitastor_nvmf::config::BdevConfig {
        name: "mem0".into(),
        image: None,
        pool: None,
        inode: None,
        etcd_address: None,
        etcd_prefix: None,
        read_only: false,
        uuid: [0x42; 16],
        qos: Default::default(),
    };
    target
        .add_bdev(Arc::new(Bdev::new(
            bdev,
            Arc::new(MemoryDevice::new(SIZE_BYTES, false)),
        )))
        .unwrap();
    let port = vitastor_testkit::free_port();
    let address = ListenAddress {
        trtype: "TCP".into(),
        adrfam: "IPv4".into(),
        traddr: "127.0.0.1".into(),
        trsvcid: port.to_string(),
    };
    target
        .create_subsystem(SubsystemConfig {
            nqn: SUBNQN.into(),
            serial_number: "SPDK00000000000001".into(),
            model_number: "Vitastor".into(),
            allow_any_host,
            hosts: vec![],
            min_cntlid: 1,
            max_cntlid: 0xffef,
            ana_reporting: true,
            max_namespaces: 32,
            namespaces: vec![],
            listeners: vec![],
        })
        .unwrap();
    target.add_host(SUBNQN, HOST_OK).unwrap();
    target
        .add_namespace(SUBNQN, "mem0", Some(1), None, None, None)
        .unwrap();
    let listeners = Listeners::default();
    listeners.ensure(&target, &address.key()).await.unwrap();
    target.add_listener(SUBNQN, address.clone()).unwrap();
    Fixture {
        target,
        _listeners: listeners,
        address: format!("127.0.0.1:{port}"),
    }
}

/// Admin queue connected and enabled; returns it and the cntlid.
async fn admin(f: &Fixture, digests: Digests, kato_ms: u32) -> (HostQueue, u16) {
    let mut q = HostQueue::open(&f.address, digests).await.unwrap();
    let c = q
        .fabrics_connect(0, 31, 0xffff, SUBNQN, HOST_OK, kato_ms)
        .await
        .unwrap();
    assert!(c.status.is_success(), "{c:?}");
    let cntlid = c.dw0 as u16;
    assert!(q
        .property_set(property::CC, 1)
        .await
        .unwrap()
        .status
        .is_success());
    let csts = q.property_get(property::CSTS).await.unwrap();
    assert_eq!(csts.dw0 & 1, 1, "ready");
    (q, cntlid)
}

async fn io_queue(f: &Fixture, cntlid: u16, digests: Digests) -> HostQueue {
    let mut q = HostQueue::open(&f.address, digests).await.unwrap();
    let c = q
        .fabrics_connect(1, 127, cntlid, SUBNQN, HOST_OK, 0)
        .await
        .unwrap();
    assert!(c.status.is_success(), "{c:?}");
    q
}

fn rw(opcode: u8, slba: u64, blocks: u32) -> Command {
    let mut c = Command::new(opcode);
    c.nsid = 1;
    c.cdw10 = slba as u32;
    c.cdw11 = (slba >> 32) as u32;
    c.cdw12 = blocks - 1;
    c.data_len = blocks * 4096;
    c
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn identify_log_pages_and_features() {
    let f = fixture(false).await;
    let (mut q, cntlid) = admin(&f, Digests::default(), 0).await;
    let cap = q.property_get(property::CAP).await.unwrap();
    assert_eq!(cap.dw0 & 0xffff, 127);
    assert_eq!(q.property_get(property::VS).await.unwrap().dw0, 0x10400);

    let mut id = Command::new(admin_op::IDENTIFY);
    id.cdw10 = 1;
    id.data_len = 4096;
    let (c, data) = q.execute(id, None).await.unwrap();
    assert!(c.status.is_success());
    assert_eq!(u16::from_le_bytes([data[78], data[79]]), cntlid);
    assert_eq!(&data[4..22], b"SPDK00000000000001");
    assert_eq!(data[76] & 0b1000, 0b1000, "ANA reporting");
    assert_eq!(&data[768..768 + SUBNQN.len()], SUBNQN.as_bytes());

    id.cdw10 = 0;
    id.nsid = 1;
    let (_, ns) = q.execute(id, None).await.unwrap();
    assert_eq!(
        u64::from_le_bytes(ns[0..8].try_into().unwrap()),
        SIZE_BYTES / 4096
    );
    assert_eq!(
        &ns[104..120],
        &[0x42; 16],
        "NGUID defaults to the bdev uuid"
    );

    id.cdw10 = 2;
    id.nsid = 0;
    let (_, list) = q.execute(id, None).await.unwrap();
    assert_eq!(&list[0..8], &[1, 0, 0, 0, 0, 0, 0, 0]);

    id.cdw10 = 3;
    id.nsid = 1;
    let (_, desc) = q.execute(id, None).await.unwrap();
    assert_eq!((desc[0], desc[20]), (2, 3));

    id.cdw10 = 0;
    id.nsid = 9;
    let (c, _) = q.execute(id, None).await.unwrap();
    assert!(c.status.is_success(), "an inactive nsid is a zero page");

    for (page, len) in [
        (1u32, 64u32),
        (2, 512),
        (3, 512),
        (4, 4096),
        (5, 4096),
        (0x0c, 4096),
    ] {
        let mut log = Command::new(admin_op::GET_LOG_PAGE);
        log.cdw10 = page | ((len / 4 - 1) << 16);
        log.data_len = len;
        let (c, data) = q.execute(log, None).await.unwrap();
        assert!(c.status.is_success(), "log page {page}: {c:?}");
        assert_eq!(data.len(), len as usize);
        if page == 0x0c {
            assert_eq!(u16::from_le_bytes([data[8], data[9]]), 1, "one ANA group");
            assert_eq!(data[16 + 16], 1, "optimized");
        }
    }
    let mut log = Command::new(admin_op::GET_LOG_PAGE);
    log.cdw10 = 0x42 | (15 << 16);
    log.data_len = 64;
    let (c, _) = q.execute(log, None).await.unwrap();
    assert_eq!(c.status, Status::INVALID_LOG_PAGE);

    let mut set = Command::new(admin_op::SET_FEATURES);
    set.cdw10 = 7;
    set.cdw11 = 3 | (3 << 16);
    let (c, _) = q.execute(set, None).await.unwrap();
    assert_eq!(c.dw0, 3 | (3 << 16));
    set.cdw10 = 0x0f;
    set.cdw11 = 5000;
    assert!(q.execute(set, None).await.unwrap().0.status.is_success());
    let mut get = Command::new(admin_op::GET_FEATURES);
    get.cdw10 = 0x0f;
    assert_eq!(q.execute(get, None).await.unwrap().0.dw0, 5000);
    let (c, _) = q
        .execute(Command::new(admin_op::KEEP_ALIVE), None)
        .await
        .unwrap();
    assert!(c.status.is_success());
    let (c, _) = q
        .execute(Command::new(admin_op::ABORT), None)
        .await
        .unwrap();
    assert_eq!(c.dw0 & 1, 1, "not aborted");
    let (c, _) = q.execute(Command::new(0x55), None).await.unwrap();
    assert_eq!(c.status, Status::INVALID_OPCODE);

    // Shutdown.
    q.property_set(property::CC, 1 | (1 << 14)).await.unwrap();
    let csts = q.property_get(property::CSTS).await.unwrap();
    assert_eq!((csts.dw0 >> 2) & 3, 2, "shutdown complete");
}

#[tokio::test]
async fn io_in_capsule_and_through_r2t_with_and_without_digests() {
    let f = fixture(false).await;
    for digests in [
        Digests::default(),
        Digests {
            header: true,
            data: true,
        },
    ] {
        let (_admin, cntlid) = admin(&f, digests, 0).await;
        let mut q = io_queue(&f, cntlid, digests).await;
        // 4 KiB in the capsule, 128 KiB (the transfer limit) through an R2T.
        for (slba, blocks, seed) in [(0u64, 1u32, 1u8), (10, 32, 2)] {
            let data = pattern(blocks as usize * 4096, seed);
            let (c, _) = q
                .execute(rw(io_op::WRITE, slba, blocks), Some(&data))
                .await
                .unwrap();
            assert!(c.status.is_success(), "{c:?}");
            let (c, back) = q
                .execute(rw(io_op::READ, slba, blocks), None)
                .await
                .unwrap();
            assert!(c.status.is_success());
            assert_eq!(back, data);
        }
        // Write Zeroes, Dataset Management, Flush.
        let (c, _) = q
            .execute(rw(io_op::WRITE_ZEROES, 10, 2), None)
            .await
            .unwrap();
        assert!(c.status.is_success());
        let (_, back) = q.execute(rw(io_op::READ, 10, 3), None).await.unwrap();
        assert!(back[..8192].iter().all(|b| *b == 0));
        assert_eq!(back[8192..], pattern(32 * 4096, 2)[8192..12288]);
        let mut range = vec![0u8; 16];
        range[4..8].copy_from_slice(&4u32.to_le_bytes());
        range[8..16].copy_from_slice(&20u64.to_le_bytes());
        let mut dsm = Command::new(io_op::DATASET_MANAGEMENT);
        dsm.nsid = 1;
        dsm.cdw11 = 1 << 2;
        let (c, _) = q.execute(dsm, Some(&range)).await.unwrap();
        assert!(c.status.is_success());
        let (_, back) = q.execute(rw(io_op::READ, 20, 4), None).await.unwrap();
        assert!(
            back.iter().all(|b| *b == 0),
            "memory device deallocates to zeros"
        );
        let mut flush = Command::new(io_op::FLUSH);
        flush.nsid = 1;
        assert!(q.execute(flush, None).await.unwrap().0.status.is_success());
        // Errors: out of range, bad namespace.
        let (c, _) = q
            .execute(rw(io_op::READ, SIZE_BYTES / 4096, 1), None)
            .await
            .unwrap();
        assert_eq!(c.status, Status::LBA_OUT_OF_RANGE);
        let mut bad = rw(io_op::READ, 0, 1);
        bad.nsid = 7;
        assert_eq!(
            q.execute(bad, None).await.unwrap().0.status,
            Status::INVALID_NAMESPACE
        );
    }
    let stats = &f.target.bdev("mem0").unwrap().stats;
    assert!(
        stats
            .num_write_ops
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
}

#[tokio::test]
async fn connect_checks_the_host_acl_and_the_subsystem() {
    let f = fixture(false).await;
    let mut q = HostQueue::open(&f.address, Digests::default())
        .await
        .unwrap();
    let c = q
        .fabrics_connect(0, 31, 0xffff, SUBNQN, HOST_BAD, 0)
        .await
        .unwrap();
    assert_eq!(c.status, Status::CONNECT_INVALID_HOST);
    let c = q
        .fabrics_connect(0, 31, 0xffff, "nqn.nope", HOST_OK, 0)
        .await
        .unwrap();
    assert_eq!(c.status, Status::CONNECT_INVALID_PARAMETERS);
    // An I/O queue for a controller that does not exist.
    let c = q
        .fabrics_connect(1, 31, 777, SUBNQN, HOST_OK, 0)
        .await
        .unwrap();
    assert_eq!(c.status, Status::CONNECT_INVALID_PARAMETERS);
    // allow_any_host lets anyone in.
    let f = fixture(true).await;
    let mut q = HostQueue::open(&f.address, Digests::default())
        .await
        .unwrap();
    let c = q
        .fabrics_connect(0, 31, 0xffff, SUBNQN, HOST_BAD, 0)
        .await
        .unwrap();
    assert!(c.status.is_success());
}

#[tokio::test]
async fn discovery_log_lists_the_allowed_subsystems() {
    let f = fixture(false).await;
    for (host, expected) in [(HOST_OK, 1u64), (HOST_BAD, 0)] {
        let mut q = HostQueue::open(&f.address, Digests::default())
            .await
            .unwrap();
        let c = q
            .fabrics_connect(0, 31, 0xffff, DISCOVERY_NQN, host, 0)
            .await
            .unwrap();
        assert!(c.status.is_success(), "{c:?}");
        let mut id = Command::new(admin_op::IDENTIFY);
        id.cdw10 = 1;
        id.data_len = 4096;
        let (_, data) = q.execute(id, None).await.unwrap();
        assert_eq!(data[111], 2, "a discovery controller");
        let mut log = Command::new(admin_op::GET_LOG_PAGE);
        log.cdw10 = 0x70 | ((4096 / 4 - 1) << 16);
        log.data_len = 4096;
        let (c, page) = q.execute(log, None).await.unwrap();
        assert!(c.status.is_success());
        assert_eq!(
            u64::from_le_bytes(page[8..16].try_into().unwrap()),
            expected
        );
        if expected == 1 {
            assert_eq!(page[1024], 3, "TCP");
            assert_eq!(
                &page[1024 + 256..1024 + 256 + SUBNQN.len()],
                SUBNQN.as_bytes()
            );
        }
    }
}

#[tokio::test]
async fn async_event_for_a_new_namespace() {
    let f = fixture(false).await;
    let (mut q, _) = admin(&f, Digests::default(), 0).await;
    let mut set = Command::new(admin_op::SET_FEATURES);
    set.cdw10 = 0x0b;
    set.cdw11 = event::AEC_NS_ATTR | event::AEC_ANA;
    assert!(q.execute(set, None).await.unwrap().0.status.is_success());
    let target = f.target.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        target
            .add_namespace(SUBNQN, "mem0", Some(2), None, None, None)
            .unwrap();
    });
    let (c, _) = q
        .execute(Command::new(admin_op::ASYNC_EVENT_REQUEST), None)
        .await
        .unwrap();
    assert_eq!(c.dw0, event::NS_CHANGED);
    let mut log = Command::new(admin_op::GET_LOG_PAGE);
    log.cdw10 = 4 | ((4096 / 4 - 1) << 16);
    log.data_len = 4096;
    let (_, page) = q.execute(log, None).await.unwrap();
    assert_eq!(&page[0..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn keep_alive_timeout_tears_the_controller_down() {
    let f = fixture(false).await;
    let (mut q, cntlid) = admin(&f, Digests::default(), 100).await;
    let mut io = io_queue(&f, cntlid, Digests::default()).await;
    assert_eq!(f.target.controller_count(), 1);
    // Nothing is sent; the reaper (run here by hand, as the binary's timer does) ends it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.target.controller_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "controller still alive"
        );
        f.target.reap_idle_controllers(std::time::Instant::now());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both queues' connections are closed.
    assert!(q.recv().await.is_err());
    assert!(io.recv().await.is_err());
}

#[tokio::test]
async fn malformed_pdus_close_only_their_connection() {
    let f = fixture(false).await;
    let (_admin, cntlid) = admin(&f, Digests::default(), 0).await;
    let mut good = io_queue(&f, cntlid, Digests::default()).await;
    let garbage: [&[u8]; 4] = [
        &[0xee, 0, 24, 0, 24, 0, 0, 0],
        &[4, 0, 72, 0, 0xff, 0xff, 0xff, 0xff],
        &[
            5, 0, 24, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        // H2CData for a transfer that does not exist.
        &[
            6, 4, 24, 24, 28, 0, 0, 0, 1, 0, 9, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ],
    ];
    for bytes in garbage {
        let mut bad = io_queue(&f, cntlid, Digests::default()).await;
        bad.send_raw(bytes).await.unwrap();
        // A C2HTermReq, then the end of the stream.
        let mut terminated = false;
        loop {
            match bad.recv().await {
                Ok(vitastor_nvmf::pdu::Pdu::TermReq { .. }) => terminated = true,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => break,
            }
        }
        assert!(terminated, "{bytes:?} got a termination request");
        let data = pattern(4096, 9);
        let (c, _) = good
            .execute(rw(io_op::WRITE, 5, 1), Some(&data))
            .await
            .unwrap();
        assert!(c.status.is_success(), "the other queue still works");
    }
    assert_eq!(f.target.controller_count(), 1);
}

/// A small deterministic generator (xorshift64*), so a failing sequence replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick(&mut self, values: &[u32]) -> u32 {
        values[(self.next() % values.len() as u64) as usize]
    }
}

/// Random commands (any opcode but AER, which waits for an event by design; fields mostly
/// near the interesting values) on the admin and I/O queues: every one gets a completion,
/// the queues stay usable, and the data written before reads back unchanged.
#[tokio::test]
async fn random_commands_always_complete() {
    let f = fixture(false).await;
    let (mut admin_q, cntlid) = admin(&f, Digests::default(), 0).await;
    let mut io = io_queue(&f, cntlid, Digests::default()).await;
    let data = pattern(4096, 77);
    let (c, _) = io
        .execute(rw(io_op::WRITE, 2047, 1), Some(&data))
        .await
        .unwrap();
    assert!(c.status.is_success());
    let seed = 0x5eed_0001u64;
    let mut rng = Rng(seed);
    for i in 0..1500 {
        let on_admin = rng.next().is_multiple_of(2);
        let opcode = match rng.next() % 4 {
            0 => (rng.next() & 0xff) as u8,
            _ if on_admin => rng.pick(&[0x02, 0x06, 0x08, 0x09, 0x0a, 0x18, 0x7f]) as u8,
            _ => rng.pick(&[0x00, 0x01, 0x02, 0x08, 0x09, 0x7f]) as u8,
        };
        if opcode == admin_op::ASYNC_EVENT_REQUEST && on_admin {
            continue;
        }
        let mut command = Command::new(opcode);
        let any = rng.next() as u32;
        command.nsid = rng.pick(&[0, 1, 2, 0xffff_ffff, any]);
        let field = |rng: &mut Rng| {
            rng.pick(&[
                0,
                1,
                2,
                3,
                4,
                5,
                7,
                0x0b,
                0x0c,
                0x0f,
                0x16,
                0x70,
                0xffff,
                u32::MAX,
            ]) | (rng.pick(&[0, 0, 1, 0xff, 0xffff]) << 16)
        };
        command.cdw10 = field(&mut rng);
        command.cdw11 = field(&mut rng);
        command.cdw12 = field(&mut rng);
        command.cdw13 = rng.pick(&[0, 0, 1, u32::MAX]);
        // Never the block written above (2047) with non-zero data: deallocate and
        // zeroing of it are excluded by keeping slba low.
        if matches!(opcode, 0x01 | 0x08 | 0x09) && !on_admin {
            command.cdw10 %= 1900;
            command.cdw11 = if opcode == 0x09 { command.cdw11 } else { 0 };
            command.cdw12 &= 0x3f;
        }
        let write_like = opcode & 3 == 1 || (opcode == 0x7f && command.nsid & 3 == 1);
        let data_out = if write_like {
            let len = rng.pick(&[0, 16, 512, 1024, 4096, 8192]) as usize;
            // DSM ranges must stay off block 2047 too.
            Some(vec![0u8; len])
        } else {
            command.data_len = rng.pick(&[0, 16, 4096, 8192, 1 << 20, (1 << 20) + 4096, u32::MAX]);
            None
        };
        let queue = if on_admin { &mut admin_q } else { &mut io };
        let result = queue.execute(command, data_out.as_deref()).await;
        assert!(
            result.is_ok(),
            "seed {seed:#x} command {i} ({command:?}) got {result:?}"
        );
    }
    let (c, back) = io.execute(rw(io_op::READ, 2047, 1), None).await.unwrap();
    assert!(c.status.is_success());
    assert_eq!(back, data, "the block written first is intact");
    assert_eq!(f.target.controller_count(), 1);
}

/// An ANA state change reaches the host as an event and in the ANA log; I/O through an
/// inaccessible path fails with the path status a multipath host fails over on.
#[tokio::test]
async fn ana_state_changes_raise_an_event_and_gate_io() {
    let f = fixture(false).await;
    let (mut q, cntlid) = admin(&f, Digests::default(), 0).await;
    let mut io = io_queue(&f, cntlid, Digests::default()).await;
    let mut set = Command::new(admin_op::SET_FEATURES);
    set.cdw10 = 0x0b;
    set.cdw11 = event::AEC_ANA;
    assert!(q.execute(set, None).await.unwrap().0.status.is_success());
    let key = f.target.subsystem(SUBNQN).unwrap().listeners[0]
        .address
        .key();
    let target = f.target.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        target
            .set_ana_state(
                SUBNQN,
                &key,
                vitastor_nvmf::config::AnaState::Inaccessible,
                None,
            )
            .unwrap();
    });
    let (c, _) = q
        .execute(Command::new(admin_op::ASYNC_EVENT_REQUEST), None)
        .await
        .unwrap();
    assert_eq!(c.dw0, event::ANA_CHANGED);
    let mut log = Command::new(admin_op::GET_LOG_PAGE);
    log.cdw10 = 0x0c | ((4096 / 4 - 1) << 16);
    log.data_len = 4096;
    let (_, page) = q.execute(log, None).await.unwrap();
    assert_eq!(page[16 + 16], 3, "inaccessible");
    let (c, _) = io.execute(rw(io_op::READ, 0, 1), None).await.unwrap();
    assert_eq!(c.status, Status::ANA_INACCESSIBLE);
}
