//! Opening an output file (`--write`, `--pcap`) where other users may have
//! been first: /var/tmp and /tmp are writable by everyone, and the agent
//! runs as root.
//!
//! A new file is created with `O_CREAT|O_EXCL|O_NOFOLLOW` (mode 0600): no
//! symlink or existing file is ever opened that way. A path that exists is
//! opened with `O_NOFOLLOW|O_NONBLOCK` (a symlink fails, a FIFO does not
//! block) and used only if it is a regular file owned by the agent's user
//! (root) with no other name (one link); it is then truncated and made
//! 0600 through the descriptor. Anything else stops the agent with the path
//! and the reason: a symbolic link, a FIFO, a directory, a device, a file
//! owned by another user, a hard link.
//!
//! Only the last component is checked: directories on the way are followed
//! as the kernel resolves them (with `fs.protected_symlinks`, the kernel
//! does not follow other users' symlinks in sticky directories).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use crate::escape::terminal_path;

/// Flags of every open: write only, never through a symlink, never a
/// controlling terminal, not inherited.
const FLAGS: libc::c_int = libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC;

fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path holds a NUL byte"))?;
    // SAFETY: a valid NUL-terminated path; the mode is read only with O_CREAT.
    let fd = unsafe { libc::open(c.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates `path` (mode 0600), or takes it over if it is a regular file of
/// the agent's user with one link (truncated, mode set to 0600); refuses
/// anything else, saying why.
pub fn create_private(path: &Path) -> Result<File> {
    // A file removed between the two opens is created anew (a bounded
    // number of times: someone may be racing).
    for _ in 0..8 {
        match open(path, FLAGS | libc::O_CREAT | libc::O_EXCL, 0o600) {
            Ok(fd) => return private(path, File::from(fd), false),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(refused(path, e)),
        }
        match open(path, FLAGS | libc::O_NONBLOCK, 0) {
            Ok(fd) => {
                let f = File::from(fd);
                acceptable(path, &f)?;
                return private(path, f, true);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(refused(path, e)),
        }
    }
    Err(anyhow!(
        "cannot create output file {}: it keeps appearing and disappearing",
        terminal_path(path)
    ))
}

/// An existing file is used only if it is a regular file of ours with no
/// other name.
fn acceptable(path: &Path, f: &File) -> Result<()> {
    let m = f
        .metadata()
        .with_context(|| format!("cannot examine output file {}", terminal_path(path)))?;
    let why = if !m.file_type().is_file() {
        format!("it is {}", kind(&m.file_type()))
    } else if m.uid() != euid() {
        format!(
            "it is owned by uid {}, not by {} (its owner could read the plaintext)",
            m.uid(),
            if euid() == 0 {
                "root".to_string()
            } else {
                format!("uid {}", euid())
            }
        )
    } else if m.nlink() != 1 {
        format!(
            "it has {} links (a hard link: its data is also elsewhere)",
            m.nlink()
        )
    } else {
        return Ok(());
    };
    Err(anyhow!(
        "refusing output file {}: {why}",
        terminal_path(path)
    ))
}

/// A file to write to: blocking, mode 0600, and empty if it existed.
fn private(path: &Path, f: File, existed: bool) -> Result<File> {
    let shown = terminal_path(path);
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor owned by `f`.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot set up output file {shown}"));
    }
    use std::os::unix::fs::PermissionsExt;
    // A new file may have lost bits to the umask, an old one kept its mode.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {shown} to mode 0600"))?;
    if existed {
        f.set_len(0)
            .with_context(|| format!("cannot truncate output file {shown}"))?;
    }
    Ok(f)
}

/// Why an open failed, in words (the type of what is there, when that is
/// the reason).
fn refused(path: &Path, e: io::Error) -> anyhow::Error {
    let what = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| kind(&m.file_type()));
    let shown = terminal_path(path);
    match (e.raw_os_error(), what) {
        // O_NOFOLLOW on a symlink, O_NONBLOCK on a FIFO nobody reads (or a
        // socket), O_WRONLY on a directory.
        (Some(libc::ELOOP | libc::ENXIO | libc::EISDIR), Some(what)) => {
            anyhow!("refusing output file {shown}: it is {what}")
        }
        _ => anyhow::Error::new(e).context(format!("cannot create output file {shown}")),
    }
}

/// "a symbolic link (not followed)", "a FIFO", ...
fn kind(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link (not followed)"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn error(p: &Path) -> String {
        format!("{:#}", create_private(p).unwrap_err())
    }

    /// A victim file: content and mode known.
    fn victim(dir: &Path) -> std::path::PathBuf {
        let v = dir.join("victim");
        std::fs::write(&v, "precious").unwrap();
        std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o644)).unwrap();
        v
    }

    fn untouched(v: &Path) {
        assert_eq!(std::fs::read(v).unwrap(), b"precious");
        assert_eq!(mode(v), 0o644);
    }

    #[test]
    fn new_file_is_created_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new.json");
        let mut f = create_private(&p).unwrap();
        f.write_all(b"x").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
    }

    /// A file of ours with one link: truncated and made 0600.
    #[test]
    fn own_file_is_truncated_and_restricted() {
        let dir = tempfile::tempdir().unwrap();
        let p = victim(dir.path());
        let _f = create_private(&p).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"");
    }

    #[test]
    fn symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let v = victim(dir.path());
        let link = dir.path().join("out");
        std::os::unix::fs::symlink(&v, &link).unwrap();
        let e = error(&link);
        assert_eq!(
            e,
            format!(
                "refusing output file {}: it is a symbolic link (not followed)",
                link.display()
            )
        );
        untouched(&v);
        // dangling: nothing is created where it points
        let target = dir.path().join("elsewhere");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(&target, &dangling).unwrap();
        assert!(error(&dangling).ends_with("it is a symbolic link (not followed)"));
        assert!(!target.exists());
    }

    #[test]
    fn hard_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = victim(dir.path());
        let link = dir.path().join("out");
        std::fs::hard_link(&v, &link).unwrap();
        assert!(error(&link).ends_with("it has 2 links (a hard link: its data is also elsewhere)"));
        untouched(&v);
    }

    /// A FIFO, with or without a reader: refused, without blocking.
    #[test]
    fn fifos_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        assert!(error(&fifo).ends_with(": it is a FIFO"), "{}", error(&fifo));
        // with a reader holding it open (non-blocking, so this test does not
        // wait for a writer)
        let reader = open(&fifo, libc::O_RDONLY | libc::O_NONBLOCK, 0).unwrap();
        assert!(error(&fifo).ends_with(": it is a FIFO"), "{}", error(&fifo));
        drop(reader);
    }

    #[test]
    fn directories_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(error(dir.path()).ends_with(": it is a directory"));
        assert!(error(Path::new("/dev/null")).ends_with(": it is a character device"));
    }

    /// Another user's file (giving one away takes root, as the agent has).
    #[test]
    fn files_of_other_users_are_refused() {
        if euid() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let v = victim(dir.path());
        std::os::unix::fs::chown(&v, Some(65534), Some(65534)).unwrap();
        let e = error(&v);
        assert!(
            e.ends_with(
                ": it is owned by uid 65534, not by root (its owner could read the plaintext)"
            ),
            "{e}"
        );
        untouched(&v);
    }

    /// Paths are named escaped.
    #[test]
    fn paths_in_errors_are_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("out\x1b[2J");
        std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
        let e = error(&link);
        assert!(e.contains("out\\x1b[2J: it is a symbolic link"), "{e}");
        assert!(!e.contains('\x1b'));
    }
}
