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
    /// Where the agent saw this content, in its own mount namespace
    /// (hints for a warm start: each is opened and its content checked
    /// against the key before anything is attached through it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    paths: Vec<String>,
}

/// Paths kept per entry, at most, and the longest kept.
pub const MAX_HINTS: usize = 4;
const MAX_HINT_LEN: usize = 4096;

/// A TLS result whose content the agent saw at `paths` (its own mount
/// namespace): what a warm start attaches once each path is checked.
pub struct WarmEntry {
    pub key: ContentKey,
    pub insp: Inspection,
    pub paths: Vec<String>,
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

/// Suffix of the entries holding TLS results (the ones a warm start
/// reads); others end in `.json` alone.
const TLS_SUFFIX: &str = ".tls.json";

/// An entry's file names, for a content without TLS code and for one with:
/// a 64-bit FNV-1a of the key (the key itself is in the entry and checked).
fn entry_names_of(k: &ContentKey) -> [String; 2] {
    let h = entry_hash(k);
    [format!("{h}.json"), format!("{h}{TLS_SUFFIX}")]
}

fn entry_hash(k: &ContentKey) -> String {
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
    format!("{h:016x}")
}

impl Store {
    /// Opens (making it if need be) the cache directory `path`: root's,
    /// 0700, not a symlink; anything else is refused. `variant` names the
    /// settings that change what inspection finds (probes at function
    /// entries, say): entries written under others are not used.
    pub fn open(path: &Path, variant: &str) -> Result<Store> {
        let shown = path.display();
        let parent = match path.parent().context("the cache directory has no parent")? {
            p if p.as_os_str().is_empty() => Path::new("."),
            p => p,
        };
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
            agent: format!("{}{variant}", agent_stamp()?),
            entries: AtomicUsize::new(entries),
            corrupt: AtomicU64::new(0),
            written: AtomicU64::new(0),
            found: AtomicU64::new(0),
        })
    }

    /// The entry for `k`, if one of this agent's is there and sound.
    pub fn get(&self, k: &ContentKey) -> Option<Known> {
        let e = entry_names_of(k)
            .iter()
            .filter_map(|n| self.read(n))
            .find(|e| self.is_for(e, k))?;
        self.found.fetch_add(1, Ordering::Relaxed);
        Some(match e.result {
            Some(insp) => Known::Tls(Arc::new(insp)),
            None => Known::NotTls,
        })
    }

    /// Whether `e` is this agent binary's entry for `k` (not another
    /// build's, nor another key's on the same name).
    fn is_for(&self, e: &Entry, k: &ContentKey) -> bool {
        e.agent == self.agent
            && e.kind == k.kind
            && e.id == k.id
            && e.size == k.size
            && e.owner == k.owner
    }

    /// Entry `name`, parsed; one that does not parse is removed and counted.
    fn read(&self, name: &str) -> Option<Entry> {
        let name = crate::fsat::name(name).ok()?;
        let fd = crate::fsat::open_at(
            self.dir.as_raw_fd(),
            &name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        )
        .ok()?;
        let file = File::from(fd);
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return None;
        }
        let mut text = Vec::new();
        let read = file.take(MAX_ENTRY as u64 + 1).read_to_end(&mut text);
        let e: Option<Entry> = read
            .ok()
            .filter(|_| text.len() <= MAX_ENTRY)
            .and_then(|_| serde_json::from_slice(&text).ok());
        if e.is_none() {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            self.unlink(&name);
        }
        e
    }

    /// This agent binary's TLS results that name paths, at most `max`: what
    /// a warm start may attach (each path still to be opened and checked).
    /// At most `4 * max` entries are read (TLS results of files in other
    /// mount namespaces name no path, and are skipped).
    pub fn warm_entries(&self, max: usize) -> Vec<WarmEntry> {
        let mut out = Vec::new();
        let mut read = 0;
        for name in entry_names(&self.dir) {
            if out.len() >= max || read >= max.saturating_mul(4) {
                break;
            }
            let Ok(name) = name.into_string() else {
                continue;
            };
            if !name.ends_with(TLS_SUFFIX) {
                continue;
            }
            read += 1;
            let Some(e) = self.read(&name) else { continue };
            let kind = match e.kind.as_str() {
                "GNU" => "GNU",
                "Go" => "Go",
                _ => continue,
            };
            let key = ContentKey {
                kind,
                id: e.id.clone(),
                size: e.size,
                owner: e.owner,
            };
            // Its name must be its key's, as `get` would look it up.
            if !self.is_for(&e, &key) || entry_names_of(&key)[1] != name {
                continue;
            }
            let (Some(insp), false) = (e.result, e.paths.is_empty()) else {
                continue;
            };
            let paths = e.paths.into_iter().take(MAX_HINTS).collect();
            out.push(WarmEntry { key, insp, paths });
        }
        out
    }

    /// Writes the entry for `k`, with `hint` (where the agent saw the
    /// content, in its own mount namespace) if given (errors are only
    /// logged: the cache is an optimisation).
    pub fn put(&self, k: &ContentKey, v: &Known, hint: Option<&str>) {
        if let Err(e) = self.try_put(k, v, hint) {
            log::debug!("inspection cache: cannot write {}: {e:#}", k.short());
        }
    }

    fn try_put(&self, k: &ContentKey, v: &Known, hint: Option<&str>) -> Result<()> {
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
            paths: hint
                .filter(|p| p.len() <= MAX_HINT_LEN && p.starts_with('/'))
                .map(|p| vec![p.to_string()])
                .unwrap_or_default(),
        };
        let text = serde_json::to_vec(&e)?;
        if text.len() > MAX_ENTRY {
            bail!("entry of {} bytes", text.len());
        }
        let [plain, tls] = entry_names_of(k);
        let name = if e.result.is_some() { tls } else { plain };
        let tmp = crate::fsat::name(&format!(".{name}.{}", std::process::id()))?;
        let name = crate::fsat::name(&name)?;
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
        let s = Store::open(&path, "").unwrap();
        assert!(s.get(&key(1)).is_none());
        s.put(&key(1), &Known::NotTls, None);
        assert!(matches!(s.get(&key(1)), Some(Known::NotTls)));
        // Another key on the same name (a forged entry) is not taken.
        let other = path.join(&entry_names_of(&key(2))[0]);
        std::fs::copy(path.join(&entry_names_of(&key(1))[0]), &other).unwrap();
        assert!(s.get(&key(2)).is_none());
        std::fs::write(&other, b"{not json").unwrap();
        assert!(s.get(&key(2)).is_none());
        assert_eq!(s.corrupt.load(Ordering::Relaxed), 1);
        assert!(!other.exists());
        let mode = std::fs::metadata(path.join(&entry_names_of(&key(1))[0]))
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
        assert!(Store::open(&open, "").is_err());
        let link = d.path().join("link");
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(Store::open(&link, "").is_err());
    }

    #[test]
    fn the_count_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("c"), "").unwrap();
        s.entries.store(MAX_ENTRIES, Ordering::Relaxed);
        s.put(&key(3), &Known::NotTls, None);
        assert_eq!(s.entries.load(Ordering::Relaxed), 1);
        assert_eq!(entry_names(&s.dir).len(), 1);
    }

    #[test]
    fn tls_results_with_paths_are_listed_for_a_warm_start() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("c"), "").unwrap();
        let tls = || {
            Known::Tls(Arc::new(Inspection {
                library: Some(crate::inspect::TlsLibrary::OpenSsl),
                linkage: crate::inspect::Linkage::Exported,
                targets: Vec::new(),
                unsupported: None,
            }))
        };
        s.put(&key(1), &tls(), Some("/usr/lib/libssl.so.3"));
        s.put(&key(2), &tls(), None); // no path: nothing to open
        s.put(&key(3), &Known::NotTls, Some("/usr/bin/true"));
        s.put(&key(4), &tls(), Some("relative/path")); // not kept
        let w = s.warm_entries(10);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].key, key(1));
        assert_eq!(w[0].paths, vec!["/usr/lib/libssl.so.3".to_string()]);
        // Both kinds are found again by their key.
        assert!(matches!(s.get(&key(1)), Some(Known::Tls(_))));
        assert!(matches!(s.get(&key(3)), Some(Known::NotTls)));
        // Another build's entry is not listed; a corrupt one is counted.
        let name = d.path().join("c").join(&entry_names_of(&key(1))[1]);
        let text = std::fs::read_to_string(&name).unwrap();
        std::fs::write(&name, text.replacen(&s.agent, "another build", 1)).unwrap();
        assert!(s.warm_entries(10).is_empty());
        std::fs::write(&name, b"{").unwrap();
        assert!(s.warm_entries(10).is_empty());
        assert_eq!(s.corrupt.load(Ordering::Relaxed), 1);
        // An entry copied under another key's name is not taken.
        s.put(&key(5), &tls(), Some("/a"));
        std::fs::copy(
            d.path().join("c").join(&entry_names_of(&key(5))[1]),
            d.path().join("c").join(&entry_names_of(&key(6))[1]),
        )
        .unwrap();
        let w = s.warm_entries(10);
        assert_eq!(
            w.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            vec![key(5)]
        );
        assert_eq!(s.warm_entries(0).len(), 0);

        // An agent whose settings place probes otherwise uses none of them.
        let other = Store::open(&d.path().join("c"), ":entry").unwrap();
        assert!(other.get(&key(5)).is_none());
        assert!(other.warm_entries(10).is_empty());
    }

    /// A warm start reads at most four entries per file it may take: ten
    /// unreadable TLS entries cost it four reads (each counted corrupt).
    #[test]
    fn a_warm_start_reads_a_bounded_number_of_entries() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("c"), "").unwrap();
        for k in 0..10 {
            let name = &entry_names_of(&key(k))[1];
            std::fs::write(d.path().join("c").join(name), b"{").unwrap();
        }
        assert!(s.warm_entries(1).is_empty());
        assert_eq!(s.corrupt.load(Ordering::Relaxed), 4);
    }
}
