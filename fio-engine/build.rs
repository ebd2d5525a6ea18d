//! Compiles the C glue (src/engine.c) against fio's own headers, which are the only
//! authority on fio's struct layouts. The headers come from Debian's fio source package:
//! `scripts/setup.sh` runs `apt-get source fio` into `target/fio-src/` and `./configure`s
//! it (config-host.h). FIO_SOURCE_DIR overrides the location.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/engine.c");
    println!("cargo:rerun-if-env-changed=FIO_SOURCE_DIR");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let source = match std::env::var("FIO_SOURCE_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => {
            let base = manifest.join("../target/fio-src");
            std::fs::read_dir(&base)
                .ok()
                .and_then(|entries| {
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .find(|p| p.join("config-host.h").exists() && p.join("fio.h").exists())
                })
                .unwrap_or(base)
        }
    };
    if !source.join("config-host.h").exists() {
        panic!(
            "fio's configured source is not at {} (no config-host.h): run scripts/setup.sh, which fetches it with `apt-get source fio` and runs ./configure, or set FIO_SOURCE_DIR",
            source.display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        source.join("config-host.h").display()
    );
    cc::Build::new()
        .file("src/engine.c")
        .include(&source)
        .define("_GNU_SOURCE", None)
        .flag("-include")
        .flag(source.join("config-host.h").to_str().expect("utf-8 path"))
        .flag("-Wno-unused-parameter")
        .flag("-Wno-sign-compare")
        .flag("-Wno-missing-field-initializers")
        .compile("fio_vitastor_glue");
}
