//! Lease fencing with a real etcd: an OSD whose etcd connection is cut (a TCP proxy in
//! front of etcd for that OSD only, stopped) stops serving its PGs before etcd can expire
//! its lease, answers clients with a retryable -EPIPE, does not exit, and once etcd is
//! reachable again (its lease expired meanwhile) registers under a new lease, claims its
//! PG again and serves the data it had.

mod common;

use common::{wait_for, Cluster, WireClient};
use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vitastor_proto::errno;

/// Lease TTL of the OSDs here: etcd_report_interval 1 + max_etcd_attempts 2 x 1 s.
const TTL: Duration = Duration::from_secs(3);
const INODE: u64 = 1 << 48 | 1;

/// A TCP proxy on a fixed 127.0.0.1 port to `target`; `stop` closes the listener and
/// every connection through it (the OSD's etcd connection breaks and new ones are
/// refused), `start` listens again on the same port.
struct Proxy {
    port: u16,
    target: String,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    fn new(target: &str) -> Proxy {
        let mut proxy = Proxy {
            port: vitastor_testkit::free_port(),
            target: target.to_string(),
            stop: Arc::new(AtomicBool::new(false)),
            connections: Arc::default(),
            acceptor: None,
        };
        proxy.start();
        proxy
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        assert!(self.acceptor.is_none(), "the proxy already runs");
        let mut bound = None;
        wait_for("the proxy port", Duration::from_secs(10), || {
            bound = TcpListener::bind(("127.0.0.1", self.port)).ok();
            bound.is_some()
        });
        let listener = bound.expect("bound above");
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, Ordering::SeqCst);
        let (stop, connections, target) = (
            self.stop.clone(),
            self.connections.clone(),
            self.target.clone(),
        );
        self.acceptor = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        // Polls the stop flag; the listener closes when this thread ends.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = client.set_nonblocking(false);
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut list = connections.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(upstream.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        }));
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn osd_state_exists(cluster: &Cluster, num: u64) -> bool {
    !cluster
        .get_prefix(&format!("/vitastor/osd/state/{num}"))
        .is_empty()
}

/// A 2-OSD cluster with one PG (set [1, 2], primary 1) whose OSD 1 (started here with
/// `lease` options) reaches etcd only through a proxy the test can stop.
fn osd1_behind_a_proxy(name: &str, lease: &[&str]) -> (Cluster, Proxy) {
    let mut cluster = Cluster::start(name, 2);
    cluster.put(
        "/vitastor/config/pools",
        r#"{"1":{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":1,"failure_domain":"osd"}}"#,
    );
    cluster.put(
        "/vitastor/pg/config",
        r#"{"items":{"1":{"1":{"osd_set":[1,2],"primary":1}}}}"#,
    );
    let proxy = Proxy::new(&cluster.etcd_address);
    let mut osd1 = std::process::Command::new(env!("CARGO_BIN_EXE_vitastor-osd"));
    osd1.args(["--osd_num", "1"])
        .args(["--data_device", cluster.osd_file(1).to_str().unwrap()])
        .args(["--etcd_address", &proxy.address()])
        .args(lease);
    cluster.start_osd_with(1, osd1);
    (cluster, proxy)
}

#[test]
fn osd_cut_off_from_etcd_stops_before_its_lease_expires_and_comes_back() {
    let short_lease = ["--etcd_report_interval", "1", "--max_etcd_attempts", "2"];
    let (mut cluster, mut proxy) = osd1_behind_a_proxy("etcd-fence", &short_lease);
    let mut osd2 = cluster.osd_command(2);
    osd2.args(["--max_etcd_attempts", "2"]);
    cluster.start_osd_with(2, osd2);
    cluster.wait_active(&[(1, 1)], Duration::from_secs(60));

    let address = cluster.osd_address(1).expect("OSD 1 is up");
    let mut client = WireClient::connect(&address).unwrap();
    let data = vec![0x5a; 4096];
    assert!(client.write(INODE, 0, &data).unwrap() >= 0);

    // Cut OSD 1 off from etcd. It must stop serving strictly before etcd can expire its
    // lease: the key it lives under is still there when it has stopped.
    let cut = Instant::now();
    proxy.stop();
    wait_for("OSD 1 stops its PGs", Duration::from_secs(10), || {
        cluster.osd_log(1).contains("stopping every PG")
    });
    let fenced_after = cut.elapsed();
    assert!(
        osd_state_exists(&cluster, 1),
        "OSD 1's lease expired before it stopped serving ({fenced_after:?} after the cut)"
    );
    assert!(
        fenced_after < TTL,
        "stopped {fenced_after:?} after the cut, the lease TTL is {TTL:?}"
    );
    eprintln!("OSD 1 stopped serving {fenced_after:?} after losing etcd (lease TTL {TTL:?})");
    // Clients get a retryable answer, not data from a fenced primary.
    assert_eq!(
        client.write(INODE, 0, &data).unwrap(),
        -i64::from(errno::EPIPE)
    );
    assert_eq!(
        client.read(INODE, 0, 4096).unwrap(),
        Err(-i64::from(errno::EPIPE))
    );

    // etcd expires the lease; OSD 1 keeps running.
    wait_for("OSD 1's lease expires", Duration::from_secs(15), || {
        !osd_state_exists(&cluster, 1)
    });
    let expired_after = cut.elapsed();
    eprintln!("etcd expired OSD 1's lease {expired_after:?} after the cut");
    assert!(fenced_after < expired_after);
    assert!(
        cluster.osds[0]
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "OSD 1 exited"
    );

    // etcd is reachable again: a new lease, /osd/state again, the PG claimed again.
    proxy.start();
    let back = Instant::now();
    wait_for("OSD 1 registered again", Duration::from_secs(20), || {
        cluster
            .osd_log(1)
            .contains("registered again under a new lease")
    });
    cluster.wait_active(&[(1, 1)], Duration::from_secs(30));
    eprintln!(
        "OSD 1 served again {:?} after etcd came back",
        back.elapsed()
    );
    let mut client = WireClient::connect(&cluster.osd_address(1).unwrap()).unwrap();
    assert_eq!(client.read(INODE, 0, 4096).unwrap(), Ok(data.clone()));
    assert!(client.write(INODE, 4096, &data).unwrap() >= 0);
    assert!(
        cluster.osds[0]
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "OSD 1 exited"
    );
    assert!(
        cluster.osds[1]
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "OSD 2 exited"
    );
}

