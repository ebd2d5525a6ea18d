//! Process-level test harness: a real etcd on free 127.0.0.1 ports, OSD processes on files
//! in a temporary directory, a small blocking wire client. Every process is killed and the
//! directory removed when the harness is dropped (also when a test fails).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vitastor_proto::wire::request::Rw;
use vitastor_proto::wire::{encode_request, Reply, ReplyDecoder, Request, RequestBody};
pub use vitastor_testkit::wait_for;
use vitastor_testkit::{Etcd, ScratchDir};

pub struct Cluster {
    pub dir: PathBuf,
    pub etcd_address: String,
    pub osds: Vec<Option<Child>>,
    // Dropped after the OSDs are killed (see Drop): etcd, then the directory.
    etcd: Etcd,
    _scratch: ScratchDir,
}

impl Cluster {
    pub fn start(name: &str, osd_count: usize) -> Cluster {
        let scratch = ScratchDir::new(name);
        let dir = scratch.0.clone();
        let etcd = Etcd::start(&dir);
        let mut cluster = Cluster {
            dir,
            etcd_address: etcd.address.clone(),
            osds: Vec::new(),
            etcd,
            _scratch: scratch,
        };
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
        self.etcd.etcdctl(args)
    }

    pub fn put(&self, key: &str, value: &str) {
        self.etcd.put(key, value);
    }

    /// `key -> value` for every key under `prefix`.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.etcd.get_prefix(prefix)
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
        let command = self.osd_command(num);
        self.start_osd_with(num, command);
    }

    /// Starts OSD `num` with a command line of the test's own (see [`Cluster::osd_command`]).
    pub fn start_osd_with(&mut self, num: u64, mut command: Command) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("osd{num}.log")))
            .unwrap();
        let child = command.stdout(Stdio::null()).stderr(log).spawn().unwrap();
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
