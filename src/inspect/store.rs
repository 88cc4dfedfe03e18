//! The inspection cache on disk: what inspection found for a content
//! ([`ContentKey`]: build ID, size, owner) outlives the agent, so that a
//! restarted agent holds a process only for the attach of a known file,
//! not for its reading and parsing.
//!
//! The directory (`--cache-dir`, default `/var/cache/plainsight`) is the
//! agent's (root's) and 0700: it is made so, or refused (and the agent runs
//! without it) when it is anything else. It is reached by descriptor only; entries are
//! created new (`O_EXCL`, `O_NOFOLLOW`, 0600) under a temporary name and
//! renamed into place. An entry is used only if it was written by this very
//! agent binary (placement depends on the agent's code: a new build decides
//! anew) for this very key; one that does not parse is ignored, removed and
//! counted. At most [`MAX_ENTRIES`] entries of at most [`MAX_ENTRY`] bytes:
//! past the count the directory starts over.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::cache::{ContentKey, Known};
use super::Inspection;

/// Entries kept at most.
pub const MAX_ENTRIES: usize = 16384;
/// Bytes of one entry at most (a file with the most probe points allowed
/// fits well within it).
pub const MAX_ENTRY: usize = 1 << 20;

/// The cache directory, open.
pub struct Store {
    dir: OwnedFd,
    /// Which agent binary wrote an entry: its size, inode and change time.
    agent: String,
    entries: AtomicUsize,
    /// Entries that did not parse (removed).
    pub corrupt: AtomicU64,
    /// Entries written, and found.
    pub written: AtomicU64,
    pub found: AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    agent: String,
    kind: String,
    id: Vec<u8>,
    size: u64,
    owner: u32,
    /// None: no TLS code.
    result: Option<Inspection>,
}

/// The agent binary's identity: entries of another build are not used.
fn agent_stamp() -> Result<String> {
    let md = std::fs::metadata("/proc/self/exe").context("the agent's own binary")?;
    Ok(format!(
        "{}:{}:{}.{}",
        md.len(),
        md.ino(),
        md.ctime(),
        md.ctime_nsec()
    ))
}

/// An entry's file name: a 64-bit FNV-1a of the key (the key itself is in
/// the entry and checked).
fn entry_name(k: &ContentKey) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(k.kind.as_bytes());
    eat(&k.id);
    eat(&k.size.to_le_bytes());
    eat(&k.owner.to_le_bytes());
    format!("{h:016x}.json")
}

