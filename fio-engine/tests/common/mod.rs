//! Debian's fio run in the background through our engine, with its JSON status reports
//! collected as they come (shared by the fio process tests).
#![allow(dead_code)] // each test uses a part

use serde_json::Value;
use std::io::{BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// fio running in the background; killed on drop (also when the test fails).
pub struct Fio {
    pub child: Child,
    /// Every JSON report fio printed so far (one per second, then the final one).
    pub reports: Arc<Mutex<Vec<Value>>>,
    /// Set when stdout held something other than JSON reports.
    pub garbage: Arc<Mutex<Option<String>>>,
    pub reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Fio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// (timestamp_ms, bytes written + bytes read back) of one fio report.
pub fn progress(report: &Value) -> (u64, u64) {
    let job = &report["jobs"][0];
    let bytes = |dir: &str| job[dir]["io_bytes"].as_u64().unwrap_or(0);
    (
        report["timestamp_ms"].as_u64().unwrap_or(0),
        bytes("write") + bytes("read"),
    )
}

impl Fio {
    /// Starts fio with `args` (job options) and JSON reports every second.
    pub fn start(args: &[String], stderr: std::fs::File) -> Fio {
        let mut child = Command::new("fio")
            .args(args)
            .args(["--output-format=json", "--status-interval=1"])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("fio is not installed (apt install fio); scripts/setup.sh installs it");
        let stdout = child.stdout.take().expect("fio stdout");
        let reports = Arc::new(Mutex::new(Vec::new()));
        let garbage = Arc::new(Mutex::new(None));
        let reader = {
            let (reports, garbage) = (reports.clone(), garbage.clone());
            std::thread::spawn(move || {
                let mut stdout = BufReader::new(stdout);
                let stream =
                    serde_json::Deserializer::from_reader(&mut stdout).into_iter::<Value>();
                for report in stream {
                    match report {
                        Ok(report) => reports.lock().unwrap().push(report),
                        Err(e) => {
                            let mut rest = String::new();
                            let _ = stdout.read_to_string(&mut rest);
                            *garbage.lock().unwrap() = Some(format!("{e}: ...{rest}"));
                            return;
                        }
                    }
                }
            })
        };
        Fio {
            child,
            reports,
            garbage,
            reader: Some(reader),
        }
    }

    pub fn reports(&self) -> Vec<(u64, u64)> {
        self.reports.lock().unwrap().iter().map(progress).collect()
    }

    /// Whether fio reported I/O completed after `since_ms` (wall clock): two reports,
    /// both generated after it, the later with more bytes done.
    pub fn progressed_since(&self, since_ms: u64) -> bool {
        let after: Vec<(u64, u64)> = self
            .reports()
            .into_iter()
            .filter(|(t, _)| *t > since_ms)
            .collect();
        match (after.first(), after.last()) {
            (Some(first), Some(last)) => last.1 > first.1,
            _ => false,
        }
    }

    /// The reports as "+ms: written/read" relative to `base_ms`, for failure messages.
    pub fn history(&self, base_ms: u64) -> String {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let job = &r["jobs"][0];
                format!(
                    "{:+}ms: w {} r {}",
                    r["timestamp_ms"].as_u64().unwrap_or(0) as i64 - base_ms as i64,
                    job["write"]["io_bytes"],
                    job["read"]["io_bytes"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("fio try_wait").is_none()
    }
}
