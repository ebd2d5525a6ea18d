//! `report.md` of bench-recovery, rebuilt from every result in the results folder.

use super::{parse, MIB};
use serde_json::Value;
use std::path::Path;

/// A load's numbers as the table shows them: latency for T1Q1, IOPS for QD32.
pub(super) fn load_cell(load: &str, stats: &Value) -> String {
    if stats.is_null() {
        return "-".to_string();
    }
    let number = |key: &str| stats[key].as_f64().unwrap_or(f64::NAN);
    match load {
        "t1q1" => format!(
            "{:.0} us (p99 {:.0})",
            number("lat_avg_us"),
            number("lat_p99_us")
        ),
        _ => format!(
            "{:.0} iops (p99 {:.0} us)",
            number("iops"),
            number("lat_p99_us")
        ),
    }
}

/// Machine CPU busy, the survivors' CPU and the disk's busy time over the copy window.
pub(super) fn usage_cell(usage: &Value) -> String {
    if usage.is_null() {
        return "-".to_string();
    }
    let pct = |key: &str| {
        usage[key]
            .as_f64()
            .map_or("?".to_string(), |v| format!("{v:.0}%"))
    };
    format!(
        "CPU {} of 2 cores, OSDs {} of a core, disk {}",
        pct("machine_cpu_busy_pct"),
        pct("osd_cpu_pct_of_one_core"),
        pct("disk_busy_pct")
    )
}

/// during / a reference without recovery: latency ratio for T1Q1 (lower is better), IOPS for QD32.
pub(super) fn load_ratio(load: &str, base: &Value, during: &Value) -> String {
    let key = if load == "t1q1" { "lat_avg_us" } else { "iops" };
    match (base[key].as_f64(), during[key].as_f64()) {
        (Some(base), Some(during)) if base > 0.0 => format!("{:.2}x", during / base),
        _ => "-".to_string(),
    }
}