impl Store {
    /// Opens (making it if need be) the cache directory `path`: root's,
    /// 0700, not a symlink; anything else is refused.
    pub fn open(path: &Path) -> Result<Store> {
        let shown = path.display();
        let parent = path.parent().context("the cache directory has no parent")?;
        let name = path
            .file_name()
            .context("the cache directory has no name")?;
        let parent = File::open(parent).with_context(|| format!("opening {}", parent.display()))?;
        let cname = crate::fsat::name(&name.to_string_lossy())?;
        // SAFETY: mkdirat relative to the parent's descriptor.
        if unsafe { libc::mkdirat(parent.as_raw_fd(), cname.as_ptr(), 0o700) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e).with_context(|| format!("creating {shown}"));
            }
        }
        let dir = crate::fsat::open_at(
            parent.as_raw_fd(),
            &cname,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .with_context(|| format!("opening {shown} (a symlink is refused)"))?;
        let md = File::from(dir.try_clone()?).metadata()?;
        // SAFETY: geteuid has no failure mode.
        let me = unsafe { libc::geteuid() };
        if md.uid() != me || md.mode() & 0o077 != 0 {
            bail!(
                "{shown} is not the agent's alone (owner {}, mode {:o}): not used",
                md.uid(),
                md.mode() & 0o7777
            );
        }
        let entries = count_entries(&dir);
        Ok(Store {
            dir,
            agent: agent_stamp()?,
            entries: AtomicUsize::new(entries),
            corrupt: AtomicU64::new(0),
            written: AtomicU64::new(0),
            found: AtomicU64::new(0),
        })
    }

    /// The entry for `k`, if one of this agent's is there and sound.
    pub fn get(&self, k: &ContentKey) -> Option<Known> {
        let name = crate::fsat::name(&entry_name(k)).ok()?;
        let fd = crate::fsat::open_at(
            self.dir.as_raw_fd(),
            &name,
            libc::O_RDONLY | libc::O_NOFOLLOW,
            0,
        )
        .ok()?;
        let mut text = Vec::new();
        let read = File::from(fd)
            .take(MAX_ENTRY as u64 + 1)
            .read_to_end(&mut text);
        let e: Option<Entry> = read
            .ok()
            .filter(|_| text.len() <= MAX_ENTRY)
            .and_then(|_| serde_json::from_slice(&text).ok());
        let Some(e) = e else {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            self.unlink(&name);
            return None;
        };
        if e.agent != self.agent
            || e.kind != k.kind
            || e.id != k.id
            || e.size != k.size
            || e.owner != k.owner
        {
            // Another build's, or another key's on the same name.
            return None;
        }
        self.found.fetch_add(1, Ordering::Relaxed);
        Some(match e.result {
            Some(insp) => Known::Tls(Arc::new(insp)),
            None => Known::NotTls,
        })
    }

    /// Writes the entry for `k` (errors are only logged: the cache is an
    /// optimisation).
    pub fn put(&self, k: &ContentKey, v: &Known) {
        if let Err(e) = self.try_put(k, v) {
            log::debug!("inspection cache: cannot write {}: {e:#}", k.short());
        }
    }

    fn try_put(&self, k: &ContentKey, v: &Known) -> Result<()> {
        if self.entries.load(Ordering::Relaxed) >= MAX_ENTRIES {
            self.clear();
        }
        let e = Entry {
            agent: self.agent.clone(),
            kind: k.kind.to_string(),
            id: k.id.clone(),
            size: k.size,
            owner: k.owner,
            result: match v {
                Known::Tls(i) => Some((**i).clone()),
                Known::NotTls => None,
            },
        };
        let text = serde_json::to_vec(&e)?;
        if text.len() > MAX_ENTRY {
            bail!("entry of {} bytes", text.len());
        }
        let name = crate::fsat::name(&entry_name(k))?;
        let tmp = crate::fsat::name(&format!(".{}.{}", entry_name(k), std::process::id()))?;
        let fd = crate::fsat::open_at(
            self.dir.as_raw_fd(),
            &tmp,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )?;
        let written = File::from(fd).write_all(&text);
        // SAFETY: renameat within our directory descriptor.
        let renamed = written.is_ok()
            && unsafe {
                libc::renameat(
                    self.dir.as_raw_fd(),
                    tmp.as_ptr(),
                    self.dir.as_raw_fd(),
                    name.as_ptr(),
                )
            } == 0;
        if !renamed {
            self.unlink(&tmp);
            bail!("writing the entry: {}", io::Error::last_os_error());
        }
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn unlink(&self, name: &CString) {
        // SAFETY: unlinkat relative to our directory descriptor.
        unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) };
    }

    /// Removes every entry (the bound was reached).
    fn clear(&self) {
        for name in entry_names(&self.dir) {
            self.unlink(&name);
        }
        self.entries.store(0, Ordering::Relaxed);
    }
}

/// The names in the directory (at most MAX_ENTRIES + 1 looked at).
fn entry_names(dir: &OwnedFd) -> Vec<CString> {
    let Ok(fd) = dir.try_clone() else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
        return Vec::new();
    };
    rd.take(MAX_ENTRIES + 1)
        .filter_map(|e| e.ok())
        .filter_map(|e| CString::new(e.file_name().into_encoded_bytes()).ok())
        .collect()
}

fn count_entries(dir: &OwnedFd) -> usize {
    entry_names(dir).len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key(id: u8) -> ContentKey {
        ContentKey {
            kind: "GNU",
            id: vec![id; 20],
            size: 1234,
            owner: 0,
        }
    }

    #[test]
    fn entries_round_trip_and_a_corrupt_one_is_counted_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("cache");
        let s = Store::open(&path).unwrap();
        assert!(s.get(&key(1)).is_none());
        s.put(&key(1), &Known::NotTls);
        assert!(matches!(s.get(&key(1)), Some(Known::NotTls)));
        // Another key on the same name (a forged entry) is not taken.
        let other = path.join(entry_name(&key(2)));
        std::fs::copy(path.join(entry_name(&key(1))), &other).unwrap();
        assert!(s.get(&key(2)).is_none());
        std::fs::write(&other, b"{not json").unwrap();
        assert!(s.get(&key(2)).is_none());
        assert_eq!(s.corrupt.load(Ordering::Relaxed), 1);
        assert!(!other.exists());
        let mode = std::fs::metadata(path.join(entry_name(&key(1))))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_directory_not_roots_alone_or_a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Store::open(&open).is_err());
        let link = d.path().join("link");
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(Store::open(&link).is_err());
    }

    #[test]
    fn the_count_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("c")).unwrap();
        s.entries.store(MAX_ENTRIES, Ordering::Relaxed);
        s.put(&key(3), &Known::NotTls);
        assert_eq!(s.entries.load(Ordering::Relaxed), 1);
        assert_eq!(entry_names(&s.dir).len(), 1);
    }
}
