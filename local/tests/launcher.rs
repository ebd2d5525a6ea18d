//! The launcher as a user runs it: start, the cluster answers etcdctl and vitastor-cli,
//! `stop` from another process ends everything (nothing left running); Ctrl-C (SIGINT)
//! does the same; and the refusals: directory not writable, port taken, etcd missing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vitastor_testkit::{workspace_binary, ScratchDir};

fn launcher() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vitastor-local"))
}

/// Starts the launcher and waits for its "Local cluster running" banner.
fn start(dir: &std::path::Path) -> (Child, String) {
    let mut child = launcher()
        .args([
            "start",
            "--dir",
            dir.to_str().unwrap(),
            "--osds",
            "2",
            "--osd_size",
            "256M",
            "--pg_count",
            "8",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Stop with") {
            break;
        }
    }
    assert!(
        banner.contains("Local cluster running"),
        "launcher did not start: {banner}"
    );
    std::thread::spawn(move || for _ in lines {});
    (child, banner)
}

fn pids(dir: &std::path::Path) -> Vec<i32> {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).unwrap()).unwrap();
    state["pids"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap() as i32)
        .collect()
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn start_use_and_stop() {
    let scratch = ScratchDir::new("launcher");
    let dir = scratch.0.join("cluster");
    let (mut child, banner) = start(&dir);
    let etcd = banner
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--endpoints="))
        .expect("banner names etcd")
        .to_string();
    let processes = pids(&dir);
    assert_eq!(processes.len(), 4, "etcd, 2 OSDs, mon");
    let status = Command::new(workspace_binary("vitastor-cli"))
        .args(["--etcd_address", &etcd, "ls", "--json"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("testimg"));

    // A second launcher on the same directory refuses.
    let second = launcher()
        .args(["start", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    let stop = launcher()
        .args(["stop", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(child.wait().unwrap().success());
    assert!(
        processes.iter().all(|&pid| !alive(pid)),
        "processes left running"
    );
    assert!(!dir.join("cluster.json").exists());

    // Again, with data kept, stopped by Ctrl-C.
    let (mut child, _) = start(&dir);
    let processes = pids(&dir);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        processes.iter().all(|&pid| alive(pid)),
        "a process died after the restart"
    );
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 2) };
    assert!(child.wait().unwrap().success());
    assert!(
        processes.iter().all(|&pid| !alive(pid)),
        "processes left running after SIGINT"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn refusals_are_clear() {
    let scratch = ScratchDir::new("launcher-refusals");
    let readonly = scratch.0.join("ro");
    std::fs::create_dir_all(&readonly).unwrap();
    let file = scratch.0.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let output = launcher()
        .args(["start", "--dir", file.join("sub").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not writable"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = launcher()
        .args([
            "start",
            "--dir",
            scratch.0.join("c").to_str().unwrap(),
            "--etcd_port",
            &port,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("port {port} is taken")));

    let output = launcher()
        .args(["start", "--dir", scratch.0.join("d").to_str().unwrap()])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("etcd is not installed"));

    let output = launcher()
        .args(["stop", "--dir", scratch.0.join("none").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no cluster is running"));
}
