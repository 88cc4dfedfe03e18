//! Discover: which executable files processes map.
//!
//! New mappings arrive from BPF as `MMAP_EXEC_FILE` (see `bpf/discover.bpf.c`);
//! processes that were running before the agent started are found here, in
//! procfs. Files are named by (device, inode), as the kernel sees them.

use std::fmt;
use std::fs;
use std::path::PathBuf;

/// A file as the kernel knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Kernel-internal dev_t of the superblock: `major << 20 | minor`.
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn from_major_minor(major: u64, minor: u64, ino: u64) -> Self {
        FileId {
            dev: (major << 20) | (minor & 0xfffff),
            ino,
        }
    }
    /// The identity `stat` gives a file, in the kernel's encoding.
    pub fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let dev = m.dev();
        FileId::from_major_minor(libc::major(dev) as u64, libc::minor(dev) as u64, m.ino())
    }
    pub fn major(&self) -> u64 {
        self.dev >> 20
    }
    pub fn minor(&self) -> u64 {
        self.dev & 0xfffff
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}/{}", self.major(), self.minor(), self.ino)
    }
}

/// One executable file mapping of a process (a line of `/proc/PID/maps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecMapping {
    pub start: u64,
    pub end: u64,
    pub file: FileId,
    /// The path as the process sees it (may end in " (deleted)").
    pub path: String,
}

impl ExecMapping {
    /// A path that opens this very file from the agent, whatever mount
    /// namespace the process is in and even if the file was deleted.
    pub fn map_files_path(&self, pid: u32) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            self.start, self.end
        ))
    }
}

/// Parses one `/proc/PID/maps` line; returns executable file mappings only.
pub fn parse_maps_line(line: &str) -> Option<ExecMapping> {
    let mut it = line.split_ascii_whitespace();
    let range = it.next()?;
    let perms = it.next()?;
    let _offset = it.next()?;
    let dev = it.next()?;
    let ino: u64 = it.next()?.parse().ok()?;
    // The path is the rest of the line, spaces included.
    let path = line
        .splitn(6, |c: char| c.is_ascii_whitespace())
        .nth(5)
        .map(|s| s.trim_start())?;
    if ino == 0 || perms.as_bytes().get(2) != Some(&b'x') || !path.starts_with('/') {
        return None;
    }
    let (s, e) = range.split_once('-')?;
    let (maj, min) = dev.split_once(':')?;
    Some(ExecMapping {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        file: FileId::from_major_minor(
            u64::from_str_radix(maj, 16).ok()?,
            u64::from_str_radix(min, 16).ok()?,
            ino,
        ),
        path: path.to_string(),
    })
}

/// `/proc/PID/maps` read at most: a process has at most 65530 mappings
/// by default (`vm.max_map_count`), about 10 MiB of lines with long paths.
const MAX_MAPS: u64 = 16 << 20;

/// The executable file mappings of a process (empty if it is gone); a
/// process with more mappings than `MAX_MAPS` holds has the rest ignored.
pub fn exec_mappings(pid: u32) -> Vec<ExecMapping> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = fs::File::open(format!("/proc/{pid}/maps"))
        .and_then(|f| f.take(MAX_MAPS).read_to_end(&mut bytes));
    if read.is_err() {
        return Vec::new();
    }
    // A line cut by the bound is not a mapping; a path that is not UTF-8
    // (any process can name its files so) costs only that path's text.
    let end = bytes.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    String::from_utf8_lossy(&bytes[..end])
        .lines()
        .filter_map(parse_maps_line)
        .collect()
}

/// Finds the mapping of `file` in process `pid`.
pub fn find_mapping(pid: u32, file: FileId) -> Option<ExecMapping> {
    exec_mappings(pid).into_iter().find(|m| m.file == file)
}

/// Filesystems served by a user-space process (FUSE), which any local user
/// can mount (fusermount) and make stall: any read of their files, or a
/// probe placed in them (the kernel reads the probed page), then waits as
/// long as that process wants, holding whatever the waiting thread holds.
/// Their files are not read or instrumented. Network filesystems (NFS,
/// CIFS, 9p, virtiofs) are mounted by root and served by other machines:
/// they are read, a slow read being bounded by the inspection budget.
const STALLABLE_FS: &[&str] = &["fuse", "fuseblk"];

/// Whether a filesystem type (`fuse.sshfs` counts as `fuse`) is one a local
/// user's process serves.
pub fn may_stall(fstype: &str) -> bool {
    let base = fstype.split('.').next().unwrap_or(fstype);
    STALLABLE_FS.contains(&base)
}

/// mountinfo read at most (a host with thousands of mounts stays below).
const MAX_MOUNTINFO: u64 = 8 << 20;

