//! Inspect a file's content once: what inspection found is kept by the
//! content's identity (its ELF build ID, the GNU one or Go's, and its size),
//! so the same library or executable on a new inode (every container layer,
//! every deploy, every copy) is instrumented without being read or parsed
//! again. Only the ELF header, the program headers and the notes are read
//! to find the identity.
//!
//! A result is shared only between files of the same owner, and only from
//! files no one else may write (not group- or world-writable). A forged
//! file that claims another's build ID and size, inspected first, would
//! otherwise give its own offsets to the genuine file seen later in other
//! processes: int3 bytes in the middle of their instructions. Keyed by
//! owner, a file's result serves only files its owner could have written
//! anyway; a forged or stale ID can only hurt the processes that map that
//! owner's files, never the agent or files of others.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use super::Inspection;

/// Contents remembered at most; past it the cache starts over (a bound the
/// agent sets, whatever files processes map).
pub const MAX_ENTRIES: usize = 4096;
/// Program headers looked at, at most.
const MAX_PHDRS: usize = 64;
/// Bytes of one note segment read, at most.
const MAX_NOTES: usize = 4096;
/// Longest build ID taken (GNU: 20 bytes of SHA-1; Go: about 80 characters).
const MAX_ID: usize = 128;

const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;
/// Go's build ID note (`.note.go.buildid`).
const NT_GO_BUILD_ID: u32 = 4;

/// A file's content, as far as the agent can tell without reading it all.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentKey {
    /// "GNU" or "Go".
    pub kind: &'static str,
    pub id: Vec<u8>,
    pub size: u64,
    /// The file's owner (uid): results are shared between one owner's files.
    pub owner: u32,
}

/// What a content's inspection found (TLS code, or none).
#[derive(Debug, Clone)]
pub enum Known {
    Tls(Arc<Inspection>),
    NotTls,
}

/// The cache, shared by the inspection workers.
#[derive(Default, Clone)]
pub struct Cache {
    inner: Arc<Mutex<HashMap<ContentKey, Known>>>,
}

/// The agent's cache.
pub fn shared() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Cache::default)
}

impl ContentKey {
    /// The identity for logs: "GNU build ID 1a2b..." (first 8 bytes).
    pub fn short(&self) -> String {
        let hex: String = self.id.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("{} build ID {hex}", self.kind)
    }
}

/// The cache on disk, when the agent has one (`--cache-dir`).
static STORE: std::sync::OnceLock<super::store::Store> = std::sync::OnceLock::new();

/// Gives the agent's cache its directory on disk (once, at start).
pub fn set_store(s: super::store::Store) {
    let _ = STORE.set(s);
}

/// The cache on disk, if set.
pub fn store() -> Option<&'static super::store::Store> {
    STORE.get()
}

impl Cache {
    /// In memory, else on disk (kept in memory from then on).
    pub fn get(&self, k: &ContentKey) -> Option<Known> {
        if let Some(v) = crate::lock(&self.inner).get(k).cloned() {
            return Some(v);
        }
        let v = STORE.get()?.get(k)?;
        self.remember(k.clone(), v.clone());
        Some(v)
    }

    /// In memory and on disk; `hint`: where the agent itself can open the
    /// content (kept on disk for a warm start).
    pub fn insert(&self, k: ContentKey, v: Known, hint: Option<&str>) {
        if let Some(s) = STORE.get() {
            s.put(&k, &v, hint);
        }
        self.remember(k, v);
    }

    /// In memory only (a result read from disk at a warm start).
    pub fn remember(&self, k: ContentKey, v: Known) {
        let mut m = crate::lock(&self.inner);
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(k, v);
    }

