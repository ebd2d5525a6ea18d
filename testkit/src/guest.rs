//! The guest kit: kernel clients (the NBD and NVMe/TCP drivers, a virtio disk) tested in a
//! virtual machine, because the host kernel has none of them. It boots Debian's kernel
//! (downloaded and unpacked, not installed, by `scripts/fetch-guest-kernel.sh`) under
//! `qemu-system-x86_64 -machine accel=tcg` with a busybox initramfs built here, which
//! holds the modules a test asks for (with their dependencies from `modules.dep`) and the
//! binaries it asks for (stripped, with the shared libraries `ldd` names). Its `/init`
//! mounts the usual file systems, loads the modules, configures `eth0` for QEMU's user
//! networking (the host is 10.0.2.2 there; it reaches the host's 127.0.0.1), runs the
//! test's script with its output on the console and powers off. The caller reads the
//! console; the VM is killed when it runs past its deadline or when its owner is dropped.
//!
//! TCG is slow: keep initramfs, disks and scripts small, and use the guest for
//! correctness only.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where `scripts/fetch-guest-kernel.sh` unpacks the kernel package.
fn kernel_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest-kernel/root")
}

const BUSYBOX: &str = "/bin/busybox";

/// The kernel to boot and its modules.
pub struct GuestKernel {
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>` of the unpacked package.
    pub modules: PathBuf,
}

/// Finds what a guest test needs outside this workspace: qemu-system-x86_64, a static
/// busybox, cpio and the unpacked kernel. `Err` names what is missing and how to get it.
pub fn prerequisites() -> Result<GuestKernel, String> {
    let mut missing = Vec::new();
    for tool in ["qemu-system-x86_64", "cpio", "strip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            missing.push(tool.to_string());
        }
    }
    if !Path::new(BUSYBOX).exists() {
        missing.push("busybox-static".into());
    }
    let root = kernel_root();
    let vmlinuz = std::fs::read_dir(root.join("boot"))
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.to_string_lossy().contains("vmlinuz-"))
        });
    let Some(vmlinuz) = vmlinuz else {
        missing.push(format!("a guest kernel in {}", root.display()));
        return Err(format!(
            "missing {}: run scripts/setup.sh",
            missing.join(", ")
        ));
    };
    let version = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .expect("the name was matched above")
        .to_string();
    let modules = root.join("lib/modules").join(version);
    if !modules.join("modules.dep").exists() {
        missing.push(format!("{}", modules.join("modules.dep").display()));
    }
    if !missing.is_empty() {
        return Err(format!(
            "missing {}: run scripts/setup.sh",
            missing.join(", ")
        ));
    }
    Ok(GuestKernel { vmlinuz, modules })
}

/// The guest kit, or `None` after printing why the test is skipped. Under CI (`CI` set)
/// a missing prerequisite fails the test instead: CI installs all of them.
pub fn kernel_or_skip(test: &str) -> Option<GuestKernel> {
    match prerequisites() {
        Ok(kernel) => Some(kernel),
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: {reason} (CI must install every prerequisite)")
        }
        Err(reason) => {
            eprintln!("SKIP {test}: {reason}");
            None
        }
    }
}

/// An initramfs being assembled in a staging directory.
pub struct Initramfs {
    staging: PathBuf,
    output: PathBuf,
    kernel_modules: PathBuf,
    /// Module files (relative to the staging root) in load order.
    load_order: Vec<String>,
}

impl Initramfs {
    /// Starts an initramfs in `dir/initramfs` with busybox as every basic command.
    pub fn new(dir: &Path, kernel: &GuestKernel) -> Initramfs {
        let staging = dir.join("initramfs");
        let _ = std::fs::remove_dir_all(&staging);
        for sub in [
            "bin", "dev", "proc", "sys", "tmp", "lib", "lib64", "modules",
        ] {
            std::fs::create_dir_all(staging.join(sub)).expect("create the initramfs tree");
        }
        std::fs::copy(BUSYBOX, staging.join("bin/busybox")).expect("copy busybox");
        Initramfs {
            staging,
            output: dir.join("initramfs.cpio"),
            kernel_modules: kernel.modules.clone(),
            load_order: Vec::new(),
        }
    }

    /// Adds kernel modules by name (`nbd`, `virtio_blk`, `nvme-tcp`) and everything they
    /// depend on, in an order that loads.
    pub fn modules(&mut self, names: &[&str]) -> &mut Self {
        let dep = std::fs::read_to_string(self.kernel_modules.join("modules.dep"))
            .expect("read modules.dep");
        let table: Vec<(&str, Vec<&str>)> = dep
            .lines()
            .filter_map(|line| {
                let (module, deps) = line.split_once(':')?;
                Some((module, deps.split_whitespace().collect()))
            })
            .collect();
        for name in names {
            let wanted = format!("/{name}.ko");
            let alternative = format!("/{}.ko", name.replace('-', "_"));
            let found = table
                .iter()
                .find(|(module, _)| {
                    module.ends_with(&wanted)
                        || module.ends_with(&alternative)
                        || module.ends_with(&format!("{wanted}.xz"))
                })
                .unwrap_or_else(|| panic!("module {name} is not in modules.dep"));
            // modules.dep lists the dependencies of a module, nearest first: load the
            // farthest first.
            for module in found.1.iter().rev().chain(std::iter::once(&found.0)) {
                let relative = format!("modules/{}", module.replace('/', "_"));
                if self.load_order.contains(&relative) {
                    continue;
                }
                std::fs::copy(
                    self.kernel_modules.join(module),
                    self.staging.join(&relative),
                )
                .unwrap_or_else(|e| panic!("copy module {module}: {e}"));
                self.load_order.push(relative);
            }
        }
        self
    }

    /// Adds a host binary as `guest_path`, stripped, with the shared libraries it links.
    pub fn binary(&mut self, host: &Path, guest_path: &str) -> &mut Self {
        let target = self.staging.join(guest_path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a path with a parent"))
            .expect("create the directory");
        let status = Command::new("strip")
            .arg("-o")
            .arg(&target)
            .arg(host)
            .status()
            .expect("run strip");
        assert!(status.success(), "strip {} failed", host.display());
        let ldd = Command::new("ldd").arg(host).output().expect("run ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux..."
            let path = line
                .split_whitespace()
                .find(|word| word.starts_with('/'))
                .map(PathBuf::from);
            if let Some(path) = path {
                let copy = self.staging.join(path.strip_prefix("/").expect("absolute"));
                if !copy.exists() {
                    std::fs::create_dir_all(copy.parent().expect("a parent"))
                        .expect("create the library directory");
                    std::fs::copy(&path, &copy)
                        .unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
                }
            }
        }
        self
    }

    /// Adds a file with `contents`.
    pub fn file(&mut self, guest_path: &str, contents: &[u8]) -> &mut Self {
        let target = self.staging.join(guest_path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a path with a parent"))
            .expect("create the directory");
        std::fs::write(&target, contents).expect("write the file");
        self
    }

    /// Writes `/init` (which runs `script` with `sh` after the setup) and packs the
    /// initramfs (cpio newc, uncompressed); returns its path.
    pub fn build(&mut self, script: &str) -> PathBuf {
        // modules.dep (made by busybox depmod) does not promise a load order: a few
        // passes load everything whose dependencies are in.
        let list: Vec<String> = self.load_order.iter().map(|m| format!("/{m}")).collect();
        let modules = format!(
            "for pass in 1 2 3 4; do for m in {}; do insmod $m 2>/dev/null; done; done\n",
            list.join(" ")
        );
        let init = format!(
            "#!/bin/busybox sh\n\
             /bin/busybox --install -s /bin\n\
             export PATH=/bin:/usr/bin:/sbin:/usr/sbin\n\
             mount -t proc proc /proc\n\
             mount -t sysfs sys /sys\n\
             mount -t devtmpfs dev /dev\n\
             {modules}\
             ip link set lo up\n\
             if [ -e /sys/class/net/eth0 ]; then\n\
             ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2\n\
             fi\n\
             echo GUEST-START\n\
             sh /test.sh\n\
             echo \"GUEST-EXIT $?\"\n\
             sync\n\
             poweroff -f\n"
        );
        self.file("/init", init.as_bytes());
        self.file("/test.sh", script.as_bytes());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            self.staging.join("init"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod /init");
        let output = std::fs::File::create(&self.output).expect("create the initramfs file");
        let mut cpio = Command::new("sh")
            .args(["-c", "find . | cpio -o -H newc --quiet"])
            .current_dir(&self.staging)
            .stdout(output)
            .spawn()
            .expect("run cpio");
        assert!(cpio.wait().expect("cpio").success(), "cpio failed");
        self.output.clone()
    }
}

/// What a guest printed on its console, and how the script ended.
pub struct GuestRun {
    pub console: String,
    /// The script's exit status (`GUEST-EXIT n`), None when the guest never got there.
    pub exit: Option<i32>,
    pub timed_out: bool,
}

impl GuestRun {
    /// The value of the last `GUEST-RESULT key=value` line for `key`.
    pub fn result(&self, key: &str) -> Option<String> {
        let prefix = format!("GUEST-RESULT {key}=");
        self.console
            .lines()
            .filter_map(|line| line.trim_end_matches('\r').strip_prefix(&prefix))
            .next_back()
            .map(str::to_string)
    }
}

/// A running VM; killed on drop.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots `kernel` with `initrd` and the extra QEMU arguments (disks, `-nic`), with the
/// environment entries `env` set for QEMU itself; copies the console to `log` and stops
/// the VM at `timeout`.
pub fn boot(
    kernel: &GuestKernel,
    initrd: &Path,
    qemu_args: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
    log: &Path,
) -> GuestRun {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-machine", "accel=tcg", "-m", "512", "-smp", "1"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init",
        ])
        .args(qemu_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut vm = Vm(command.spawn().expect("start qemu-system-x86_64"));
    let console = Arc::new(Mutex::new(String::new()));
    let mut log_file = std::fs::File::create(log).expect("create the console log");
    let stdout = vm.0.stdout.take().expect("piped stdout");
    let stderr = vm.0.stderr.take().expect("piped stderr");
    let readers = [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ]
    .map(|stream| {
        let console = console.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let mut text = console.lock().expect("not poisoned");
                text.push_str(&line);
                text.push('\n');
            }
        })
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    loop {
        if let Ok(Some(_)) = vm.0.try_wait() {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = vm.0.kill();
            let _ = vm.0.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(vm);
    for reader in readers {
        let _ = reader.join();
    }
    let console = console.lock().expect("not poisoned").clone();
    let _ = log_file.write_all(console.as_bytes());
    let exit = console
        .lines()
        .filter_map(|line| line.trim_end_matches('\r').strip_prefix("GUEST-EXIT "))
        .next_back()
        .and_then(|n| n.trim().parse().ok());
    GuestRun {
        console,
        exit,
        timed_out,
    }
}
