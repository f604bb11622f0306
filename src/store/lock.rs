//! One server per data directory. Two `serve` processes on one directory would each number
//! the same rooms from their own counters in one SQLite file, and both would send the same
//! webhook queue; the second is refused at start instead, naming the first.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::StoreError;

/// The lock file, in the data directory.
const FILE: &str = "switchboard.lock";

/// How long a lock just let go of may take to be free: a process forked at the moment the
/// holder let go shares its lock until it execs (`flock` follows the open file, which the
/// child holds until its close-on-exec), which on a loaded machine takes a while.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes the lock on `file`, trying again for `wait` while another holds it.
fn lock_within(file: &File, wait: std::time::Duration) -> Result<(), std::fs::TryLockError> {
    let until = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

/// Holds the data directory for as long as it lives; the operating system lets go of it
/// when the process ends, however it ends (`kill -9` included).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes `dir` (made if missing), or says which process holds it.
    pub fn take(dir: &Path) -> Result<DirLock, StoreError> {
        let failed = |what: String| StoreError::Failed(what);
        super::make_dir(dir)?;
        let path = dir.join(FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?;
        match lock_within(&file, RELEASE_WAIT) {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let by = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("process {holder}")
                };
                return Err(failed(format!(
                    "data directory {} is in use by {by} (another switchboard serve?); give \
                     each server its own --data-dir",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(failed(format!("cannot lock {}: {e}", path.display())));
            }
        }
        // Ours now: say who holds it, for the next one to name.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_gets_it_once_free() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::take(dir.path()).unwrap();
        let err = DirLock::take(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is in use by process"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
        drop(first);
        DirLock::take(dir.path()).unwrap();
    }
}