    pub fn len(&self) -> usize {
        crate::lock(&self.inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The content identity of the 64-bit little-endian ELF file `f` of
/// size and owner given by `md`, if it has a build ID and only its owner
/// may write it.
pub fn key(f: &File, md: &std::fs::Metadata) -> Option<ContentKey> {
    use std::os::unix::fs::MetadataExt;
    if md.mode() & 0o022 != 0 {
        return None;
    }
    let mut eh = [0u8; 64];
    f.read_exact_at(&mut eh, 0).ok()?;
    let (id, kind) = build_id(&eh, |off, buf| f.read_exact_at(buf, off).is_ok())?;
    Some(ContentKey {
        kind,
        id,
        size: md.len(),
        owner: md.uid(),
    })
}

/// [`key`] of ELF bytes already in memory (the fuzz harness's entry).
pub fn key_of_bytes(data: &[u8]) -> Option<ContentKey> {
    let eh: &[u8; 64] = data.get(..64)?.try_into().ok()?;
    let read = |off: u64, buf: &mut [u8]| {
        let Ok(o) = usize::try_from(off) else {
            return false;
        };
        match o.checked_add(buf.len()).and_then(|end| data.get(o..end)) {
            Some(b) => {
                buf.copy_from_slice(b);
                true
            }
            None => false,
        }
    };
    let (id, kind) = build_id(eh, read)?;
    Some(ContentKey {
        kind,
        id,
        size: data.len() as u64,
        owner: 0,
    })
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// The build ID in the notes of the ELF file whose header is `eh`, reading
/// the rest with `read(offset, buf)`.
fn build_id(
    eh: &[u8; 64],
    read: impl Fn(u64, &mut [u8]) -> bool,
) -> Option<(Vec<u8>, &'static str)> {
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let phoff = u64_at(eh, 0x20)?;
    let phentsize = usize::from(u16_at(eh, 0x36)?);
    let phnum = usize::from(u16_at(eh, 0x38)?).min(MAX_PHDRS);
    if phentsize < 56 {
        return None;
    }
    let mut ph = vec![0u8; phentsize.checked_mul(phnum)?];
    if !read(phoff, &mut ph) {
        return None;
    }
    let mut go = None;
    for h in ph.chunks_exact(phentsize) {
        if u32_at(h, 0)? != PT_NOTE {
            continue;
        }
        let off = u64_at(h, 8)?;
        let len = usize::try_from(u64_at(h, 32)?).ok()?.min(MAX_NOTES);
        let mut notes = vec![0u8; len];
        if !read(off, &mut notes) {
            continue;
        }
        match find_note(&notes) {
            Some((id, "GNU")) => return Some((id, "GNU")),
            Some((id, kind)) => go = go.or(Some((id, kind))),
            None => {}
        }
    }
    go
}

/// A build ID among the notes in `b`.
fn find_note(b: &[u8]) -> Option<(Vec<u8>, &'static str)> {
    let mut o = 0usize;
    let align4 = |n: usize| n.checked_add(3).map(|v| v & !3);
    while o + 12 <= b.len() {
        let namesz = u32_at(b, o)? as usize;
        let descsz = u32_at(b, o + 4)? as usize;
        let ty = u32_at(b, o + 8)?;
        let name_at = o + 12;
        let desc_at = name_at.checked_add(align4(namesz)?)?;
        let end = desc_at.checked_add(align4(descsz)?)?;
        let name = b.get(name_at..name_at.checked_add(namesz)?)?;
        let desc = b.get(desc_at..desc_at.checked_add(descsz)?)?;
        if (1..=MAX_ID).contains(&descsz) {
            match (name, ty) {
                (b"GNU\0", NT_GNU_BUILD_ID) => return Some((desc.to_vec(), "GNU")),
                (b"Go\0\0", NT_GO_BUILD_ID) => return Some((desc.to_vec(), "Go")),
                _ => {}
            }
        }
        o = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GNU build ID of Debian's libssl, as the object crate reads it.
    #[test]
    fn build_id_of_the_system_libssl() {
        use object::Object;
        let path = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
        let data = std::fs::read(path).unwrap();
        let want = object::File::parse(&*data)
            .unwrap()
            .build_id()
            .unwrap()
            .unwrap()
            .to_vec();
        let f = File::open(path).unwrap();
        let k = key(&f, &f.metadata().unwrap()).expect("a build ID");
        assert_eq!(
            (k.kind, k.id, k.size, k.owner),
            ("GNU", want, data.len() as u64, 0)
        );
    }

    /// The owner is part of the identity, and a file others may write has
    /// none (its result is not shared).
    #[test]
    fn owner_and_write_permission() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("libssl.so.3");
        std::fs::copy("/usr/lib/x86_64-linux-gnu/libssl.so.3", &p).unwrap();
        let key_of = |mode: u32| {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let f = File::open(&p).unwrap();
            key(&f, &f.metadata().unwrap())
        };
        let mine = key_of(0o644).expect("a build ID");
        // SAFETY: geteuid has no preconditions.
        assert_eq!(mine.owner, unsafe { libc::geteuid() });
        assert_eq!(key_of(0o755), Some(mine));
        assert_eq!(key_of(0o664), None);
        assert_eq!(key_of(0o646), None);
    }

    /// Truncated or crafted notes give no ID, and never panic.
    #[test]
    fn crafted_notes() {
        // namesz 4, descsz 20, type 3, "GNU\0", then only 4 bytes of desc
        let mut b = vec![4, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0];
        b.extend_from_slice(b"GNU\0");
        b.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(find_note(&b), None);
        // sizes near u32::MAX
        let b = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0];
        assert_eq!(find_note(&b), None);
        // a whole GNU note
        let mut b = vec![4, 0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0];
        b.extend_from_slice(b"GNU\0");
        b.extend_from_slice(&[9, 8, 7, 6]);
        assert_eq!(find_note(&b), Some((vec![9, 8, 7, 6], "GNU")));
    }

    #[test]
    fn the_cache_is_bounded() {
        let c = Cache::default();
        for i in 0..MAX_ENTRIES + 10 {
            let k = ContentKey {
                kind: "GNU",
                id: (i as u64).to_le_bytes().to_vec(),
                size: 1,
                owner: 0,
            };
            c.insert(k, Known::NotTls, None);
        }
        assert!(c.len() <= MAX_ENTRIES);
    }
}
