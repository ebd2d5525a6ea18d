//! Background recovery and rebalance with real processes (a real etcd, `vitastor-mon`,
//! `vitastor-osd`s, and Debian's fio through our engine with verify=crc32c), the way an
//! operator meets them:
//!
//! 1. Three OSDs, a 2-replica pool, the image filled with data (`FIO_RECOVERY_MB`, 64 MiB
//!    by default). A verified random-write load runs throughout.
//! 2. `kill -9` OSD 3 and let it go out (`osd_out_time` 3 s): the monitor moves its PGs to
//!    OSDs 1 and 2, they recover in the background while serving, and every PG becomes
//!    exactly `["active"]`.
//! 3. With `no_rebalance` set, add OSD 4: the monitor moves PGs onto it, they activate
//!    with `has_misplaced` and wait. The primary of such a PG is killed (`kill -9`) and
//!    restarted in the middle of that rebalance; `no_rebalance` is cleared: every PG
//!    becomes `["active"]`, the OSDs that left a PG's set drop their copies (they leave
//!    the PG's `all_peers`). `vitastor-cli status` shows the
//!    misplaced objects left while rebalance waits.
//! 4. fio never stalls for more than `MAX_STALL` (failovers and repeering included),
//!    exits 0 and read back and verified every block it wrote; the filled data (written
//!    with fio's verify headers) verifies too.

mod common;

use common::{now_ms, Fio};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vitastor_testkit::{built_library, wait_for, workspace_binary, LocalCluster};

const PG_COUNT: usize = 16;
const POOLS: &str = r#"{"1":{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":16,"failure_domain":"osd"}}"#;
const GLOBAL: &str = r#"{"immediate_commit":"all","osd_out_time":3}"#;
const GLOBAL_NO_REBALANCE: &str =
    r#"{"immediate_commit":"all","osd_out_time":3,"no_rebalance":true}"#;
