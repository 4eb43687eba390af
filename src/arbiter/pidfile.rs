//! `--pid FILE`: the master's process id, written atomically (a temporary file in the same
//! directory, renamed over the target), removed on exit only while it still holds our pid.
//!
//! As in Gunicorn: a file naming a live process refuses the start ("Already running on PID
//! N (or pid file 'F' is stale)"); a file naming a dead process is stale and replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Pidfile {
    path: PathBuf,
    pid: libc::pid_t,
}

impl Pidfile {
    /// Validates `path` and writes `pid` into it.
    pub fn create(path: &Path, pid: libc::pid_t) -> Result<Pidfile, String> {
        if let Some(old) = validate(path)? {
            if old != pid {
                return Err(format!(
                    "Already running on PID {old} (or pid file '{}' is stale)",
                    path.display()
                ));
            }
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(format!(
                "{} doesn't exist. Can't create pidfile.",
                dir.display()
            ));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pid".into());
        let tmp = dir.join(format!(".{name}.{pid}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(format!("{pid}\n").as_bytes())?;
            f.sync_all()?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("Can't write pidfile {}: {e}", path.display()));
        }
        Ok(Pidfile {
            path: path.to_path_buf(),
            pid,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it still names this process.
    pub fn unlink(&self) {
        if read_pid(&self.path) == Some(self.pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Moves the pid to another file name (removing the current file).
    pub fn rename(self, path: &Path) -> Result<Pidfile, String> {
        self.unlink();
        Pidfile::create(path, self.pid)
    }
}

fn read_pid(path: &Path) -> Option<libc::pid_t> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The pid in `path` if that process is alive; `None` for no file, an unparsable one or a
/// dead process (a stale file).
fn validate(path: &Path) -> Result<Option<libc::pid_t>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let Ok(pid) = text.trim().parse::<libc::pid_t>() else {
                return Ok(None);
            };
            if pid <= 0 {
                return Ok(None);
            }
            // SAFETY: signal 0 only checks that the process exists.
            if unsafe { libc::kill(pid, 0) } == 0 {
                return Ok(Some(pid));
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EPERM) => Ok(Some(pid)),
                _ => Ok(None),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("Can't read pidfile {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_file_is_replaced_and_live_one_refused() {
        let dir = std::env::temp_dir().join(format!("ferrocorn-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("app.pid");
        // A pid that cannot exist (above pid_max) is stale.
        std::fs::write(&path, "2147483646\n").expect("write");
        let me = std::process::id() as libc::pid_t;
        let pf = Pidfile::create(&path, me).expect("stale file replaced");
        assert_eq!(read_pid(&path), Some(me));
        // Our own pid in the file is a live process: another pid is refused.
        let err = Pidfile::create(&path, me + 1).err().expect("refused");
        assert!(err.contains("Already running on PID"), "{err}");
        pf.unlink();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
