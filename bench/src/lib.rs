//! Benchmark harness pieces shared by the benchmarks in `src/bin/`: running fio on the raw
//! device for the side-by-side numbers, latency statistics, and the report (table on
//! stdout, markdown and a PNG bar chart in the results folder), the processes of a local
//! cluster, CPU and disk use from `/proc`.

pub mod fio;
pub mod procs;
pub mod report;
pub mod stats;
pub mod usage;
