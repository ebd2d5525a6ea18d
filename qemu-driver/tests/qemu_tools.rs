//! Debian's QEMU 10.0.2 tools (qemu-img, qemu-io) with block-vitastor.so preloaded, against
//! a real cluster (etcd, monitor, two OSD processes): every filename form opens, data
//! round-trips byte for byte, unaligned and zeroing requests do exactly what they say,
//! resize changes the image's etcd config, and bad opens are refused at open with one line.

mod common;

use common::*;
use std::time::{Duration, Instant};
use vitastor_testkit::free_port;

const SIZE: u64 = 32 << 20;

fn info_size(driver: &std::path::Path, name: &str) -> u64 {
    // A json: filename names its driver itself; -f raw would apply to it.
    let format: &[&str] = if name.starts_with("json:") {
        &[]
    } else {
        &["-f", "raw"]
    };
    let args = [&["info", "--output=json"], format, &[name]].concat();
    let json = qemu_ok(driver, "qemu-img", &args);
    let value: serde_json::Value = serde_json::from_str(&json).expect("qemu-img info JSON");
    value["virtual-size"].as_u64().expect("virtual-size")
}

fn read_image(driver: &std::path::Path, name: &str, out: &std::path::Path) -> Vec<u8> {
    let _ = std::fs::remove_file(out);
    qemu_ok(
        driver,
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            name,
            out.to_str().expect("utf-8"),
        ],
    );
    std::fs::read(out).expect("read the copy")
}

