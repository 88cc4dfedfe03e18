//! The files a JVM is handed: plainsight's Java agent (jar) and its native
//! library, built by `make` (scripts/build-jvm.sh) and embedded here, so
//! the binary stays one file; and the verdict file, where the agent writes
//! what it decided for each of the JVM's connections (the Java side maps it
//! read-only and stops handing over the bytes of a connection no one wants:
//! a BPF probe cannot write into the JVM under kernel lockdown).
//!
//! They go into a directory made for that JVM inside its own root
//! (`/tmp/.plainsight-<its pid>`, where a container's JVM can read them),
//! reached through descriptors only: the JVM's `/tmp` is opened confined to
//! its root ([`super::attach::open_tmp`]), the directory and the files are
//! created exclusively, never through a symlink, and handed to the JVM's
//! user read-only (0500, 0400) by descriptor. Removed when the JVM exits
//! and when the agent stops.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

/// The Java agent (`Agent-Class: dev.plainsight.jsse.Agent`).
pub static AGENT_JAR: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/jvm/plainsight-jsse.jar"
));

/// The native library the Java agent loads and plainsight probes.
pub static NATIVE_LIB: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/jvm/libplainsight-jsse.so"
));

const JAR_NAME: &str = "plainsight-jsse.jar";
const LIB_NAME: &str = "libplainsight-jsse.so";
const VERDICTS_NAME: &str = "verdicts";

/// Slots of the verdict file: a connection's is its number modulo this.
pub const VERDICT_SLOTS: usize = 65536;

/// A JVM's directory of our files, open.
#[derive(Debug)]
pub struct JvmDir {
    /// The JVM's /tmp (`O_PATH`).
    tmp: OwnedFd,
    /// The directory (`O_PATH`), for removing its files.
    dir: OwnedFd,
    name: CString,
    /// The jar's path as the JVM sees it.
    pub jar: String,
    /// The library's path as the JVM sees it.
    pub lib: String,
    /// The verdict file's path as the JVM sees it.
    pub verdicts: String,
    /// The verdict file, mapped shared and writable here (read-only in the
    /// JVM): one u32 per slot.
    page: Page,
}

/// A shared mapping of the verdict file.
#[derive(Debug)]
struct Page(*mut u32);

// SAFETY: the mapping lives as long as the Page; writes are atomic stores.
unsafe impl Send for Page {}
// SAFETY: as above.
unsafe impl Sync for Page {}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `map_verdicts`, once.
        unsafe { libc::munmap(self.0.cast(), VERDICT_SLOTS * 4) };
    }
}

fn cstr(s: &str) -> Result<CString> {
    Ok(crate::fsat::name(s)?)
}

fn check(ret: libc::c_int, what: impl FnOnce() -> String) -> Result<()> {
    if ret < 0 {
        return Err(io::Error::last_os_error()).with_context(what);
    }
    Ok(())
}

fn open_at(
    dir: &OwnedFd,
    name: &CString,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    crate::fsat::open_at(dir.as_raw_fd(), name, flags, mode)
}

impl JvmDir {
    /// Makes the directory for JVM `pid` (`nspid` in its own namespace,
    /// running as `uid`/`gid`) and writes the two files into it.
    pub fn create(pid: u32, nspid: u32, uid: u32, gid: u32) -> Result<JvmDir> {
        let tmp = super::attach::open_tmp(pid)?;
        let shown = format!("/tmp/.plainsight-{nspid}");
        let name = cstr(&format!(".plainsight-{nspid}"))?;
        make_dir(&tmp, &name, &shown, (pid, uid))?;
        let dir = open_at(
            &tmp,
            &name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        )
        .with_context(|| format!("JVM {pid}: opening {shown}"))?;
        let page = match map_verdicts(&dir, uid, gid) {
            Ok(p) => p,
            Err(e) => {
                remove(&tmp, &dir, &name);
                return Err(e.context(format!("JVM {pid}: writing {shown}")));
            }
        };
        let d = JvmDir {
            tmp,
            dir,
            name,
            jar: format!("{shown}/{JAR_NAME}"),
            lib: format!("{shown}/{LIB_NAME}"),
            verdicts: format!("{shown}/{VERDICTS_NAME}"),
            page,
        };
        let filled = d
            .write(JAR_NAME, AGENT_JAR, uid, gid)
            .and_then(|_| d.write(LIB_NAME, NATIVE_LIB, uid, gid))
            .and_then(|_| d.hand_over(uid, gid));
        if let Err(e) = filled {
            d.remove();
            return Err(e.context(format!("JVM {pid}: writing {shown}")));
        }
        Ok(d)
    }