/// The lease of OSD `num`'s registration, in hex as etcdctl takes it.
fn osd_lease(cluster: &Cluster, num: u64) -> String {
    let out = cluster
        .etcdctl(&["get", &format!("/vitastor/osd/state/{num}"), "-w", "json"])
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let lease = json["kvs"][0]["lease"]
        .as_i64()
        .expect("OSD state is leased");
    format!("{lease:x}")
}

/// The takeover side of fencing: etcd drops a primary's lease while the primary cannot
/// hear about it (cut off from etcd, its own deadline still ahead), and another OSD takes
/// the PG over in a new epoch. The deposed primary still believes it serves the PG, but a
/// write it takes must not be acknowledged, and the new primary serves the data
/// acknowledged before. (Here the new primary's listing carries the new epoch and tells
/// the old one to stop; when it cannot reach the old one, its sub-ops with the old epoch
/// are refused instead. With both checks removed this test fails: the write is
/// acknowledged.)
#[test]
fn a_deposed_primary_cannot_acknowledge_writes_after_a_takeover() {
    // A long lease: OSD 1 keeps serving ~10 s after it last reached etcd.
    let long_lease = ["--etcd_report_interval", "1", "--max_etcd_attempts", "10"];
    let (mut cluster, mut proxy) = osd1_behind_a_proxy("etcd-takeover", &long_lease);
    cluster.start_osd(2);
    cluster.wait_active(&[(1, 1)], Duration::from_secs(60));
    let mut client = WireClient::connect(&cluster.osd_address(1).unwrap()).unwrap();
    let before = vec![0x11; 4096];
    assert!(client.write(INODE, 0, &before).unwrap() >= 0);

    // OSD 1 loses etcd; etcd drops its lease at once (as the monitor or a peer does for an
    // OSD it believes dead) and the PG moves to OSD 2.
    let lease = osd_lease(&cluster, 1);
    let cut = Instant::now();
    proxy.stop();
    cluster.etcdctl(&["lease", "revoke", &lease]).unwrap();
    cluster.put(
        "/vitastor/pg/config",
        r#"{"items":{"1":{"1":{"osd_set":[1,2],"primary":2}}}}"#,
    );
    wait_for("OSD 2 serves the PG", Duration::from_secs(8), || {
        cluster
            .get_prefix("/vitastor/pg/state/1/1")
            .iter()
            .any(|(_, v)| v.contains("\"active\"") && v.contains("\"primary\":2"))
    });
    assert!(
        !cluster.osd_log(1).contains("stopping every PG"),
        "OSD 1 fenced itself already: the test did not reach the takeover window"
    );

    // The deposed primary takes a write: it must not be acknowledged.
    let stale = vec![0x22; 4096];
    let answer = client.write(INODE, 0, &stale);
    let in_window = !cluster.osd_log(1).contains("stopping every PG");
    eprintln!(
        "write through the deposed primary {:?} after the cut: {answer:?} (before its own deadline: {in_window})",
        cut.elapsed()
    );
    assert!(
        !matches!(answer, Ok(n) if n >= 0),
        "a deposed primary acknowledged a write"
    );
    assert!(
        in_window,
        "OSD 1 fenced itself before the write: nothing was tested"
    );

    let mut client2 = WireClient::connect(&cluster.osd_address(2).unwrap()).unwrap();
    assert_eq!(client2.read(INODE, 0, 4096).unwrap(), Ok(before.clone()));
    let after = vec![0x33; 4096];
    assert!(client2.write(INODE, 0, &after).unwrap() >= 0);

    // OSD 1 comes back and becomes primary again: it serves the new primary's data.
    proxy.start();
    wait_for("OSD 1 registered again", Duration::from_secs(30), || {
        osd_state_exists(&cluster, 1)
    });
    cluster.put(
        "/vitastor/pg/config",
        r#"{"items":{"1":{"1":{"osd_set":[1,2],"primary":1}}}}"#,
    );
    wait_for("OSD 1 serves the PG again", Duration::from_secs(30), || {
        cluster
            .get_prefix("/vitastor/pg/state/1/1")
            .iter()
            .any(|(_, v)| v.contains("\"active\"") && v.contains("\"primary\":1"))
    });
    let mut client = WireClient::connect(&cluster.osd_address(1).unwrap()).unwrap();
    assert_eq!(client.read(INODE, 0, 4096).unwrap(), Ok(after));
}