const OSD_SIZE: u64 = 320 << 20;
/// The verified load: 4 KiB random writes over the first LOAD_MB of the image, each block
/// once per loop, read back and checked as it goes (long enough to span every phase).
const LOAD_MB: u64 = 8;
const LOAD_LOOPS: u64 = 8;
const LOAD_IOPS: u64 = 400;
/// The longest time fio may go without completing I/O.
const MAX_STALL: Duration = Duration::from_secs(6);
const DEADLINE: Duration = Duration::from_secs(120);

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// (PG, osd_set, primary) of pool 1 from `/pg/config`.
fn pg_map(cluster: &LocalCluster) -> Vec<(u64, Vec<u64>, u64)> {
    let config = json(&cluster.etcd.get("/vitastor/pg/config").unwrap_or_default());
    let Some(items) = config["items"]["1"].as_object() else {
        return Vec::new();
    };
    items
        .iter()
        .map(|(pg, item)| {
            let set = item["osd_set"]
                .as_array()
                .map(|s| s.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            (
                pg.parse().unwrap_or(0),
                set,
                item["primary"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// PG -> its state names from `/pg/state`.
fn pg_states(cluster: &LocalCluster) -> Vec<(u64, Vec<String>)> {
    cluster
        .etcd
        .get_prefix("/vitastor/pg/state/1/")
        .into_iter()
        .map(|(key, value)| {
            let pg = key.rsplit('/').next().unwrap_or("0").parse().unwrap_or(0);
            let names = json(&value)["state"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (pg, names)
        })
        .collect()
}

fn all_clean(cluster: &LocalCluster) -> bool {
    all_clean_of(cluster, PG_COUNT)
}

fn all_clean_of(cluster: &LocalCluster, pg_count: usize) -> bool {
    let states = pg_states(cluster);
    states.len() == pg_count && states.iter().all(|(_, names)| names == &["active"])
}

/// `all_peers` of every PG, with the OSDs that are not in its set.
fn peers_outside_sets(cluster: &LocalCluster) -> Vec<(u64, Vec<u64>)> {
    let map = pg_map(cluster);
    map.iter()
        .map(|(pg, set, _)| {
            let history = json(
                &cluster
                    .etcd
                    .get(&format!("/vitastor/pg/history/1/{pg}"))
                    .unwrap_or_default(),
            );
            let outside = history["all_peers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .filter(|osd| !set.contains(osd))
                        .collect()
                })
                .unwrap_or_default();
            (*pg, outside)
        })
        .collect()
}

fn free_bytes(cluster: &LocalCluster, osd: u64) -> u64 {
    let stats = json(
        &cluster
            .etcd
            .get(&format!("/vitastor/osd/stats/{osd}"))
            .unwrap_or_default(),
    );
    stats["free"].as_u64().unwrap_or(0)
}

/// The longest stretch (ms) between fio reports without completed I/O, and where.
fn longest_stall(reports: &[(u64, u64)]) -> (u64, u64) {
    let mut worst = (0, 0);
    let mut since = reports.first().copied().unwrap_or((0, 0));
    for &(t, bytes) in reports {
        if bytes > since.1 {
            since = (t, bytes);
        } else if t - since.0 > worst.0 {
            worst = (t - since.0, since.0);
        }
    }
    worst
}

fn run_fio(args: Vec<String>, cluster: &LocalCluster, name: &str) -> Fio {
    let stderr = std::fs::File::create(cluster.scratch.0.join(format!("{name}.stderr")))
        .expect("fio stderr");
    Fio::start(&args, stderr)
}

fn fio_base(cluster: &LocalCluster, name: &str) -> Vec<String> {
    let engine = built_library("vitastor-fio", "libfio_vitastor.so");
    vec![
        format!("--name={name}"),
        format!("--ioengine=external:{}", engine.display()),
        format!("--etcd={}", cluster.etcd.address),
        "--image=fioimg".into(),
    ]
}

#[test]
fn pgs_recover_and_rebalance_in_the_background_under_a_verified_load() {
    let image_mb: u64 = std::env::var("FIO_RECOVERY_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let mut cluster = LocalCluster::start_sized("fio-recovery", 3, OSD_SIZE, GLOBAL, POOLS);
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        &format!(r#"{{"name":"fioimg","size":{}}}"#, image_mb << 20),
    );
    cluster.wait_active(1, PG_COUNT, DEADLINE);

    // 1. Fill the image, then start the verified load.
    let fill_started = Instant::now();
    let fill_args = {
        let mut args = fio_base(&cluster, "fill");
        args.extend([
            "--rw=write".into(),
            "--bs=1m".into(),
            "--iodepth=4".into(),
            format!("--offset={LOAD_MB}m"),
            format!("--size={}m", image_mb - LOAD_MB),
            "--verify=crc32c".into(),
            "--do_verify=0".into(),
        ]);
        args
    };
    let mut fill = run_fio(fill_args.clone(), &cluster, "fill");
    wait_for("the fill", DEADLINE * 2, || !fill.running());
    assert!(
        fill.child.wait().expect("fio wait").success(),
        "fill failed"
    );
    eprintln!("filled {image_mb} MiB in {:?}", fill_started.elapsed());
    let mut load = fio_base(&cluster, "load");
    load.extend([
        "--rw=randwrite".into(),
        "--bs=4k".into(),
        "--iodepth=4".into(),
        format!("--size={LOAD_MB}m"),
        format!("--loops={LOAD_LOOPS}"),
        format!("--rate_iops={LOAD_IOPS}"),
        "--verify=crc32c".into(),
        "--do_verify=1".into(),
        "--verify_fatal=1".into(),
        "--verify_backlog=128".into(),
        "--verify_state_save=0".into(),
        "--randrepeat=0".into(),
    ]);
    let mut fio = run_fio(load, &cluster, "load");
    wait_for("fio's first writes", Duration::from_secs(30), || {
        fio.reports().iter().any(|(_, bytes)| *bytes > 0)
    });
    let load_started_ms = now_ms();

    // 2. OSD 3 dies and goes out: its PGs move to OSDs 1 and 2 and recover there.
    let killed = Instant::now();
    cluster.kill("osd3");
    wait_for("OSD 3 out of every PG", DEADLINE, || {
        let map = pg_map(&cluster);
        map.len() == PG_COUNT && map.iter().all(|(_, set, _)| !set.contains(&3))
    });
    let out_after = killed.elapsed();
    wait_for("every PG clean without OSD 3", DEADLINE, || {
        all_clean(&cluster)
    });
    eprintln!(
        "OSD 3 killed: out after {out_after:?}, every PG clean after {:?}",
        killed.elapsed()
    );

    // 3. Add OSD 4 with rebalance paused; kill a primary in the middle of it.
    let free_before: u64 = [1, 2].iter().map(|&o| free_bytes(&cluster, o)).sum();
    cluster
        .etcd
        .put("/vitastor/config/global", GLOBAL_NO_REBALANCE);
    cluster.prepare_osd(4, OSD_SIZE);
    cluster.start_osd("osd4", 4, &[]);
    let added = Instant::now();
    let mut victim = 0;
    wait_for(
        "a PG moved to OSD 4 waiting with has_misplaced",
        DEADLINE,
        || {
            let map = pg_map(&cluster);
            let states = pg_states(&cluster);
            let waiting = map.iter().find(|(pg, set, _)| {
                set.contains(&4)
                    && states.iter().any(|(p, names)| {
                        p == pg
                            && names.iter().any(|n| n == "active")
                            && names.iter().any(|n| n == "has_misplaced")
                    })
            });
            victim = waiting.map_or(0, |(_, _, primary)| *primary);
            victim != 0
        },
    );
    eprintln!(
        "rebalance paused with PGs waiting {:?} after adding OSD 4; killing their primary OSD {victim}",
        added.elapsed()
    );
    // `vitastor-cli status` shows what rebalance has left (the PG stats are refreshed at
    // activation, so this waits at most for the next one).
    wait_for(
        "vitastor-cli status showing misplaced objects left",
        DEADLINE,
        || {
            let output = std::process::Command::new(workspace_binary("vitastor-cli"))
                .args(["--etcd_address", &cluster.etcd.address, "status"])
                .output()
                .expect("run vitastor-cli");
            let text = String::from_utf8_lossy(&output.stdout);
            let found = text.lines().find(|l| l.contains("misplaced objects left"));
            if let Some(line) = found {
                eprintln!("vitastor-cli status:{line}");
            }
            found.is_some_and(|l| !l.contains(" 0 misplaced"))
        },
    );
    cluster.kill(&format!("osd{victim}"));
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_osd(&format!("osd{victim}-restarted"), victim, &[]);
    cluster.etcd.put("/vitastor/config/global", GLOBAL);
    let resumed = Instant::now();
    wait_for(
        "every PG clean and no copies outside the sets (but OSD 3's, which is gone)",
        DEADLINE,
        || {
            all_clean(&cluster)
                && peers_outside_sets(&cluster)
                    .iter()
                    .all(|(_, outside)| outside.iter().all(|&osd| osd == 3))
        },
    );
    eprintln!(
        "rebalance onto OSD 4 done {:?} after it resumed",
        resumed.elapsed()
    );
    let moved: BTreeSet<u64> = pg_map(&cluster)
        .iter()
        .filter(|(_, set, _)| set.contains(&4))
        .map(|(pg, _, _)| *pg)
        .collect();
    assert!(!moved.is_empty(), "the monitor put no PG on OSD 4");
    // (The blocks of the dropped copies are free again once each OSD's journal moves past
    // the purges, at its next flush: not waited for here.)
    eprintln!(
        "OSDs 1 and 2: {} MiB free before OSD 4 came, {} MiB now",
        free_before >> 20,
        [1, 2].iter().map(|&o| free_bytes(&cluster, o)).sum::<u64>() >> 20
    );

    // 4. The load went on throughout and verifies.
    wait_for("fio to finish", DEADLINE * 2, || !fio.running());
    let status = fio.child.wait().expect("fio wait");
    if let Some(reader) = fio.reader.take() {
        reader.join().expect("fio stdout reader");
    }
    let stderr = std::fs::read_to_string(cluster.scratch.0.join("load.stderr")).unwrap_or_default();
    let garbage = fio.garbage.lock().unwrap().clone();
    assert!(garbage.is_none(), "fio stdout: {garbage:?}\n{stderr}");
    assert!(status.success(), "fio: {status}\n{stderr}");
    let reports = fio.reports();
    let (stall_ms, at_ms) = longest_stall(&reports);
    eprintln!(
        "fio: {} reports, longest stall {stall_ms} ms at +{} ms",
        reports.len(),
        at_ms.saturating_sub(load_started_ms)
    );
    assert!(
        stall_ms <= MAX_STALL.as_millis() as u64,
        "fio made no progress for {stall_ms} ms:\n{}",
        fio.history(load_started_ms)
    );
    let last = fio.reports.lock().unwrap().last().cloned().expect("report");
    let job = &last["jobs"][0];
    assert_eq!(job["error"], 0, "{last}");
    let written = job["write"]["io_bytes"].as_u64().unwrap_or(0);
    let verified = job["read"]["io_bytes"].as_u64().unwrap_or(0);
    assert_eq!(written, (LOAD_LOOPS * LOAD_MB) << 20, "{last}");
    assert_eq!(
        verified, written,
        "every block written is read back: {last}"
    );
    // The filled part, recovered and rebalanced twice, reads back as written.
    verify_fill(&cluster, &fill_args, "check", (image_mb - LOAD_MB) << 20);
    let exited = cluster.exited();
    assert!(exited.is_empty(), "exited: {exited:?}");
}

fn pools_with_pg_count(pg_count: usize) -> String {
    format!(
        r#"{{"1":{{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":{pg_count},"failure_domain":"osd"}}}}"#
    )
}

/// Verifies the filled data with fio's `verify_only` (the same job as the fill).
fn verify_fill(cluster: &LocalCluster, fill_args: &[String], name: &str, bytes: u64) {
    let mut args: Vec<String> = fill_args
        .iter()
        .filter(|arg| *arg != "--do_verify=0")
        .cloned()
        .collect();
    args.extend(["--do_verify=1".into(), "--verify_only".into()]);
    let mut check = run_fio(args, cluster, name);
    wait_for("the verification", DEADLINE * 2, || !check.running());
    let stderr = std::fs::read_to_string(cluster.scratch.0.join(format!("{name}.stderr")))
        .unwrap_or_default();
    assert!(
        check.child.wait().expect("fio wait").success(),
        "verify failed ({name}):\n{stderr}"
    );
    let last = check
        .reports
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("report");
    assert_eq!(last["jobs"][0]["error"], 0, "{last}");
    let read = last["jobs"][0]["read"]["io_bytes"].as_u64().unwrap_or(0);
    assert!(read >= bytes, "the whole fill verified ({name}): {last}");
}

/// `pg_count` changes with real data (16 -> 32 -> 16): the monitor stops the pool's PGs,
/// records in each new PG's history the sets of the old PGs whose objects it may hold,
/// and peering finds every object there; copies then move to the new sets in the
/// background and the old holders drop theirs. Every byte verifies after each change.
#[test]
fn pg_count_changes_with_data_keep_every_object() {
    let data_mb: u64 = 32;
    let mut cluster = LocalCluster::start_sized(
        "fio-pg-count",
        3,
        OSD_SIZE,
        GLOBAL,
        &pools_with_pg_count(16),
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        &format!(r#"{{"name":"fioimg","size":{}}}"#, data_mb << 20),
    );
    cluster.wait_active(1, 16, DEADLINE);
    let mut fill_args = fio_base(&cluster, "fill");
    fill_args.extend([
        "--rw=write".into(),
        "--bs=64k".into(),
        "--iodepth=4".into(),
        format!("--size={data_mb}m"),
        "--verify=crc32c".into(),
        "--do_verify=0".into(),
    ]);
    let mut fill = run_fio(fill_args.clone(), &cluster, "fill");
    wait_for("the fill", DEADLINE * 2, || !fill.running());
    assert!(
        fill.child.wait().expect("fio wait").success(),
        "fill failed"
    );
    for (step, pg_count) in [32usize, 16].into_iter().enumerate() {
        let changed = Instant::now();
        cluster
            .etcd
            .put("/vitastor/config/pools", &pools_with_pg_count(pg_count));
        wait_for(
            &format!("{pg_count} PGs, every one clean"),
            DEADLINE * 2,
            || {
                pg_map(&cluster).len() == pg_count
                    && all_clean_of(&cluster, pg_count)
                    && peers_outside_sets(&cluster)
                        .iter()
                        .all(|(_, outside)| outside.is_empty())
            },
        );
        eprintln!("pg_count {pg_count}: clean after {:?}", changed.elapsed());
        verify_fill(&cluster, &fill_args, &format!("check{step}"), data_mb << 20);
    }
    let exited = cluster.exited();
    assert!(exited.is_empty(), "exited: {exited:?}");
}
