//! Benchmark harness pieces shared by the benchmarks in `src/bin/`: running fio on the raw
//! device for the side-by-side numbers, latency statistics, and the report (table on
//! stdout, markdown and a PNG bar chart in the results folder), the processes of a local
//! cluster, CPU and disk use from `/proc`; the standard set and the side-by-side run
//! against a Vitastor build (`bench-cluster --peer DIR`).

pub mod fio;
pub mod peer_cluster;
pub mod peer_report;
pub mod procs;
pub mod report;
pub mod side_by_side;
pub mod standard;
pub mod stats;
pub mod usage;