    /// One file, created new (never through a symlink), read-only for the
    /// JVM's user.
    fn write(&self, name: &str, bytes: &[u8], uid: u32, gid: u32) -> Result<()> {
        let fd = open_at(
            &self.dir,
            &cstr(name)?,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o400,
        )
        .with_context(|| format!("creating {name}"))?;
        let mut f = File::from(fd);
        f.write_all(bytes)
            .with_context(|| format!("writing {name}"))?;
        // SAFETY: fchown on a descriptor we own.
        check(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) }, || {
            format!("handing {name} to uid {uid}")
        })
    }

    /// The directory to the JVM's user, read-only: mode first (while it is
    /// still root's, so nobody else can touch it), owner second, both by
    /// descriptor.
    fn hand_over(&self, uid: u32, gid: u32) -> Result<()> {
        let fd = open_at(
            &self.tmp,
            &self.name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        )
        .context("opening the directory")?;
        // SAFETY: fchmod/fchown on a descriptor we own.
        check(unsafe { libc::fchmod(fd.as_raw_fd(), 0o500) }, || {
            "setting the directory's mode".into()
        })?;
        // SAFETY: as above.
        check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }, || {
            format!("handing the directory to uid {uid}")
        })
    }

    /// Tells the JVM's Java agent what was decided for connection `conn`:
    /// its slot holds the rest of the number (so that a later connection on
    /// the same slot is not taken for it), "decided" and "wanted".
    pub fn set_verdict(&self, conn: u64, wanted: bool) {
        let slot = (conn as usize) % VERDICT_SLOTS;
        let tag = (((conn >> 16) as u32) & 0x3fff_ffff) << 2;
        let v = tag | 1 | (u32::from(wanted) << 1);
        // SAFETY: slot < VERDICT_SLOTS, inside the mapping; an aligned u32
        // in shared memory, stored atomically.
        let cell = unsafe { &*(self.page.0.add(slot) as *const std::sync::atomic::AtomicU32) };
        cell.store(v, std::sync::atomic::Ordering::Release);
    }

    /// Forgets every verdict (the agent stops: a later one decides anew).
    pub fn clear_verdicts(&self) {
        // SAFETY: the whole mapping, ours, writable.
        unsafe { std::ptr::write_bytes(self.page.0, 0, VERDICT_SLOTS) };
    }

    /// Removes the files and the directory (errors only logged: the JVM or
    /// its container may be gone with them).
    pub fn remove(&self) {
        self.clear_verdicts();
        remove(&self.tmp, &self.dir, &self.name);
    }
}

fn remove(tmp: &OwnedFd, dir: &OwnedFd, name: &CString) {
    for f in [JAR_NAME, LIB_NAME, VERDICTS_NAME] {
        if let Ok(n) = cstr(f) {
            // SAFETY: unlinkat relative to our directory descriptor.
            unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0) };
        }
    }
    // SAFETY: as above; removes only an empty directory.
    if unsafe { libc::unlinkat(tmp.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) } < 0 {
        log::debug!("cannot remove {name:?}: {}", io::Error::last_os_error());
    }
}

/// The verdict file: created new (never through a symlink), read-only for
/// the JVM's user, mapped shared and writable here through the descriptor
/// that created it.
fn map_verdicts(dir: &OwnedFd, uid: u32, gid: u32) -> Result<Page> {
    let fd = open_at(
        dir,
        &cstr(VERDICTS_NAME)?,
        libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0o400,
    )
    .context("creating the verdict file")?;
    let len = VERDICT_SLOTS * 4;
    // SAFETY: ftruncate/fchown on a descriptor we own.
    check(
        unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) },
        || "sizing the verdict file".into(),
    )?;
    // SAFETY: as above.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }, || {
        format!("handing the verdict file to uid {uid}")
    })?;
    // SAFETY: a new shared mapping of `len` bytes of our descriptor.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error()).context("mapping the verdict file");
    }
    Ok(Page(p.cast()))
}

/// Creates the directory (root's, 0700). One left by an earlier plainsight
/// (a directory, root's or handed to the JVM's user `uid`) is emptied of our
/// two files and made anew; anything else there (a symlink, another owner,
/// other files) is refused.
fn make_dir(tmp: &OwnedFd, name: &CString, shown: &str, (pid, uid): (u32, u32)) -> Result<()> {
    // SAFETY: mkdirat relative to the JVM's /tmp descriptor.
    if unsafe { libc::mkdirat(tmp.as_raw_fd(), name.as_ptr(), 0o700) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EEXIST) {
        return Err(err).with_context(|| format!("JVM {pid}: creating {shown}"));
    }
    // SAFETY: an all-zero stat is valid; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat without following a symlink, into `st`.
    let r = unsafe {
        libc::fstatat(
            tmp.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(r, || format!("JVM {pid}: looking at {shown}"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR || (st.st_uid != 0 && st.st_uid != uid) {
        bail!(
            "JVM {pid}: {shown} exists and is not plainsight's (mode {:o}, owner {}): not touched",
            st.st_mode,
            st.st_uid
        );
    }
    let old = open_at(
        tmp,
        name,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    )
    .with_context(|| format!("JVM {pid}: opening the old {shown}"))?;
    for f in [JAR_NAME, LIB_NAME, VERDICTS_NAME] {
        let n = cstr(f)?;
        // SAFETY: unlinkat relative to the old directory's descriptor.
        unsafe { libc::unlinkat(old.as_raw_fd(), n.as_ptr(), 0) };
    }
    // SAFETY: removes the (now empty) directory, then makes it anew.
    let r = unsafe {
        libc::unlinkat(tmp.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR);
        libc::mkdirat(tmp.as_raw_fd(), name.as_ptr(), 0o700)
    };
    check(r, || format!("JVM {pid}: making {shown} anew"))
}
