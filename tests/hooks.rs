//! Which path serves the spec's kernel hooks (fexit where the kernel allows
//! BPF trampolines, tracepoints elsewhere), as the agent reports it.
//! `PLAINSIGHT_EXPECT_HOOKS` (fexit | tracepoint), set by `make
//! test-kernels`, says what this kernel must give.

mod common;

use common::*;

/// The hook summary, after checking that the attached mmap programs are
/// the ones it names.
fn reported(args: &[&str]) -> String {
    let mut agent = Agent::start(args);
    let log = agent.stop();
    let line = |prefix: &str| {
        log.lines()
            .find_map(|l| l.split_once(prefix).map(|(_, r)| r.to_string()))
            .unwrap_or_else(|| panic!("no '{prefix}' in the log:\n{log}"))
    };
    let summary = line("kernel hooks: ");
    let attached = line("kernel programs attached: ");
    if summary.starts_with("mmap via fexit") {
        assert!(
            attached.contains("discover_mmap_fexit (fexit vm_mmap_pgoff)"),
            "{attached}"
        );
        assert!(!attached.contains("sys_enter_mmap"), "{attached}");
    } else {
        assert!(
            attached.contains("discover_mmap_enter (tracepoint syscalls/sys_enter_mmap)"),
            "{attached}"
        );
        assert!(!attached.contains("fexit"), "{attached}");
    }
    summary
}

#[test]
fn the_hook_paths_are_reported_and_as_expected() {
    let got = reported(&["--comm", "nothing-here"]);
    let forced = std::env::var_os("PLAINSIGHT_TRACEPOINTS").is_some();
    let expect = std::env::var("PLAINSIGHT_EXPECT_HOOKS").ok();
    match (forced, expect.as_deref()) {
        (true, _) | (false, Some("tracepoint")) => {
            assert_eq!(
                got,
                "mmap via tracepoint, tcp_sendmsg via tracepoint, tcp_recvmsg via tracepoint"
            )
        }
        (false, Some("fexit")) => assert_eq!(
            got,
            "mmap via fexit, tcp_sendmsg via fexit, tcp_recvmsg via fexit"
        ),
        (false, _) => {
            // A kernel of unknown kind: each hook on one of the two paths.
            for h in got.split(", ") {
                assert!(
                    h.ends_with(" via fexit") || h.ends_with(" via tracepoint"),
                    "{got}"
                );
            }
        }
    }
}

#[test]
fn tracepoints_can_be_forced() {
    let got = reported(&["--comm", "nothing-here", "--tracepoints"]);
    assert_eq!(
        got,
        "mmap via tracepoint, tcp_sendmsg via tracepoint, tcp_recvmsg via tracepoint"
    );
}
