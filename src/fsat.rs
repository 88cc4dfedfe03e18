//! Files reached through a directory descriptor (`*at` calls): a path is
//! looked up once, relative to a directory the agent holds, and no symlink
//! is followed unless the caller's flags say so. Used where processes may
//! plant files: a JVM's `/tmp` (src/jvm), the inspection cache on disk.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `s` as a C string; a NUL in it is an error (`InvalidInput`).
pub fn name(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{s:?} holds a NUL")))
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)` (`mode` is read only with
/// `O_CREAT`).
pub fn open_at(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; the mode argument is variadic and
    // ignored without O_CREAT.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(dir, path, flags | O_CLOEXEC, resolve)`: a lookup the kernel
/// confines (`RESOLVE_*`: no symlinks at all, none out of a root, ...).
pub fn open_resolved(
    dir: RawFd,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain old data (libc marks it non-exhaustive,
    // so it is built from zeroes); zero is "no flags" for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: the path is NUL-terminated and `how` is a live open_how of
    // the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
