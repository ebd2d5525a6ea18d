//! `bench-ec`: the erasure codec's speed on one core, to choose its implementation.
//!
//! For each code (2+1 xor and Reed-Solomon, 2+2, 4+2, 8+4) and chunk size (4 KiB, a small
//! write's range; 128 KiB, a whole chunk of a 128 KiB-block pool), it times encode (all m
//! parity chunks) and decode (the worst case: m data chunks lost, rebuilt from the others)
//! with each candidate: our codec (osd/src/ec) with its scalar, SSSE3 and AVX2 kernels,
//! `reed-solomon-erasure`'s GF(2^8) slice helpers, and ISA-L. Throughput is the stripe's
//! data (k x chunk bytes) per second of one thread, best of `--repeats` timed loops taken
//! in turns across the candidates.
//! Every candidate's parity and rebuilt chunks are compared with ours before timing.

#[path = "bench_ec/candidates.rs"]
mod candidates;

use candidates::{Candidate, Isal, Ours, Pattern, RsErasure};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vitastor_osd::ec::{ErasureCode, Kernel, Scheme};

#[derive(Parser, Debug)]
#[command(name = "bench-ec")]
struct Args {
    /// Smoke test: a few milliseconds per measurement.
    #[arg(long)]
    short: bool,
    /// Where report.md, chart.png and results.json go.
    #[arg(long, default_value = "bench/results/ec")]
    results: PathBuf,
    /// Seconds per timed loop.
    #[arg(long, default_value_t = 0.2)]
    seconds: f64,
    /// Timed loops per measurement (the best counts: the machine is shared).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

struct Code {
    name: &'static str,
    scheme: Scheme,
    k: usize,
    m: usize,
}

const CODES: [Code; 5] = [
    Code {
        name: "2+1 xor",
        scheme: Scheme::Xor,
        k: 2,
        m: 1,
    },
    Code {
        name: "2+1 rs",
        scheme: Scheme::ReedSolomon,
        k: 2,
        m: 1,
    },
    Code {
        name: "2+2",
        scheme: Scheme::ReedSolomon,
        k: 2,
        m: 2,
    },
    Code {
        name: "4+2",
        scheme: Scheme::ReedSolomon,
        k: 4,
        m: 2,
    },
    Code {
        name: "8+4",
        scheme: Scheme::ReedSolomon,
        k: 8,
        m: 4,
    },
];
const CHUNK_SIZES: [usize; 2] = [4096, 128 << 10];
const KERNELS: [Kernel; 4] = [Kernel::Scalar, Kernel::Ssse3, Kernel::Avx2, Kernel::Gfni];

struct Measurement {
    code: &'static str,
    op: &'static str,
    chunk: usize,
    implementation: String,
    gb_s: f64,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-ec: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(mut args: Args) -> Result<(), String> {
    if args.short {
        args.seconds = 0.002;
        args.repeats = 1;
    }
    pin_to_current_cpu();
    let mut measurements = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for code in &CODES {
        for &chunk in &CHUNK_SIZES {
            let (new, why_not) = measure_code(code, chunk, &args, &mut rng)?;
            measurements.extend(new);
            for reason in why_not {
                if !skipped.contains(&reason) {
                    skipped.push(reason);
                }
            }
        }
    }
    publish(&args, &measurements, &skipped)
}

/// All candidates on one code and chunk size; returns the measurements and the candidates
/// skipped with the reason.
#[allow(clippy::type_complexity)]
fn measure_code(
    code: &Code,
    chunk: usize,
    args: &Args,
    rng: &mut impl Rng,
) -> Result<(Vec<Measurement>, Vec<(String, String)>), String> {
    let (k, m) = (code.k, code.m);
    let reference = ErasureCode::new(code.scheme, k, m).map_err(|e| e.to_string())?;
    let lost: Vec<usize> = (0..m.min(k)).collect();
    let data: Vec<Vec<u8>> = (0..k)
        .map(|_| (0..chunk).map(|_| rng.gen()).collect())
        .collect();
    let mut stripe = data.clone();
    stripe.extend(vec![vec![0u8; chunk]; m]);
    {
        let (data_part, parity_part) = stripe.split_at_mut(k);
        let srcs: Vec<&[u8]> = data_part.iter().map(|d| d.as_slice()).collect();
        let mut outs: Vec<&mut [u8]> = parity_part.iter_mut().map(|p| p.as_mut_slice()).collect();
        reference.encode(&srcs, &mut outs);
    }

    let mut candidates: Vec<Box<dyn Candidate>> = Vec::new();
    let mut skipped = Vec::new();
    for kernel in KERNELS {
        match Ours::new(code.scheme, k, m, kernel, &lost) {
            Ok(ours) => candidates.push(Box::new(ours)),
            Err(why) => skipped.push((format!("ours {}", kernel.name()), why)),
        }
    }
    candidates.push(Box::new(RsErasure::new(
        &reference,
        Pattern::new(&reference, &lost),
    )));
    match Isal::new(&reference, Pattern::new(&reference, &lost)) {
        Ok(isal) => candidates.push(Box::new(isal)),
        Err(why) => skipped.push(("isa-l".to_string(), why)),
    }

    let stripe_refs: Vec<&[u8]> = stripe.iter().map(|c| c.as_slice()).collect();
    let data_refs = &stripe_refs[..k];
    let mut parity = vec![vec![0xeeu8; chunk]; m];
    let mut parity_refs: Vec<&mut [u8]> = parity.iter_mut().map(|p| p.as_mut_slice()).collect();
    let mut rebuilt = vec![vec![0xeeu8; chunk]; lost.len()];
    let mut rebuilt_refs: Vec<&mut [u8]> = rebuilt.iter_mut().map(|p| p.as_mut_slice()).collect();
    // Correctness first: the same parity and the same rebuilt chunks as ours.
    for candidate in &mut candidates {
        let name = candidate.name();
        parity_refs.iter_mut().for_each(|p| p.fill(0xee));
        candidate.encode(data_refs, &mut parity_refs);
        if parity_refs
            .iter()
            .zip(&stripe[k..])
            .any(|(a, b)| **a != b[..])
        {
            return Err(format!("{name} {}: parity differs from ours", code.name));
        }
        rebuilt_refs.iter_mut().for_each(|p| p.fill(0xee));
        candidate.decode(&stripe_refs, &mut rebuilt_refs);
        if lost
            .iter()
            .zip(&rebuilt_refs)
            .any(|(&i, chunk)| **chunk != data[i][..])
        {
            return Err(format!("{name} {}: rebuilt chunks differ", code.name));
        }
    }

    // Repeats go round all candidates, so a burst of load from other processes on the
    // shared machine costs each candidate one loop rather than all of one candidate's.
    let bytes = (k * chunk) as f64;
    let mut best = vec![(0.0f64, 0.0f64); candidates.len()];
    for _ in 0..args.repeats {
        for (candidate, (encode, decode)) in candidates.iter_mut().zip(&mut best) {
            *encode = encode.max(rate(args, bytes, || {
                candidate.encode(data_refs, &mut parity_refs);
                std::hint::black_box(&mut parity_refs);
            }));
            *decode = decode.max(rate(args, bytes, || {
                candidate.decode(&stripe_refs, &mut rebuilt_refs);
                std::hint::black_box(&mut rebuilt_refs);
            }));
        }
    }
    let mut out = Vec::new();
    for (candidate, (encode, decode)) in candidates.iter().zip(best) {
        for (op, gb_s) in [("encode", encode), ("decode", decode)] {
            out.push(Measurement {
                code: code.name,
                op,
                chunk,
                implementation: candidate.name(),
                gb_s,
            });
        }
    }
    Ok((out, skipped))
}

/// GB/s (10^9 bytes) of `bytes_per_call` over one loop of `args.seconds`, after one
/// warm-up call.
fn rate(args: &Args, bytes_per_call: f64, mut call: impl FnMut()) -> f64 {
    call();
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        call();
        calls += 1;
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= args.seconds {
            return calls as f64 * bytes_per_call / elapsed / 1e9;
        }
    }
}

/// Keeps the thread on one CPU so a migration does not split a timed loop.
fn pin_to_current_cpu() {
    // SAFETY: plain libc calls on this thread with a zeroed, then filled, cpu_set_t.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn implementations(measurements: &[Measurement]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for measurement in measurements {
        if !names.contains(&measurement.implementation) {
            names.push(measurement.implementation.clone());
        }
    }
    names
}

