//! The C ABI from C: tests/c/abi_test.c is compiled with gcc against include/vitastor_c.h,
//! linked with libvitastor_client.so, and run against a real one-OSD cluster.

use std::process::Command;
use std::time::Duration;
use vitastor_testkit::{built_library, LocalCluster};

#[test]
fn c_program_writes_and_reads_through_the_c_abi() {
    let cluster = LocalCluster::start(
        "c-abi",
        1,
        r#"{"immediate_commit":"all"}"#,
        r#"{"1":{"name":"p","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":2,"failure_domain":"osd"}}"#,
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"cimg","size":1048576}"#,
    );
    cluster.wait_active(1, 2, Duration::from_secs(60));
    let library = built_library("vitastor-client", "libvitastor_client.so");
    let lib_dir = library.parent().unwrap();
    let program = cluster.scratch.0.join("abi_test");
    let manifest = env!("CARGO_MANIFEST_DIR");
    let status = Command::new("gcc")
        .args(["-Wall", "-Werror", "-o", program.to_str().unwrap()])
        .arg(format!("{manifest}/tests/c/abi_test.c"))
        .arg(format!("-I{manifest}/include"))
        .arg(format!("-L{}", lib_dir.display()))
        .args(["-lvitastor_client", "-lpthread"])
        .status()
        .expect("gcc");
    assert!(status.success(), "gcc failed");
    let output = Command::new(&program)
        .args([&cluster.etcd.address, "cimg"])
        .env("LD_LIBRARY_PATH", lib_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "abi_test failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
}
