//! The side-by-side report of `bench-cluster --peer`: for every fsync mode and standard
//! test, raw, ours and Vitastor (medians of alternated runs), the ratios and the OSD CPU
//! per op of both systems; as markdown (also printed), `report.json`
//! (`{"tests":[{"name","unit","raw","ours","peer",...}]}`) and a PNG chart.

use crate::report::{self, Metric};
use crate::stats::RunStats;
use serde_json::{json, Value};
use std::path::Path;

/// The goal of issue 16: every test at least this much faster than Vitastor.
pub const GOAL: f64 = 1.5;

/// One test in one fsync mode.
#[derive(Debug, Clone)]
pub struct PeerRow {
    /// "fsync off" or "durable".
    pub mode: String,
    pub name: String,
    pub metric: Metric,
    pub raw: RunStats,
    /// Medians over the alternated runs; `cpu_us_per_op` = the OSD processes' CPU.
    pub ours: RunStats,
    pub peer: RunStats,
}

impl PeerRow {
    /// How many times faster ours is than `other` (for latency: other's / ours).
    fn speedup(&self, other: &RunStats) -> f64 {
        let (ours, other) = (self.metric.value(&self.ours), self.metric.value(other));
        let ratio = match self.metric {
            Metric::LatencyUs => other / ours,
            _ => ours / other,
        };
        if ratio.is_finite() {
            ratio
        } else {
            f64::NAN
        }
    }

    /// Ours' speed / Vitastor's (> 1: ours is faster).
    pub fn speedup_vs_peer(&self) -> f64 {
        self.speedup(&self.peer)
    }

    /// `stats` as a share of raw performance (1.0 = as fast as raw).
    fn share_of_raw(&self, stats: &RunStats) -> f64 {
        let (raw, value) = (self.metric.value(&self.raw), self.metric.value(stats));
        let share = match self.metric {
            Metric::LatencyUs => raw / value,
            _ => value / raw,
        };
        if share.is_finite() {
            share
        } else {
            f64::NAN
        }
    }
}

/// The median of each number over `runs` (the mean of the middle two for an even count).
pub fn median(runs: &[RunStats]) -> RunStats {
    let of = |field: fn(&RunStats) -> f64| -> f64 {
        let mut values: Vec<f64> = runs.iter().map(field).filter(|v| v.is_finite()).collect();
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    };
    let cpu = of(|r| r.cpu_us_per_op.unwrap_or(f64::NAN));
    RunStats {
        ops: of(|r| r.ops as f64).round() as u64,
        iops: of(|r| r.iops),
        bandwidth_mb_s: of(|r| r.bandwidth_mb_s),
        lat_avg_us: of(|r| r.lat_avg_us),
        lat_p99_us: of(|r| r.lat_p99_us),
        cpu_us_per_op: cpu.is_finite().then_some(cpu),
    }
}

fn cpu_text(stats: &RunStats) -> String {
    stats
        .cpu_us_per_op
        .map_or("-".to_string(), |us| format!("{us:.1} us"))
}

/// The markdown report: configuration lines, then a table per mode.
pub fn markdown(title: &str, configuration: &[String], rows: &[PeerRow]) -> String {
    let mut out = format!("## {title}\n\n");
    for line in configuration {
        out.push_str(&format!("- {line}\n"));
    }
    let mut modes: Vec<&str> = Vec::new();
    for row in rows {
        if !modes.contains(&row.mode.as_str()) {
            modes.push(&row.mode);
        }
    }
    for mode in modes {
        out.push_str(&format!(
            "\n### {mode}\n\n| test | raw | ours | Vitastor | ours/raw | ours vs Vitastor (speed, goal >= {GOAL:.1}x) | OSD CPU/op ours | OSD CPU/op Vitastor |\n|---|---|---|---|---|---|---|---|\n"
        ));
        for row in rows.iter().filter(|r| r.mode == mode) {
            let speedup = row.speedup_vs_peer();
            let verdict = if speedup >= GOAL { "met" } else { "MISSED" };
            let raw_value = row.metric.value(&row.raw);
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.2}x | {speedup:.2}x {verdict} | {} | {} |\n",
                row.name,
                row.metric.format(&row.raw),
                row.metric.format(&row.ours),
                row.metric.format(&row.peer),
                row.metric.value(&row.ours) / raw_value,
                cpu_text(&row.ours),
                cpu_text(&row.peer),
            ));
        }
    }
    out.push_str(
        "\nours/raw divides the metric (latency: > 1 is slower than raw); \"ours vs Vitastor\" divides speeds (latency: Vitastor's / ours; > 1: ours is faster). OSD CPU/op: user + system time of the 3 OSD processes during the test over the ops fio completed.\n",
    );
    out
}

