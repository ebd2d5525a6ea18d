//! `bench-mon`: how long the monitor's LP placement takes and how even its result is, on
//! synthetic clusters (no etcd, no OSDs): a fresh placement, then one OSD added, then one
//! OSD removed, each re-placed from the previous result.
//!
//! Uniformity = ideal / max over OSDs of (slots / ideal slots by weight): the fraction of
//! raw space usable before the fullest OSD fills (Vitastor reports 96-99%, CRUSH 80-90%).
//! Moved = (PG, OSD) slots that are new; ideal moved = the slots the added OSD should get,
//! or the slots the removed one held.

use clap::Parser;
use std::collections::BTreeMap;
use std::time::Instant;
use vitastor_mon::placement::{place_pool, Candidate, PoolPlacement, PoolRequest};

#[derive(Parser, Debug)]
#[command(name = "bench-mon")]
struct Args {
    /// Only the two smaller clusters (smoke test).
    #[arg(long)]
    short: bool,
    /// Where the markdown table goes.
    #[arg(long, default_value = "bench/results/mon")]
    results: std::path::PathBuf,
}

struct Scenario {
    name: &'static str,
    hosts: usize,
    osds_per_host: usize,
    pg_count: u32,
    pg_size: u32,
    target_s: f64,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "12 OSDs (4 hosts x 3), 256 PGs, 3 replicas",
        hosts: 4,
        osds_per_host: 3,
        pg_count: 256,
        pg_size: 3,
        target_s: 2.0,
    },
    Scenario {
        name: "100 OSDs (10 hosts x 10), 1024 PGs, 3 replicas",
        hosts: 10,
        osds_per_host: 10,
        pg_count: 1024,
        pg_size: 3,
        target_s: 5.0,
    },
    Scenario {
        name: "500 OSDs (50 hosts x 10), 4096 PGs, EC 4+2",
        hosts: 50,
        osds_per_host: 10,
        pg_count: 4096,
        pg_size: 6,
        target_s: 60.0,
    },
];

fn candidates(scenario: &Scenario) -> Vec<Candidate> {
    let mut out = Vec::new();
    for host in 0..scenario.hosts {
        for i in 0..scenario.osds_per_host {
            out.push(Candidate {
                osd: (host * scenario.osds_per_host + i + 1) as u64,
                domain: format!("host{host}"),
                // Slightly different sizes, as real disks have.
                weight: 1.0 + ((host * 7 + i * 3) % 5) as f64 * 0.01,
                up: true,
            });
        }
    }
    out
}

fn uniformity(candidates: &[Candidate], placement: &PoolPlacement) -> f64 {
    let mut slots: BTreeMap<u64, f64> = BTreeMap::new();
    for set in placement.sets.values() {
        for &osd in set.iter().filter(|&&o| o != 0) {
            *slots.entry(osd).or_default() += 1.0;
        }
    }
    let total_slots: f64 = slots.values().sum();
    let total_weight: f64 = candidates.iter().map(|c| c.weight).sum();
    let worst = candidates
        .iter()
        .map(|c| {
            slots.get(&c.osd).copied().unwrap_or(0.0) / (total_slots * c.weight / total_weight)
        })
        .fold(0.0, f64::max);
    1.0 / worst
}

fn timed(request: &PoolRequest) -> (PoolPlacement, f64) {
    let start = Instant::now();
    let placement = place_pool(request).expect("placement succeeds");
    (placement, start.elapsed().as_secs_f64())
}

fn main() {
    let args = Args::parse();
    let mut table = String::from(
        "| cluster | step | solve time | target | LP variables | uniformity | moved slots | ideal moved |\n|---|---|---|---|---|---|---|---|\n",
    );
    for scenario in SCENARIOS.iter().take(if args.short { 2 } else { 3 }) {
        let mut request = PoolRequest {
            pg_count: scenario.pg_count,
            pg_size: scenario.pg_size,
            candidates: candidates(scenario),
            ..Default::default()
        };
        let mut print = |step: &str,
                         request: &PoolRequest,
                         placement: &PoolPlacement,
                         seconds: f64,
                         ideal: f64| {
            table += &format!(
                "| {} | {step} | {seconds:.3} s | < {} s | {} | {:.1}% | {} | {ideal:.0} |\n",
                scenario.name,
                scenario.target_s,
                placement.lp_variables,
                uniformity(&request.candidates, placement) * 100.0,
                placement.moved_slots,
            );
        };
        let (fresh, seconds) = timed(&request);
        let total_slots = f64::from(scenario.pg_count * scenario.pg_size);
        print("fresh", &request, &fresh, seconds, total_slots);

        request.current_sets = fresh.sets.clone();
        request.current_primaries = fresh.primaries.clone();
        let new_osd = request.candidates.len() as u64 + 1;
        request.candidates.push(Candidate {
            osd: new_osd,
            domain: "host0".into(),
            weight: 1.0,
            up: true,
        });
        let total_weight: f64 = request.candidates.iter().map(|c| c.weight).sum();
        let (grown, seconds) = timed(&request);
        print(
            "+1 OSD",
            &request,
            &grown,
            seconds,
            total_slots / total_weight,
        );

        request.current_sets = grown.sets.clone();
        request.current_primaries = grown.primaries.clone();
        let removed = 2;
        let held = grown
            .sets
            .values()
            .filter(|set| set.contains(&removed))
            .count();
        request.candidates.retain(|c| c.osd != removed);
        let (shrunk, seconds) = timed(&request);
        print("-1 OSD", &request, &shrunk, seconds, held as f64);
    }
    print!("{table}");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let markdown = format!(
        "# bench-mon: LP placement\n\nOne thread, release build, {cpu}; good_lp with the microlp (pure Rust) solver.\n\n{table}"
    );
    if let Err(error) = std::fs::create_dir_all(&args.results)
        .and_then(|()| std::fs::write(args.results.join("latest.md"), markdown))
    {
        eprintln!("cannot write {}: {error}", args.results.display());
    }
}
