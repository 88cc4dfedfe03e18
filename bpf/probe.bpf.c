// SPDX-License-Identifier: MIT
/*
 * probe: one empty program per spec hook served by a BPF trampoline. The
 * agent loads each alone at start; whether it loads decides that hook's
 * path (src/hooks.rs).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("fexit/vm_mmap_pgoff")
int probe_mmap(__u64 *ctx)
{
	return 0;
}

SEC("fexit/tcp_sendmsg")
int probe_tcp_sendmsg(__u64 *ctx)
{
	return 0;
}

SEC("fexit/tcp_recvmsg")
int probe_tcp_recvmsg(__u64 *ctx)
{
	return 0;
}
