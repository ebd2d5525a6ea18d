#!/bin/sh
# Runs every fuzz target for a while on the stable toolchain (libFuzzer with sanitizer
# coverage, no address sanitizer). With a nightly toolchain, `cargo fuzz run <target>` works too.
# Usage: fuzz/run.sh [seconds per target, default 60]
set -eu
cd "$(dirname "$0")"
seconds="${1:-60}"
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --release -j2 --target "$target"
for name in wire_header journal_entry etcd_pools nvmf_pdu; do
    mkdir -p "corpus/$name"
    "./target/$target/release/$name" "corpus/$name" -max_total_time="$seconds" -print_final_stats=1
done
