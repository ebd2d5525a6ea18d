//! Process-level test harness: a real etcd on free 127.0.0.1 ports, OSD processes on files
//! in a temporary directory, a small blocking wire client. Every process is killed and the
//! directory removed when the harness is dropped (also when a test fails).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vitastor_proto::wire::request::Rw;
use vitastor_proto::wire::{encode_request, Reply, ReplyDecoder, Request, RequestBody};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `condition` with a deadline (no sleeps as synchronization).
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub etcd_address: String,
    etcd: Child,
    pub osds: Vec<Option<Child>>,
}

impl Cluster {
    pub fn start(name: &str, osd_count: usize) -> Cluster {
        let dir = std::env::temp_dir().join(format!("vitastor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (client_port, peer_port) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Command::new("etcd")
            .args(["--data-dir", dir.join("etcd").to_str().unwrap()])
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap())
            .spawn()
            .expect(
                "etcd is not installed (apt install etcd-server); scripts/setup.sh installs it",
            );
        let mut cluster = Cluster {
            dir,
            etcd_address: format!("127.0.0.1:{client_port}"),
            etcd,
            osds: Vec::new(),
        };
        wait_for("etcd", Duration::from_secs(30), || {
            cluster.etcdctl(&["endpoint", "health"]).is_ok()
        });
        for num in 1..=osd_count {
            let path = cluster.osd_file(num as u64);
            std::fs::File::create(&path)
                .unwrap()
                .set_len(256 << 20)
                .unwrap();
            let status = Command::new(env!("CARGO_BIN_EXE_vitastor-disk"))
                .args(["prepare", "--data_device", path.to_str().unwrap()])
                .args(["--journal_size", "16M"])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "vitastor-disk prepare failed");
            cluster.osds.push(None);
        }
        cluster
    }

    pub fn osd_file(&self, num: u64) -> PathBuf {
        self.dir.join(format!("osd{num}.bin"))
    }

    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.etcd_address))
            .args(args)
            .output()
            .map_err(|e| format!("etcdctl: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).to_string());
        }
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    }

    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl(&["put", key, value]).expect("etcdctl put");
    }

    /// `key -> value` for every key under `prefix`.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self
            .etcdctl(&["get", "--prefix", prefix])
            .unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|pair| pair.len() == 2)
            .map(|pair| (pair[0].to_string(), pair[1].to_string()))
            .collect()
    }

    pub fn osd_command(&self, num: u64) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vitastor-osd"));
        command
            .args(["--osd_num", &num.to_string()])
            .args(["--data_device", self.osd_file(num).to_str().unwrap()])
            .args(["--etcd_address", &self.etcd_address])
            .args(["--etcd_report_interval", "1"]);
        command
    }

    pub fn start_osd(&mut self, num: u64) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("osd{num}.log")))
            .unwrap();
        let child = self
            .osd_command(num)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.osds[num as usize - 1] = Some(child);
    }

    pub fn kill_osd(&mut self, num: u64) {
        if let Some(mut child) = self.osds[num as usize - 1].take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    pub fn osd_log(&self, num: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("osd{num}.log"))).unwrap_or_default()
    }

    /// The address of OSD `num` from `/osd/state`, if it is up.
    pub fn osd_address(&self, num: u64) -> Option<String> {
        let out = self
            .etcdctl(&[
                "get",
                "--print-value-only",
                &format!("/vitastor/osd/state/{num}"),
            ])
            .ok()?;
        let state: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
        Some(format!(
            "{}:{}",
            state["addresses"][0].as_str()?,
            state["port"]
        ))
    }

    /// Waits until every PG in `pgs` is `active` in `/pg/state`.
    pub fn wait_active(&self, pgs: &[(u32, u32)], timeout: Duration) {
        wait_for("all PGs active", timeout, || {
            let states = self.get_prefix("/vitastor/pg/state/");
            pgs.iter().all(|(pool, pg)| {
                let key = format!("/vitastor/pg/state/{pool}/{pg}");
                states
                    .iter()
                    .any(|(k, v)| *k == key && v.contains("\"active\""))
            })
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.osds.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

/// A blocking client connection to one OSD.
pub struct WireClient {
    pub stream: TcpStream,
    decoder: ReplyDecoder,
    next_id: u64,
}

impl WireClient {
    pub fn connect(address: &str) -> std::io::Result<WireClient> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(WireClient {
            stream,
            decoder: ReplyDecoder::new(),
            next_id: 1,
        })
    }

    pub fn call(&mut self, body: RequestBody, payload: &[u8]) -> std::io::Result<(Reply, Vec<u8>)> {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = encode_request(&Request { id, body }, payload).unwrap();
        self.stream.write_all(&bytes)?;
        self.read_reply()
    }

    pub fn read_reply(&mut self) -> std::io::Result<(Reply, Vec<u8>)> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match self.decoder.next_reply() {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.decoder.push(&buf[..n]);
        }
    }

    pub fn write(&mut self, inode: u64, offset: u64, data: &[u8]) -> std::io::Result<i64> {
        let rw = Rw {
            inode,
            offset,
            len: data.len() as u32,
            ..Rw::default()
        };
        Ok(self.call(RequestBody::Write(rw), data)?.0.retval)
    }

    /// Data read (after the bitmap), or the negative errno.
    pub fn read(
        &mut self,
        inode: u64,
        offset: u64,
        len: u32,
    ) -> std::io::Result<Result<Vec<u8>, i64>> {
        let rw = Rw {
            inode,
            offset,
            len,
            ..Rw::default()
        };
        let (reply, payload) = self.call(RequestBody::Read(rw), &[])?;
        if reply.retval < 0 {
            return Ok(Err(reply.retval));
        }
        let vitastor_proto::wire::ReplyBody::Rw { bitmap_len, .. } = reply.body else {
            return Ok(Err(-5));
        };
        Ok(Ok(payload[bitmap_len as usize..].to_vec()))
    }
}
