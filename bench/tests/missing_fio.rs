//! Without fio the benchmark cannot compare with the raw device: it must say so in one
//! line and exit non-zero, before creating any file.

use std::process::Command;

#[test]
fn missing_fio_is_a_clear_error() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-fio");
    let out = Command::new(env!("CARGO_BIN_EXE_bench-blockstore"))
        .env("PATH", "/nonexistent")
        .args(["--short", "--dir"])
        .arg(&dir)
        .arg("--results")
        .arg(&dir)
        .output()
        .expect("run bench-blockstore");
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("fio is not installed") && message.lines().count() == 1,
        "{message}"
    );
    assert!(
        !dir.exists(),
        "nothing is created when the benchmark cannot run"
    );
}
