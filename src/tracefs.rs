//! tracefs, where libbpf finds the tracepoints the agent attaches to.
//!
//! On a host where nothing has mounted it yet, the agent mounts it itself.
//! Another agent, or any tracing tool, may be doing the same at that very
//! moment: the mount that loses such a race fails (EBUSY has been seen)
//! although tracefs is there an instant later. A failed mount is therefore
//! not the end: tracefs present now, by whoever's hand, is all the agent
//! needs; on EBUSY it waits a bounded time for the winner's mount to show.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Where libbpf looks for tracepoints, in its order.
const EVENTS: [&str; 2] = [
    "/sys/kernel/tracing/events",
    "/sys/kernel/debug/tracing/events",
];

/// How long a mount that failed with EBUSY waits for the other mount to
/// appear (a concurrent mount completes in microseconds; this is slack for
/// a loaded host, and bounds start-up whatever happens).
pub const BUSY_WAIT: Duration = Duration::from_secs(2);
/// How often tracefs is looked for while waiting.
const POLL: Duration = Duration::from_millis(10);

/// Makes sure tracefs is mounted where libbpf looks for it.
pub fn ensure() -> Result<()> {
    settle(present, mount, BUSY_WAIT)
}

/// Whether tracefs is mounted where libbpf looks (through debugfs, the
/// second path mounts it on access).
fn present() -> bool {
    EVENTS.iter().any(|p| Path::new(p).exists())
}

/// mount -t tracefs tracefs /sys/kernel/tracing.
fn mount() -> std::io::Result<()> {
    let src = c"tracefs";
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// [`ensure`] with the look-up, the mount and the wait given: whatever the
/// mount says, tracefs present afterwards is success; EBUSY waits up to
/// `busy_wait` for it; any other error is the end, with what failed.
fn settle(
    present: impl Fn() -> bool,
    mount: impl FnOnce() -> std::io::Result<()>,
    busy_wait: Duration,
) -> Result<()> {
    if present() {
        return Ok(());
    }
    let err = match mount() {
        Ok(()) => {
            log::info!("mounted tracefs on /sys/kernel/tracing");
            return Ok(());
        }
        Err(e) => e,
    };
    if present() {
        log::info!("tracefs was mounted by someone else meanwhile (our mount: {err})");
        return Ok(());
    }
    if err.raw_os_error() == Some(libc::EBUSY) {
        let until = Instant::now() + busy_wait;
        while Instant::now() < until {
            std::thread::sleep(POLL);
            if present() {
                log::info!("tracefs appeared after our mount reported busy");
                return Ok(());
            }
        }
        bail!(
            "tracefs is not mounted, mounting it on /sys/kernel/tracing failed ({err}) and it \
             did not appear within {} ms: the tracepoint hooks need it",
            busy_wait.as_millis()
        );
    }
    bail!(
        "tracefs is not mounted and mounting it on /sys/kernel/tracing failed ({err}): \
         the tracepoint hooks need it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::Error;

    fn busy() -> std::io::Result<()> {
        Err(Error::from_raw_os_error(libc::EBUSY))
    }

    #[test]
    fn present_already_does_not_mount() {
        let mounted = Cell::new(false);
        let mount = || {
            mounted.set(true);
            Ok(())
        };
        settle(|| true, mount, BUSY_WAIT).unwrap();
        assert!(!mounted.get());
    }

    #[test]
    fn a_mount_that_succeeds_is_enough() {
        settle(|| false, || Ok(()), BUSY_WAIT).unwrap();
    }

    #[test]
    fn busy_but_mounted_by_the_winner_goes_on_at_once() {
        // The race's loser: its own mount failed, the winner's is there.
        let looks = Cell::new(0);
        let start = Instant::now();
        settle(
            || {
                looks.set(looks.get() + 1);
                looks.get() > 1
            },
            busy,
            BUSY_WAIT,
        )
        .unwrap();
        assert_eq!(looks.get(), 2);
        assert!(start.elapsed() < POLL);
    }

    #[test]
    fn busy_waits_for_the_winner_to_finish() {
        let looks = Cell::new(0);
        settle(
            || {
                looks.set(looks.get() + 1);
                looks.get() > 5
            },
            busy,
            BUSY_WAIT,
        )
        .unwrap();
        assert_eq!(looks.get(), 6);
    }

    #[test]
    fn busy_for_ever_gives_up_after_the_wait() {
        let start = Instant::now();
        let e = settle(|| false, busy, Duration::from_millis(50)).unwrap_err();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        let msg = e.to_string();
        assert!(msg.contains("did not appear within 50 ms"), "{msg}");
        assert!(msg.contains("Device or resource busy"), "{msg}");
    }

    #[test]
    fn another_error_is_the_end_at_once() {
        let looks = Cell::new(0);
        let e = settle(
            || {
                looks.set(looks.get() + 1);
                false
            },
            || Err(Error::from_raw_os_error(libc::EPERM)),
            BUSY_WAIT,
        )
        .unwrap_err();
        assert_eq!(looks.get(), 2);
        assert_eq!(
            e.to_string(),
            "tracefs is not mounted and mounting it on /sys/kernel/tracing failed \
             (Operation not permitted (os error 1)): the tracepoint hooks need it"
        );
    }
}
