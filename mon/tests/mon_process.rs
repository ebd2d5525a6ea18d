//! The monitor as a process against a real etcd: placement of pools written with etcdctl,
//! master failover between two monitors, primaries moved off a down OSD, an invalid pool
//! skipped, Prometheus metrics; and with real OSD processes, every PG becoming active and
//! the data leaving an OSD that stays down past osd_out_time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vitastor_proto::etcd::PgConfig;
use vitastor_testkit::{free_port, wait_for, workspace_binary, Etcd, ScratchDir};

struct Processes(Vec<Option<Child>>);

impl Processes {
    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.0[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for index in 0..self.0.len() {
            self.kill(index);
        }
    }
}

fn start_mon(etcd: &Etcd, dir: &std::path::Path, name: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vitastor-mon"))
        .args(["--etcd_address", &etcd.address])
        .args(["--prometheus_port", &port.to_string()])
        .args([
            "--etcd_mon_ttl",
            "2",
            "--mon_change_timeout",
            "100",
            "--mon_stats_timeout",
            "300",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap()
}

fn pg_config(etcd: &Etcd) -> PgConfig {
    etcd.get("/vitastor/pg/config")
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default()
}

fn master_pid(etcd: &Etcd) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(&etcd.get("/vitastor/mon/master")?).ok()?;
    value["id"].as_str()?.strip_prefix("pid ")?.parse().ok()
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Registers an OSD the way a running one would look in etcd (without its lease).
fn fake_osd(etcd: &Etcd, osd: u64, host: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    etcd.put(
        &format!("/vitastor/osd/stats/{osd}"),
        &format!(r#"{{"time":"{now}","size":1099511627776,"free":1099511627776,"host":"{host}","op_stats":{{"write":{{"count":5,"bytes":20480}}}}}}"#),
    );
    etcd.put(
        &format!("/vitastor/osd/state/{osd}"),
        &format!(
            r#"{{"state":"up","addresses":["127.0.0.1"],"port":{},"host":"{host}"}}"#,
            20000 + osd
        ),
    );
}

#[test]
fn placement_failover_liveness_and_metrics() {
    let scratch = ScratchDir::new("mon-failover");
    let etcd = Etcd::start(&scratch.0);
    for osd in 1..=6 {
        fake_osd(&etcd, osd, &format!("host{}", osd.div_ceil(2)));
    }
    // The pools exactly as in pools.example.json, through etcdctl.
    let pools = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pools.example.json"
    ))
    .unwrap();
    etcd.put("/vitastor/config/pools", &pools);

    let ports = [free_port(), free_port()];
    let mut mons = Processes(vec![
        Some(start_mon(&etcd, &scratch.0, "mon1", ports[0])),
        Some(start_mon(&etcd, &scratch.0, "mon2", ports[1])),
    ]);
    wait_for("the PG map", Duration::from_secs(20), || {
        let config = pg_config(&etcd);
        config.items.get("1").is_some_and(|p| p.len() == 32)
            && config.items.get("2").is_some_and(|p| p.len() == 32)
    });
    let config = pg_config(&etcd);
    let host_of = |osd: u64| osd.div_ceil(2);
    for (pool, pgs) in &config.items {
        for (pg, item) in pgs {
            let hosts: BTreeSet<u64> = item.osd_set.iter().map(|&o| host_of(o)).collect();
            assert_eq!(
                hosts.len(),
                item.osd_set.len(),
                "pool {pool} PG {pg}: {:?}",
                item.osd_set
            );
            assert!(item.osd_set.contains(&item.primary));
        }
    }
    assert_eq!(
        config.items["2"]["1"].osd_set.len(),
        4,
        "EC 2+2 sets have 4 chunks"
    );

    // Kill the master; the standby takes over within a few seconds.
    let master = master_pid(&etcd).expect("a master");
    let (master_index, standby_index) = if mons.0[0].as_ref().unwrap().id() == master {
        (0, 1)
    } else {
        (1, 0)
    };
    let standby_pid = mons.0[standby_index].as_ref().unwrap().id();
    let killed_at = Instant::now();
    mons.kill(master_index);
    wait_for("the standby to take over", Duration::from_secs(15), || {
        master_pid(&etcd) == Some(standby_pid)
    });
    let takeover = killed_at.elapsed();
    eprintln!("standby took over after {takeover:?}");
    assert!(
        takeover < Duration::from_secs(8),
        "takeover took {takeover:?}"
    );

    // OSD 3 goes down: it stops being primary at once, and no data moves (out time 600 s).
    etcd.delete("/vitastor/osd/state/3");
    wait_for("primaries to leave OSD 3", Duration::from_secs(10), || {
        pg_config(&etcd)
            .items
            .values()
            .flat_map(|p| p.values())
            .all(|item| item.primary != 3)
    });
    let after = pg_config(&etcd);
    for (pool, pgs) in &after.items {
        for (pg, item) in pgs {
            assert_eq!(
                item.osd_set, config.items[pool][pg].osd_set,
                "pool {pool} PG {pg} moved"
            );
        }
    }

    // An invalid pool 3 is reported and skipped; pools 1 and 2 keep working (pool 1 grows
    // to 64 PGs through a pause: no OSD serves its PGs here, so the pause ends at once).
    let mut pools_json: BTreeMap<String, serde_json::Value> = serde_json::from_str(&pools).unwrap();
    pools_json.insert("3".into(), serde_json::json!({"name":"broken","scheme":"replicated","pg_size":0,"pg_minsize":1,"pg_count":8}));
    pools_json.get_mut("1").unwrap()["pg_count"] = 64.into();
    etcd.put(
        "/vitastor/config/pools",
        &serde_json::to_string(&pools_json).unwrap(),
    );
    wait_for("pool 1 to have 64 PGs", Duration::from_secs(10), || {
        pg_config(&etcd)
            .items
            .get("1")
            .is_some_and(|p| p.len() == 64 && p.values().all(|i| !i.pause))
    });
    assert!(!pg_config(&etcd).items.contains_key("3"));
    let history = etcd
        .get("/vitastor/pg/history/1/33")
        .expect("history for new PG 33");
    assert!(history.contains("osd_sets"), "{history}");
    let log =
        std::fs::read_to_string(scratch.0.join(format!("mon{}.log", standby_index + 1))).unwrap();
    assert!(log.contains("pool 3") && log.contains("pg_size"), "{log}");

    // Metrics and aggregates from the master.
    wait_for("stats", Duration::from_secs(10), || {
        etcd.get("/vitastor/stats")
            .is_some_and(|s| s.contains("\"up\":5"))
    });
    let stats: serde_json::Value =
        serde_json::from_str(&etcd.get("/vitastor/stats").unwrap()).unwrap();
    assert_eq!(stats["op_stats"]["write"]["count"], 30);
    assert!(etcd
        .get("/vitastor/pool/stats/1")
        .unwrap()
        .contains("raw_to_usable"));
    let metrics = http_get(ports[standby_index], "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("vitastor_mon_master 1"), "{metrics}");
    assert!(
        metrics.contains("vitastor_osd_up{osd=\"3\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vitastor_pool_pgs{pool=\"2\",pool_name=\"ecpool\",state=\"offline\"} 32"),
        "{metrics}"
    );
    assert!(http_get(ports[standby_index], "/nothing").starts_with("HTTP/1.1 404"));
}

#[test]
fn unreachable_etcd_and_taken_port_are_clear_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_vitastor-mon"))
        .args(["--etcd_address", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to etcd") || stderr.contains("cannot read"),
        "{stderr}"
    );

    let scratch = ScratchDir::new("mon-port");
    let etcd = Etcd::start(&scratch.0);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = Command::new(env!("CARGO_BIN_EXE_vitastor-mon"))
        .args([
            "--etcd_address",
            &etcd.address,
            "--prometheus_port",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen"));
}

/// Real OSDs: the monitor places a pool nobody wrote a PG map for; every PG becomes
/// active; an OSD that stays down past osd_out_time loses its slots and the PGs become
/// active again on the others.
#[test]
fn real_osds_serve_what_the_monitor_places() {
    let scratch = ScratchDir::new("mon-osds");
    let etcd = Etcd::start(&scratch.0);
    etcd.put(
        "/vitastor/config/global",
        r#"{"immediate_commit":"all","osd_out_time":3}"#,
    );
    let mut processes = Processes(Vec::new());
    for osd in 1..=3u64 {
        let path = scratch.0.join(format!("osd{osd}.bin"));
        std::fs::File::create(&path)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let status = Command::new(workspace_binary("vitastor-disk"))
            .args([
                "prepare",
                "--data_device",
                path.to_str().unwrap(),
                "--journal_size",
                "16M",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let child = Command::new(workspace_binary("vitastor-osd"))
            .args([
                "--osd_num",
                &osd.to_string(),
                "--data_device",
                path.to_str().unwrap(),
            ])
            .args([
                "--etcd_address",
                &etcd.address,
                "--etcd_report_interval",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.0.join(format!("osd{osd}.log"))).unwrap())
            .spawn()
            .unwrap();
        processes.0.push(Some(child));
    }
    processes
        .0
        .push(Some(start_mon(&etcd, &scratch.0, "mon", free_port())));
    // All OSDs are on this machine's host: place by OSD.
    etcd.put(
        "/vitastor/config/pools",
        r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"failure_domain":"osd"}}"#,
    );
    let all_active = |etcd: &Etcd| {
        let config = pg_config(etcd);
        let states = etcd.get_prefix("/vitastor/pg/state/1/");
        config.items.get("1").is_some_and(|pgs| {
            pgs.len() == 8
                && pgs.iter().all(|(pg, item)| {
                    states.iter().any(|(k, v)| {
                        k == &format!("/vitastor/pg/state/1/{pg}")
                            && v.contains("\"active\"")
                            && v.contains(&format!("\"primary\":{}", item.primary))
                    })
                })
        })
    };
    wait_for("all PGs active", Duration::from_secs(30), || {
        all_active(&etcd)
    });

    processes.kill(1); // OSD 2, kill -9
    wait_for("OSD 2 to leave every set", Duration::from_secs(30), || {
        pg_config(&etcd).items["1"]
            .values()
            .all(|item| !item.osd_set.contains(&2))
    });
    wait_for(
        "all PGs active without OSD 2",
        Duration::from_secs(30),
        || all_active(&etcd),
    );
    let config = pg_config(&etcd);
    assert!(config.items["1"]
        .values()
        .all(|item| item.osd_set.len() == 2 && !item.osd_set.contains(&0)));
}
