//! A warm start: the TLS files the cache on disk knows are opened at the
//! agent's start, so that their probes are attached before any process maps
//! them. A process that maps one later is held only for the agent's
//! bookkeeping, not for the kernel's uprobe registration (whose first call
//! after a quiet moment waits for an RCU grace period, 10-20 ms here).
//!
//! A cached path is only a hint. Each is opened once, without following a
//! symlink at its end, and the file is taken only if its content identity
//! (build ID, size, owner, written by its owner alone: [`cache::key`]) is
//! the entry's; probes are then attached through that descriptor. Paths
//! that are gone or hold other content are skipped (and counted).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::cache::{self, ContentKey};
use super::store::Store;
use super::Inspection;
use crate::discover::{self, FileId};

/// TLS files attached at start, at most.
pub const MAX_WARM: usize = 256;

/// A known TLS file, open and checked.
pub struct WarmFile {
    pub file: File,
    pub id: FileId,
    pub path: String,
    pub insp: Inspection,
    pub key: ContentKey,
}

/// What a warm start found.
#[derive(Default)]
pub struct Warm {
    pub files: Vec<WarmFile>,
    /// Paths that are gone, or now hold other content (or a symlink, or a
    /// file others may write, or one on a filesystem a process serves).
    pub skipped: usize,
    /// The opening was still going on at the deadline (a path through a
    /// stalled filesystem): what it found until then is used.
    pub timed_out: bool,
}

/// Opens and checks the paths of the TLS results in `store` on a thread of
/// its own, waiting for it until `deadline` has passed: an open may wait on
/// whatever filesystem a path now leads through.
pub fn open_known(store: &'static Store, deadline: Duration) -> Warm {
    let until = Instant::now() + deadline;
    let (tx, rx) =
        crossbeam_channel::bounded::<Option<WarmFile>>(MAX_WARM * super::store::MAX_HINTS);
    let spawned = std::thread::Builder::new()
        .name("warm".into())
        .spawn(move || {
            for e in store.warm_entries(MAX_WARM) {
                for path in &e.paths {
                    let found = open_checked(path, &e.key);
                    let hit = found.is_some();
                    let sent = found.map(|(file, id)| WarmFile {
                        file,
                        id,
                        path: path.clone(),
                        insp: e.insp.clone(),
                        key: e.key.clone(),
                    });
                    if tx.send(sent).is_err() {
                        return;
                    }
                    if hit {
                        break;
                    }
                }
            }
        });
    let mut warm = Warm::default();
    if let Err(e) = spawned {
        log::warn!("no warm start ({e})");
        return warm;
    }
    loop {
        match rx.recv_deadline(until) {
            Ok(Some(f)) => warm.files.push(f),
            Ok(None) => warm.skipped += 1,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                warm.timed_out = true;
                break;
            }
        }
    }
    warm
}

/// `path` opened if it is a regular file of content `want`, on a
/// filesystem no process serves. The lookup follows no symlink at all (a
/// path a process showed the agent is the kernel's resolved one), and
/// nothing but a regular file is opened for reading: a device node planted
/// at the path is never opened.
pub fn open_checked(path: &str, want: &ContentKey) -> Option<(File, FileId)> {
    let name = crate::fsat::name(path).ok()?;
    let at = crate::fsat::open_resolved(
        libc::AT_FDCWD,
        &name,
        libc::O_PATH,
        libc::RESOLVE_NO_SYMLINKS,
    )
    .ok()?;
    let md = File::from(at.try_clone().ok()?).metadata().ok()?;
    if !md.is_file() {
        return None;
    }
    let id = FileId::of(&md);
    if discover::fs_type(std::process::id(), id).is_some_and(|t| discover::may_stall(&t)) {
        return None;
    }
    // The same inode, for reading (no name looked up again).
    let file = File::open(format!("/proc/self/fd/{}", at.as_raw_fd())).ok()?;
    let md = file.metadata().ok()?;
    (FileId::of(&md) == id && cache::key(&file, &md).as_ref() == Some(want)).then_some((file, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_of(src: &str, dst: &std::path::Path) {
        std::fs::copy(src, dst).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_path_is_taken_only_with_the_content_it_had() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lib");
        copy_of("/usr/bin/true", &p);
        let f = File::open(&p).unwrap();
        let key = cache::key(&f, &f.metadata().unwrap()).expect("a build ID");
        let path = p.to_str().unwrap();
        assert_eq!(
            open_checked(path, &key).map(|(_, id)| id),
            Some(FileId::of(&std::fs::metadata(&p).unwrap()))
        );
        // Other content at the path (another build ID): not taken.
        std::fs::remove_file(&p).unwrap();
        copy_of("/usr/bin/false", &p);
        assert!(open_checked(path, &key).is_none());
        // A symlink to the right content: not followed.
        std::fs::remove_file(&p).unwrap();
        let real = d.path().join("real");
        copy_of("/usr/bin/true", &real);
        std::os::unix::fs::symlink(&real, &p).unwrap();
        assert!(open_checked(path, &key).is_none());
        // The right content, writable by others: not taken.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(open_checked(real.to_str().unwrap(), &key).is_none());
        // A symlink on the way: not followed either.
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        copy_of("/usr/bin/true", &sub.join("lib"));
        std::os::unix::fs::symlink(&sub, d.path().join("via")).unwrap();
        assert!(open_checked(sub.join("lib").to_str().unwrap(), &key).is_some());
        assert!(open_checked(d.path().join("via/lib").to_str().unwrap(), &key).is_none());
        // A FIFO at the path: never opened for reading (which would block).
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_checked(fifo.to_str().unwrap(), &key).is_none());
        // Gone.
        assert!(open_checked(d.path().join("gone").to_str().unwrap(), &key).is_none());
    }
}
