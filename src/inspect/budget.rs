//! Bounded work per file: caps on what one file may make the agent do, and
//! the time budget of the inspection running on this thread.
//!
//! A crafted file may carry millions of symbols with overlapping names,
//! huge PLT sections or functions full of RET instructions. The parser's
//! loops check `exhausted()` and give up with an error; the agent's event
//! loop also gives up on an inspection past the budget (a read blocked on a
//! stalled filesystem cannot check anything), see `files::Files::overdue`.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Longest symbol name kept (longer ones are not TLS functions).
pub const MAX_NAME: usize = 512;
/// TLS-looking symbols kept per file, at most.
pub const MAX_SYMBOLS: usize = 4096;
/// Probe targets per file, at most (Go's RETs included).
pub const MAX_TARGETS: usize = 1024;
/// RET instructions of one Go function, at most.
pub const MAX_RETS: usize = 256;
/// Bytes of PLT sections decoded, at most.
pub const MAX_PLT: usize = 1 << 20;
/// Loop iterations between two clock reads.
pub const CHECK_EVERY: usize = 1024;

/// What an inspection calls when it is about to wait on the disk for a
/// large read (see [`on_disk_wait`]).
pub type DiskWait = std::sync::Arc<dyn Fn() + Send + Sync>;

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static DISK_WAIT: std::cell::RefCell<Option<DiskWait>> = const { std::cell::RefCell::new(None) };
}

/// Sets (or clears) what this thread's inspection calls, once or more,
/// when it must read more of a file from the disk than a process may be
/// held for: the worker resumes the process then, and probes it when the
/// inspection ends.
pub fn on_disk_wait(f: Option<DiskWait>) {
    DISK_WAIT.with(|d| *d.borrow_mut() = f);
}

/// This thread's [`on_disk_wait`] callback.
pub fn disk_wait() -> Option<DiskWait> {
    DISK_WAIT.with(|d| d.borrow().clone())
}

/// Starts the budget of an inspection on this thread (`None`: unbounded).
pub fn start(budget: Option<Duration>) {
    DEADLINE.with(|d| d.set(budget.map(|b| Instant::now() + b)));
}

/// Whether this thread's inspection is past its budget.
pub fn exhausted() -> bool {
    DEADLINE.with(|d| d.get().is_some_and(|t| Instant::now() >= t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{elf, go, inspect_bytes, testfixtures::fixture};

    #[test]
    fn budget_runs_out() {
        start(None);
        assert!(!exhausted());
        start(Some(Duration::ZERO));
        assert!(exhausted());
        start(Some(Duration::from_secs(60)));
        assert!(!exhausted());
        start(None);
    }

    /// Out of time, the symbol scan stops with an error naming the file.
    #[test]
    fn symbol_scan_stops_when_the_budget_is_out() {
        let data = std::fs::read(fixture("openssl_like")).unwrap();
        start(Some(Duration::ZERO));
        let r = elf::parse_symbols(&data[..], "crafted.so", &|_| true);
        start(None);
        match r {
            Err(elf::ElfError::TooMuchWork { path, what }) => {
                assert_eq!(path, "crafted.so");
                assert_eq!(
                    what,
                    "its symbol tables take longer than the inspection budget"
                );
            }
            other => panic!("expected TooMuchWork, got {other:?}"),
        }
        assert!(elf::parse_symbols(&data[..], "crafted.so", &|_| true).is_ok());
    }

    /// A function made of RET instructions yields at most MAX_RETS + 1 of
    /// them (one more than allowed: the caller refuses the file).
    #[test]
    fn ret_scan_is_capped() {
        let code = vec![0xc3u8; 10_000];
        let rets = go::ret_offsets(&code, 0x1000, 0x1000);
        assert_eq!(rets.len(), MAX_RETS + 1);
        assert_eq!(rets[..3], [0x1000, 0x1001, 0x1002]);
    }

    /// Thousands of TLS-looking exported functions (a crafted library):
    /// names kept are capped, and a file with more probe targets than
    /// MAX_TARGETS is refused.
    #[test]
    fn symbols_and_targets_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("many.c");
        let mut c = String::from("int SSL_write(void){return 1;}\nint SSL_read(void){return 2;}\n");
        for i in 0..5000 {
            c.push_str(&format!("int SSL_f{i}(void){{return {i};}}\n"));
        }
        std::fs::write(&src, c).unwrap();
        let so = dir.path().join("libmany.so");
        let out = std::process::Command::new("cc")
            .args(["-O1", "-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let data = std::fs::read(&so).unwrap();
        let syms = elf::parse_symbols(&data[..], "libmany.so", &|n| n.starts_with("SSL_")).unwrap();
        assert_eq!(syms.functions.len(), MAX_SYMBOLS);
        // Few targets (the OpenSSL points it has): inspected as usual.
        let insp = inspect_bytes(&data[..], std::path::Path::new("libmany.so"), false);
        assert!(insp.is_ok(), "{insp:?}");
        let mut many = crate::inspect::Inspection {
            library: Some(crate::inspect::TlsLibrary::GoTls),
            linkage: crate::inspect::Linkage::Static,
            targets: Vec::new(),
            unsupported: None,
        };
        for i in 0..=MAX_TARGETS as u64 {
            many.targets.push(crate::inspect::Target {
                point: crate::probes::ProbePoint::GoWriteRet,
                symbol: "ret".into(),
                offset: i,
                size: 0,
                place: None,
                cookie: None,
            });
        }
        let e = crate::inspect::check_targets(&many, std::path::Path::new("go-prog")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "go-prog is not inspected: 1025 probe points, more than the 1024 instrumented per file"
        );
    }
}
