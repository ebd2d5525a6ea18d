//! BENCH.md's standard set ("T1Q1" = 1 thread, queue depth 1), as fio jobs.

use crate::fio::FioJob;
use crate::report::Metric;

pub struct Test {
    pub name: &'static str,
    pub rw: &'static str,
    pub block_size: u64,
    pub iodepth: u32,
    pub fsync: bool,
    pub metric: Metric,
}

pub const TESTS: [Test; 6] = [
    Test {
        name: "T1Q1 write (4k randwrite, fsync=1)",
        rw: "randwrite",
        block_size: 4096,
        iodepth: 1,
        fsync: true,
        metric: Metric::LatencyUs,
    },
    Test {
        name: "T1Q1 read (4k randread)",
        rw: "randread",
        block_size: 4096,
        iodepth: 1,
        fsync: false,
        metric: Metric::LatencyUs,
    },
    Test {
        name: "QD128 write (4k randwrite)",
        rw: "randwrite",
        block_size: 4096,
        iodepth: 128,
        fsync: false,
        metric: Metric::Iops,
    },
    Test {
        name: "QD128 read (4k randread)",
        rw: "randread",
        block_size: 4096,
        iodepth: 128,
        fsync: false,
        metric: Metric::Iops,
    },
    Test {
        name: "linear write (4M, QD32)",
        rw: "write",
        block_size: 4 << 20,
        iodepth: 32,
        fsync: false,
        metric: Metric::BandwidthMbS,
    },
    Test {
        name: "linear read (4M, QD32)",
        rw: "read",
        block_size: 4 << 20,
        iodepth: 32,
        fsync: false,
        metric: Metric::BandwidthMbS,
    },
];

impl Test {
    /// The fio job of this test: `seconds` long on the first `size` bytes.
    pub fn job(&self, seconds: u64, size: u64) -> FioJob {
        FioJob {
            rw: self.rw,
            block_size: self.block_size,
            iodepth: self.iodepth,
            fdatasync: self.fsync,
            runtime_s: seconds,
            size,
        }
    }
}