fn cell(measurements: &[Measurement], code: &str, op: &str, chunk: usize, name: &str) -> f64 {
    measurements
        .iter()
        .find(|x| x.code == code && x.op == op && x.chunk == chunk && x.implementation == name)
        .map_or(f64::NAN, |x| x.gb_s)
}

fn chunk_label(chunk: usize) -> String {
    format!("{} KiB", chunk >> 10)
}

fn markdown(args: &Args, measurements: &[Measurement], skipped: &[(String, String)]) -> String {
    let names = implementations(measurements);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mut out = String::from("## bench-ec: erasure codec throughput, one core\n\n");
    let configuration = [
        format!("date: {}", date()),
        format!("CPU: {cpu}; one thread pinned to one core; release build"),
        format!(
            "the production codec's kernel here: `Kernel::detect()` = {}",
            Kernel::detect().name()
        ),
        "GB/s = 10^9 bytes of stripe data (k x chunk) per second; encode = all m parity chunks; decode = m data chunks lost, rebuilt from the other k chunks".to_string(),
        format!(
            "best of {} loops of {} s per cell, taken in turns across the implementations{}",
            args.repeats,
            args.seconds,
            if args.short { " (--short: smoke test, numbers are noise)" } else { "" }
        ),
        "every candidate's parity and rebuilt chunks were checked equal to ours first".to_string(),
    ];
    for line in configuration {
        out.push_str(&format!("- {line}\n"));
    }
    for (name, why) in skipped {
        out.push_str(&format!("- skipped {name}: {why}\n"));
    }
    out.push_str("\n| code | op | chunk |");
    for name in &names {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str("\n|---|---|---|");
    out.push_str(&"---|".repeat(names.len()));
    out.push('\n');
    for code in &CODES {
        for op in ["encode", "decode"] {
            for &chunk in &CHUNK_SIZES {
                out.push_str(&format!(
                    "| {} | {op} | {} |",
                    code.name,
                    chunk_label(chunk)
                ));
                for name in &names {
                    out.push_str(&format!(
                        " {:.2} |",
                        cell(measurements, code.name, op, chunk, name)
                    ));
                }
                out.push('\n');
            }
        }
    }
    out
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn publish(
    args: &Args,
    measurements: &[Measurement],
    skipped: &[(String, String)],
) -> Result<(), String> {
    let dir: &Path = &args.results;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let table = markdown(args, measurements, skipped);
    println!("{table}");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("report.md", &table)?;
    let json = json!({
        "date": date(),
        "short": args.short,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "detected_kernel": Kernel::detect().name(),
        "skipped": skipped.iter().map(|(name, why)| json!({"implementation": name, "reason": why})).collect::<Vec<_>>(),
        "measurements": measurements.iter().map(|x| json!({
            "code": x.code,
            "op": x.op,
            "chunk_bytes": x.chunk,
            "implementation": x.implementation,
            "gb_s": x.gb_s,
        })).collect::<Vec<_>>(),
    });
    write(
        "results.json",
        &serde_json::to_string_pretty(&json).expect("serializes"),
    )?;

    let chunk = CHUNK_SIZES[CHUNK_SIZES.len() - 1];
    let mut groups = Vec::new();
    for code in &CODES {
        for op in ["encode", "decode"] {
            groups.push((code.name, op));
        }
    }
    let series: Vec<(String, Vec<f64>)> = implementations(measurements)
        .into_iter()
        .map(|name| {
            let values = groups
                .iter()
                .map(|(code, op)| cell(measurements, code, op, chunk, &name))
                .collect();
            (name, values)
        })
        .collect();
    let labels: Vec<String> = groups
        .iter()
        .map(|(code, op)| format!("{code} {op}"))
        .collect();
    vitastor_bench::report::write_grouped_bars(
        &dir.join("chart.png"),
        &format!("erasure codec, {} chunks, one core", chunk_label(chunk)),
        "GB/s of stripe data",
        &labels,
        &series,
    )?;
    println!(
        "wrote {}, {} and {}",
        dir.join("report.md").display(),
        dir.join("results.json").display(),
        dir.join("chart.png").display()
    );
    Ok(())
}