/// Rebuilds `report.md` from every `<label>.json` in the results folder, then `notes.md`.
pub(super) fn write_report(results: &Path) -> Result<(), String> {
    let mut entries: Vec<(String, Value)> = std::fs::read_dir(results)
        .map_err(|e| format!("{}: {e}", results.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let json = parse(&std::fs::read_to_string(&p).ok()?);
            Some((json["date"].as_str().unwrap_or("").to_string(), json))
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::from(
        "# bench-recovery: time to full redundancy after losing an OSD, and the client cost\n\n\
         Fresh cluster per row: etcd, vitastor-mon, 3 vitastor-osd on files of one ext4/virtio \
         disk, a 2-replica pool (pg_minsize 1) of 32 PGs, immediate_commit=all, 128 KiB \
         objects; the image written in full (4M writes), then `kill -9` of OSD 3. \
         out = the monitor moved every PG off it (`osd_out_time` after the kill); clean = \
         every `/pg/state` exactly `[\"active\"]`. Copied = the survivors' \
         `recovery_stats` counts (degraded plus misplaced) after minus before, times the block size (a fully written \
         object is copied whole); \"dead OSD held\" = its `size - free` before the kill. \
         Load = fio 4k randwrite through libfio_vitastor.so: T1Q1 shows mean latency, QD32 \
         IOPS; \"before\" = the same load on the same cluster before the kill (3 OSDs), \
         \"after\" = once clean (the 2 survivors, the topology of the copy window), \
         \"during\" = completions between out and clean (the copy window); ratio = during / \
         after (latency for T1Q1, IOPS for QD32). Copy window use (out -> clean, from \
         `/proc`): the machine's CPUs busy (everything on it, other users too), the two \
         surviving OSD processes' CPU time, the disk holding the files busy \
         (`/proc/diskstats` io_ticks).\n\n\
         | run | recovery_queue_depth | load | data | copied | dead OSD held | kill -> out | out -> clean | kill -> clean | copy rate (out -> clean) | kill -> clean rate | time per copy x depth | load before the kill | load after clean | load during recovery | during / after | copy window use |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut configs = String::new();
    for (date, json) in &entries {
        let label = json["label"].as_str().unwrap_or("?");
        for run in json["runs"].as_array().into_iter().flatten() {
            let load = run["load"].as_str().unwrap_or("?");
            let out_ms = run["out_ms"].as_u64().unwrap_or(0);
            let clean_ms = run["clean_ms"].as_u64().unwrap_or(0);
            let copy_ms = clean_ms.saturating_sub(out_ms).max(1);
            let block = run["block_size"].as_u64().unwrap_or(128 << 10);
            let depth = run["recovery_queue_depth"].as_u64().unwrap_or(1);
            let objects = run["copied_objects"].as_u64();
            let copied_bytes = objects.map(|o| o * block);
            let rate = |ms: u64| {
                copied_bytes.map_or("?".to_string(), |b| {
                    format!("{:.1} MB/s", b as f64 / (ms as f64 / 1000.0) / 1e6)
                })
            };
            let per_copy = objects.filter(|&o| o > 0).map_or("?".to_string(), |o| {
                format!("{:.2} ms", copy_ms as f64 * depth as f64 / o as f64)
            });
            out.push_str(&format!(
                "| {label} ({date}) | {depth} | {} | {} MiB | {} | {} MiB | {:.1} s | {:.1} s | {:.1} s | {} | {} | {per_copy} | {} | {} | {} | {} | {} |\n",
                match load {
                    "t1q1" => "T1Q1",
                    "qd32" => "QD32",
                    _ => "none",
                },
                json["size_mib"],
                match (objects, copied_bytes) {
                    (Some(o), Some(b)) => format!("{o} objects, {} MiB", b / MIB),
                    _ => "?".to_string(),
                },
                run["victim_used_bytes"].as_u64().unwrap_or(0) / MIB,
                out_ms as f64 / 1000.0,
                copy_ms as f64 / 1000.0,
                clean_ms as f64 / 1000.0,
                rate(copy_ms),
                rate(clean_ms.max(1)),
                load_cell(load, &run["baseline"]),
                load_cell(load, &run["after_clean"]),
                load_cell(load, &run["during_recovery"]),
                load_ratio(load, &run["after_clean"], &run["during_recovery"]),
                usage_cell(&run["copy_window_usage"]),
            ));
        }
        configs.push_str(&format!(
            "- {label}: {date}, binaries {} (commit {}), {} MiB image, osd_out_time {} s, baseline {} s per load, {} CPUs, load average at start {}{}\n",
            json["bin_dir"].as_str().unwrap_or("next to bench-recovery"),
            json["commit"].as_str().unwrap_or("unknown"),
            json["size_mib"],
            json["osd_out_time_s"],
            json["baseline_s"],
            json["cpus"],
            json["load_average_at_start"].as_str().unwrap_or("?"),
            if json["short"] == true { " (short mode)" } else { "" },
        ));
        for run in json["runs"].as_array().into_iter().flatten() {
            let states: Vec<String> = run["states_seen_ms"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(state, ms)| format!("{state} (+{ms} ms)"))
                .collect();
            configs.push_str(&format!(
                "  - depth {}, load {}: PG states seen after the kill (first seen): {}; load over kill -> out: {}\n",
                run["recovery_queue_depth"],
                run["load"].as_str().unwrap_or("?"),
                states.join(", "),
                load_cell(run["load"].as_str().unwrap_or("?"), &run["kill_to_out"]),
            ));
        }
    }
    out.push_str("\nRuns:\n\n");
    out.push_str(&configs);
    if let Ok(notes) = std::fs::read_to_string(results.join("notes.md")) {
        out.push('\n');
        out.push_str(&notes);
    }
    let path = results.join("report.md");
    std::fs::write(&path, &out).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{out}");
    eprintln!("wrote {}", path.display());
    Ok(())
}