/// The filesystem type of the mount of device `file.dev` as process `pid`
/// sees its mounts, read from `/proc/PID/mountinfo`: nothing on that
/// filesystem is touched (a stat or statfs could wait on its server).
pub fn fs_type(pid: u32, file: FileId) -> Option<String> {
    use std::io::Read;
    let f = fs::File::open(format!("/proc/{pid}/mountinfo")).ok()?;
    let mut text = String::new();
    f.take(MAX_MOUNTINFO).read_to_string(&mut text).ok()?;
    fs_type_in(&text, file)
}

/// [`fs_type`] on mountinfo text: `ID PARENT MAJ:MIN ROOT POINT OPTS
/// [TAGS...] - FSTYPE SOURCE SUPEROPTS`.
fn fs_type_in(mountinfo: &str, file: FileId) -> Option<String> {
    let want = format!("{}:{}", file.major(), file.minor());
    mountinfo.lines().find_map(|l| {
        let mut f = l.split(' ');
        if f.nth(2)? != want {
            return None;
        }
        let mut rest = f.skip_while(|t| *t != "-");
        rest.next()?;
        rest.next().map(str::to_string)
    })
}

/// All process ids in procfs.
pub fn all_pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The short name of a process (`/proc/PID/comm`).
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_filesystem_type_of_a_device() {
        let mi = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                  29 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                  95 29 0:52 / /mnt/s rw,relatime shared:9 master:3 - fuse.sshfs me@h:/ rw\n";
        let at = |maj, min| fs_type_in(mi, FileId::from_major_minor(maj, min, 1));
        assert_eq!(at(254, 0).as_deref(), Some("ext4"));
        assert_eq!(at(0, 52).as_deref(), Some("fuse.sshfs"));
        assert_eq!(at(0, 21).as_deref(), Some("proc"));
        assert_eq!(at(8, 1), None);
        assert!(may_stall("fuse.sshfs") && may_stall("fuse") && may_stall("fuseblk"));
        assert!(!may_stall("ext4") && !may_stall("overlay") && !may_stall("tmpfs"));
        assert!(!may_stall("9p") && !may_stall("nfs4") && !may_stall("virtiofs"));
    }

    #[test]
    fn parses_exec_file_mappings_only() {
        let l = "7f2a1c000000-7f2a1c0a0000 r-xp 00020000 fd:01 1315130                    /usr/lib/x86_64-linux-gnu/libssl.so.3";
        let m = parse_maps_line(l).unwrap();
        assert_eq!(m.start, 0x7f2a1c000000);
        assert_eq!(m.end, 0x7f2a1c0a0000);
        assert_eq!(
            m.file,
            FileId {
                dev: (0xfd << 20) | 1,
                ino: 1315130
            }
        );
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert!(parse_maps_line(
            "7f2a1c000000-7f2a1c0a0000 r--p 00000000 fd:01 1315130 /usr/lib/libssl.so.3"
        )
        .is_none());
        assert!(parse_maps_line("7ffd0000-7ffd1000 r-xp 00000000 00:00 0 [vdso]").is_none());
        assert!(parse_maps_line("garbage").is_none());
        let d =
            parse_maps_line("400000-401000 r-xp 00000000 08:10 77 /tmp/my prog (deleted)").unwrap();
        assert_eq!(d.path, "/tmp/my prog (deleted)");
        assert_eq!(d.file.major(), 8);
        assert_eq!(d.file.minor(), 0x10);
    }

    #[test]
    fn own_process_maps_its_executable() {
        let me = std::process::id();
        let exe = fs::canonicalize("/proc/self/exe").unwrap();
        let maps = exec_mappings(me);
        assert!(
            maps.iter().any(|m| std::path::Path::new(&m.path) == exe),
            "{maps:?}"
        );
        let m = maps
            .iter()
            .find(|m| std::path::Path::new(&m.path) == exe)
            .unwrap();
        assert!(fs::metadata(m.map_files_path(me)).is_ok());
    }

    #[test]
    fn a_mapping_whose_path_is_not_utf8_is_still_found() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join(std::ffi::OsStr::from_bytes(b"lib\xff\xfe.so"));
        fs::write(&path, [0x90u8; 4096]).unwrap();
        let f = fs::File::open(&path).unwrap();
        // SAFETY: a fresh read-only executable mapping of our own file,
        // unmapped below; nothing runs it.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        let ino = f.metadata().unwrap().ino();
        let found = exec_mappings(std::process::id())
            .into_iter()
            .find(|m| m.file.ino == ino);
        // SAFETY: unmaps exactly the mapping made above.
        unsafe { libc::munmap(at, 4096) };
        let m = found.expect("the mapping is listed");
        assert_eq!(m.start, at as u64);
        assert!(m.path.ends_with("lib\u{fffd}\u{fffd}.so"), "{}", m.path);
    }
}
