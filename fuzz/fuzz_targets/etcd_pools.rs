//! `/config/pools` values from etcd: parsed or rejected with an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((pools, _errors)) = vitastor_proto::etcd::parse_pools(data) {
        for (id, pool) in &pools {
            assert!(pool.validate(&id.to_string()).is_ok());
        }
    }
});
