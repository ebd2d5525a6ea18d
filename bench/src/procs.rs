//! Processes a benchmark starts (OSDs, the monitor), each with its stderr in a log file
//! of its own, killed on drop (also when the benchmark fails).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Processes started by the benchmark, killed on drop (also on error).
pub struct Processes {
    /// Where each process's stderr goes (`<name>.log`).
    pub dir: PathBuf,
    pub children: Vec<(String, Child)>,
}

impl Processes {
    pub fn new(dir: PathBuf) -> Processes {
        Processes {
            dir,
            children: Vec::new(),
        }
    }

    /// Starts `command` as `name`, its stderr appended to `<dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, command: &mut Command) -> Result<(), String> {
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Kills (SIGKILL) and reaps the process started as `name`.
    pub fn kill(&mut self, name: &str) {
        if let Some(index) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` to the process started as `name`.
    pub fn signal(&mut self, name: &str, signal: i32) {
        if let Some((_, child)) = self.children.iter().find(|(n, _)| n == name) {
            // SAFETY: signals a child we started and have not reaped (it stays in
            // `children` until killed and waited for).
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// The process id of the process started as `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, child)| child.id())
    }

    /// The name of a started process that has exited, if any.
    pub fn exited(&mut self) -> Option<String> {
        self.children
            .iter_mut()
            .find_map(|(name, child)| matches!(child.try_wait(), Ok(Some(_))).then(|| name.clone()))
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