#[test]
fn qemu_img_and_qemu_io_through_the_driver() {
    let driver = driver();
    let cluster = cluster("qemu-tools");
    create_image(&cluster, "testimg", 1, SIZE, false);
    create_image(&cluster, "roimg", 2, 1 << 20, true);
    let dir = cluster.scratch.0.clone();
    let etcd = cluster.etcd.address.clone();
    let name = filename(&cluster, "testimg");

    // Every filename form opens the same image.
    let forms = [
        name.clone(),
        format!("vitastor:etcd_host={etcd}:image=testimg"),
        format!("vitastor:etcd_host={etcd}:pool=1:inode=1"),
        format!("vitastor:etcd_host={etcd}:etcd_prefix=/vitastor:image=testimg"),
        format!("vitastor://?etcd_host={etcd}&image=testimg"),
        format!(r#"json:{{"driver":"vitastor","etcd_host":"{etcd}","image":"testimg"}}"#),
        format!(r#"json:{{"driver":"vitastor","etcd_host":"{etcd}","pool":1,"inode":1}}"#),
    ];
    for form in &forms {
        assert_eq!(info_size(&driver, form), SIZE, "{form}");
    }
    assert_eq!(
        info_size(
            &driver,
            &format!("vitastor:etcd_host={etcd}:pool=1:inode=1:size=4M")
        ),
        4 << 20
    );
    // bdrv_refresh_filename: QEMU names the image in Vitastor's escaped syntax.
    let info = qemu_ok(&driver, "qemu-img", &["info", "-f", "raw", &forms[1]]);
    assert!(info.contains(&format!("image: {name}\n")), "{info}");

    // convert in and out: byte-identical.
    let source = random_bytes(SIZE as usize, 7);
    let source_path = dir.join("source.raw");
    std::fs::write(&source_path, &source).expect("write the source");
    qemu_ok(
        &driver,
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            source_path.to_str().expect("utf-8"),
            &name,
        ],
    );
    // Without -n QEMU "creates" the target: an existing image, used as it is.
    qemu_ok(
        &driver,
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            source_path.to_str().expect("utf-8"),
            &name,
        ],
    );
    assert_eq!(info_size(&driver, &name), SIZE);
    let mut expected = source.clone();
    assert!(
        read_image(&driver, &name, &dir.join("out.raw")) == expected,
        "convert out differs"
    );

    // qemu-io: unaligned writes (read-modify-write below the driver's 4 KiB), FUA, flush,
    // write-zeroes with and without whole objects, discard of whole objects.
    qemu_ok(
        &driver,
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x5a 1000 5000",
            "-c",
            "read -P 0x5a 1000 5000",
            "-c",
            "write -P 0xa5 8191 2",
            "-c",
            "read -P 0xa5 8191 2",
            "-c",
            "writev -P 0x33 65536 3000 9000",
            "-c",
            "read -P 0x33 65536 12000",
            "-c",
            "write -f -P 0x77 1048576 4096",
            "-c",
            "flush",
            "-c",
            "write -z 2000 3000",
            "-c",
            "write -z 1572864 655360",
            "-c",
            "discard 4194304 524288",
            "-c",
            "read -P 0 4194304 524288",
            &name,
        ],
    );
    expected[1000..6000].fill(0x5a);
    expected[8191..8193].fill(0xa5);
    expected[65536..77536].fill(0x33);
    expected[1048576..1052672].fill(0x77);
    expected[2000..5000].fill(0);
    expected[1572864..2228224].fill(0);
    expected[4194304..4718592].fill(0);
    let back = read_image(&driver, &name, &dir.join("out2.raw"));
    if let Some(at) = back.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!("the image differs from what qemu-io wrote at byte {at}");
    }

    // resize: the etcd config changes; a shrink drops the data past the new end.
    qemu_ok(&driver, "qemu-img", &["resize", "-f", "raw", &name, "48M"]);
    assert_eq!(info_size(&driver, &name), 48 << 20);
    let config = cluster
        .etcd
        .get("/vitastor/config/inode/1/1")
        .expect("inode config");
    assert!(
        config.contains(&format!("\"size\":{}", 48u64 << 20)),
        "{config}"
    );
    qemu_ok(
        &driver,
        "qemu-img",
        &["resize", "-f", "raw", "--shrink", &name, "16M"],
    );
    qemu_ok(&driver, "qemu-img", &["resize", "-f", "raw", &name, "32M"]);
    let back = read_image(&driver, &name, &dir.join("out3.raw"));
    assert!(
        back[..16 << 20] == expected[..16 << 20],
        "data below the shrink point changed"
    );
    assert!(
        back[16 << 20..].iter().all(|&b| b == 0),
        "data past a shrink came back"
    );

    // A read-only image: opening it for writing is refused, reading works.
    let ro = filename(&cluster, "roimg");
    let out = qemu(
        &driver,
        "qemu-io",
        &["-f", "raw", "-c", "write 0 4096", &ro],
    );
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && text.contains("read-only"),
        "{text}"
    );
    qemu_ok(
        &driver,
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read -P 0 0 4096", &ro],
    );

    // Options QEMU does not know are reported (the driver removes the ones it consumed).
    let out = qemu(
        &driver,
        "qemu-img",
        &[
            "info",
            &format!(
                r#"json:{{"driver":"vitastor","etcd_host":"{etcd}","image":"testimg","colour":"red"}}"#
            ),
        ],
    );
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && text.contains("colour"), "{text}");
    let out = qemu(
        &driver,
        "qemu-img",
        &["info", &format!("vitastor:etcd_host={etcd}:colour=red")],
    );
    assert!(!out.status.success());
}

#[test]
fn bad_opens_are_refused_at_open() {
    let driver = driver();
    let cluster = cluster("qemu-refused");
    let etcd = cluster.etcd.address.clone();

    let out = qemu(
        &driver,
        "qemu-img",
        &["info", &format!("vitastor:etcd_host={etcd}:image=nosuch")],
    );
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(r#"image "nosuch" does not exist"#), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");

    let out = qemu(
        &driver,
        "qemu-io",
        &[
            "-c",
            "read 0 4096",
            &format!("vitastor:etcd_host={etcd}:pool=1:inode=77"),
        ],
    );
    assert!(!out.status.success());

    let started = Instant::now();
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = qemu(
        &driver,
        "qemu-img",
        &[
            "info",
            &format!("vitastor:etcd_host={nobody}:image=testimg"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cannot reach etcd"), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
