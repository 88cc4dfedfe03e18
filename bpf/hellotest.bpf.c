// SPDX-License-Identifier: MIT
/*
 * hellotest: the ClientHello / ServerHello parsing of statictls
 * (hello_parse.bpf.h) as a BPF_PROG_TYPE_SYSCALL program, which
 * BPF_PROG_TEST_RUN runs on a context the caller gives and copies back: the
 * fuzz harness `hello` (src/fuzzing.rs) and its tests. Never attached.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "hello_parse.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Never used: makes the skeleton generator emit `struct hello_test` for the
 * Rust side (it emits the types global variables reach). */
struct hello_test abi_hello_test;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hello_buf);
} hello_scratch SEC(".maps");

SEC("syscall")
int hello_test(struct hello_test *t)
{
	struct walk_ctx w = {};
	struct hello_buf *h;
	__u32 zero = 0, n = t->len;

	h = bpf_map_lookup_elem(&hello_scratch, &zero);
	if (!h || n == 0 || n > HELLO_MAX)
		return 1;
	/* As on_send copies a send: its first n bytes. */
	n = ((n - 1) & (HELLO_MAX - 1)) + 1;
	if (bpf_probe_read_kernel(h->b, n, t->data) != 0)
		return 1;
	t->client_hello = hello_find_name(h, n, &w);
	t->name_off = w.name_off;
	t->name_len = w.name_len;
	t->server_hello = n >= 6 && hello_header(h->b, HS_SERVER_HELLO);
	return 0;
}