/// `report.json`: `{"tests":[{"name","unit","raw","ours","peer",...}]}`.
pub fn json(rows: &[PeerRow]) -> Value {
    let tests: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "name": format!("{}, {}", row.name, row.mode),
                "unit": row.metric.unit(),
                "raw": row.metric.value(&row.raw),
                "ours": row.metric.value(&row.ours),
                "peer": row.metric.value(&row.peer),
                "mode": row.mode,
                "test": row.name,
                "speedup_vs_peer": row.speedup_vs_peer(),
                "p99_us": {
                    "raw": row.raw.lat_p99_us,
                    "ours": row.ours.lat_p99_us,
                    "peer": row.peer.lat_p99_us,
                },
                "osd_cpu_us_per_op": {
                    "ours": row.ours.cpu_us_per_op,
                    "peer": row.peer.cpu_us_per_op,
                },
            })
        })
        .collect();
    json!({ "tests": tests })
}

/// Grouped bars: per test, ours and Vitastor as % of raw performance in each mode.
pub fn write_chart(path: &Path, title: &str, rows: &[PeerRow]) -> Result<(), String> {
    let mut groups: Vec<String> = Vec::new();
    let mut modes: Vec<String> = Vec::new();
    for row in rows {
        if !groups.contains(&row.name) {
            groups.push(row.name.clone());
        }
        if !modes.contains(&row.mode) {
            modes.push(row.mode.clone());
        }
    }
    let mut series = Vec::new();
    for mode in &modes {
        for (system, pick) in [
            ("ours", (|r: &PeerRow| r.ours) as fn(&PeerRow) -> RunStats),
            ("Vitastor", |r: &PeerRow| r.peer),
        ] {
            let values = groups
                .iter()
                .map(|name| {
                    rows.iter()
                        .find(|r| &r.name == name && &r.mode == mode)
                        .map_or(f64::NAN, |r| r.share_of_raw(&pick(r)) * 100.0)
                })
                .collect();
            series.push((format!("{system}, {mode}"), values));
        }
    }
    report::write_grouped_bars(
        path,
        title,
        "% of raw performance (latency: raw / system)",
        &groups,
        &series,
    )
}

/// Writes `report.md`, `report.json` and `chart.png` into `dir` and prints the table.
pub fn publish(
    dir: &Path,
    title: &str,
    configuration: &[String],
    rows: &[PeerRow],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let table = markdown(title, configuration, rows);
    println!("{table}");
    std::fs::write(dir.join("report.md"), &table).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&json(rows)).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("report.json"), json + "\n").map_err(|e| e.to_string())?;
    write_chart(&dir.join("chart.png"), title, rows)?;
    println!(
        "wrote {}, report.json and chart.png",
        dir.join("report.md").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(lat_avg_us: f64, iops: f64, cpu: Option<f64>) -> RunStats {
        RunStats {
            ops: 100,
            iops,
            bandwidth_mb_s: iops / 100.0,
            lat_avg_us,
            lat_p99_us: lat_avg_us * 2.0,
            cpu_us_per_op: cpu,
        }
    }

    #[test]
    fn medians_and_ratios() {
        let m = median(&[
            stats(300.0, 10.0, Some(5.0)),
            stats(100.0, 30.0, None),
            stats(200.0, 20.0, Some(7.0)),
        ]);
        assert_eq!(m.lat_avg_us, 200.0);
        assert_eq!(m.iops, 20.0);
        assert_eq!(m.cpu_us_per_op, Some(6.0));
        let even = median(&[stats(100.0, 1.0, None), stats(300.0, 3.0, None)]);
        assert_eq!(even.lat_avg_us, 200.0);
        assert_eq!(even.cpu_us_per_op, None);

        let row = PeerRow {
            mode: "fsync off".into(),
            name: "T1Q1 read".into(),
            metric: Metric::LatencyUs,
            raw: stats(50.0, 0.0, None),
            ours: stats(100.0, 0.0, Some(10.0)),
            peer: stats(200.0, 0.0, Some(20.0)),
        };
        assert_eq!(row.speedup_vs_peer(), 2.0);
        assert_eq!(row.share_of_raw(&row.ours), 0.5);
        let value = json(std::slice::from_ref(&row));
        let test = &value["tests"][0];
        assert_eq!(test["unit"], "us");
        assert_eq!(test["raw"], 50.0);
        assert_eq!(test["ours"], 100.0);
        assert_eq!(test["peer"], 200.0);
        assert_eq!(test["name"], "T1Q1 read, fsync off");
        let table = markdown("t", &[], &[row]);
        assert!(table.contains("| 2.00x met |"), "{table}");
    }
}
