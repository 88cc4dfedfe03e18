/* SPDX-License-Identifier: MIT */
/*
 * openssl.bpf.c, servers: the server name their clients sent. A server
 * library is not told a name; it learns it from the ClientHello. Two
 * sources: the server asks (SSL_get_servername's answer), or the thread
 * running its handshake (SSL_accept, SSL_do_handshake, gnutls_handshake, an
 * SSL BIO's first calls) reads the ClientHello with read/recvfrom. A client
 * whose library was never told a name through a probed call (a trimmed
 * OpenSSL without SSL_ctrl: its caller's name-setting code inlined) is
 * named by the ClientHello that thread sends with write/sendto instead.
 * Needs openssl.bpf.c's names (is_named, decide_name) before it.
 */

#include "hello_parse.bpf.h"
#include "hello_rx.bpf.h"

/* SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) in flight, by thread:
 * its SSL *. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} servername_calls SEC(".maps");

/* A server (nginx, node) asks OpenSSL for the name its client sent, in its
 * server-name callback or later: SSL_get_servername(ssl, type) */
SEC("uprobe.multi")
int BPF_UPROBE(ssl_get_servername_entry, void *ssl, int type)
{
	__u64 id = bpf_get_current_pid_tgid(), conn = (__u64)ssl;

	if (type != TLSEXT_NAMETYPE_host_name || !ssl || !process_wanted(id >> 32) ||
	    is_named(conn, id))
		return 0;
	bpf_map_update_elem(&servername_calls, &id, &conn, BPF_ANY);
	return 0;
}

SEC("uretprobe.multi")
int ssl_get_servername_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *p = bpf_map_lookup_elem(&servername_calls, &id);
	const void *name = (const void *)PT_REGS_RC(ctx);
	struct sni_scratch *s;
	__u64 ssl;
	long n;

	if (!p)
		return 0;
	ssl = *p;
	bpf_map_delete_elem(&servername_calls, &id);
	if (!name || is_named(ssl, id))
		return 0;
	s = sni_scratch_get();
	if (!s)
		return 0;
	n = bpf_probe_read_user_str(s->raw, sizeof(s->raw), name);
	if (n <= 1)
		return 0;
	return decide_name(ssl, s, n - 1, SNI_RECEIVED, id, bpf_get_attach_cookie(ctx));
}

/* Threads shaking hands for a connection whose name is not known yet, until
 * they read a ClientHello (a server) or something else (a client: the
 * ServerHello). Task-local storage: the read tracepoints, which run on every
 * read of the host, return at once for threads that never shook hands. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct hello_rx);
} accepting SEC(".maps");

/* Threads of the host waiting for a ClientHello (armed), so that the read
 * tracepoints, which run on every read of the host, return without a lookup
 * while none is. A thread that exits waiting is never taken off: the count
 * can only be too high, which costs the lookup, never a ClientHello. */
__u64 accept_waiting = 0;

static __always_inline struct hello_rx *accept_slot(__u64 flags)
{
	return bpf_task_storage_get(&accepting, bpf_get_current_task_btf(), 0, flags);
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hello_buf);
} hello_scratch SEC(".maps");

/* Thread `id` may read the ClientHello of `conn` next, unless its name is
 * known. A thread that comes again for the same connection keeps what it
 * read (a record header alone). */
static __always_inline void arm_accept(__u64 conn, __u64 id)
{
	struct hello_rx *rx;

	if (!conn || !process_wanted(id >> 32) || is_named(conn, id))
		return;
	rx = accept_slot(BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!rx || (rx->armed && rx->conn == conn))
		return;
	if (!rx->armed)
		__sync_fetch_and_add(&accept_waiting, 1);
	rx->buf = 0;
	rx->conn = conn;
	rx->have_hdr = 0;
	rx->armed = 1;
}

/* A handshake of `ssl` starts on this thread. */
static __always_inline int on_handshake(void *ctx, void *ssl)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = (__u64)ssl };

	arm_accept((__u64)ssl, id);
	/* A connection captured without a name (--capture-no-sni) asks for
	 * the return probes here, before its first call. */
	if (returns_per_process && process_wanted(id >> 32) && conn_verdict(&k) == VERDICT_YES)
		want_returns(id, bpf_get_attach_cookie(ctx), process_born());
	return 0;
}

/* SSL_do_handshake(ssl) / SSL_accept(ssl) / gnutls_handshake(session) */
SEC("uprobe.multi")
int BPF_UPROBE(tls_handshake_entry, void *ssl)
{
	return on_handshake(ctx, ssl);
}

/* The buffer of the read or recvfrom returning on this thread: its second
 * argument, in the registers saved at syscall entry. */
static __always_inline __u64 syscall_buf(void)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	return BPF_CORE_READ(regs, si);
}

/* The server name of the ClientHello in `h` (`n` bytes) names connection
 * `ssl` (`type`: who sent it), unless it has none or a name already. */
static __always_inline int name_from_hello(struct hello_buf *h, __u32 n, __u64 ssl, __u32 type,
					   __u64 id)
{
	struct walk_ctx w = {};
	struct sni_scratch *s;
	__u64 nl, no;

	if (!hello_find_name(h, n, &w) || is_named(ssl, id))
		return 0;
	nl = w.name_len;
	if (nl == 0 || nl >= MAX_NAME)
		return 0; /* no name: the connection stays undecided */
	s = sni_scratch_get();
	if (!s)
		return 0;
	no = w.name_off & (HELLO_MAX - 1);
	NAME_INDEX(nl); /* a bound the compiler keeps (6.1 loses it in a spill) */
	if (bpf_probe_read_kernel(s->raw, nl, &h->b[no]) != 0)
		return 0;
	return decide_name(ssl, s, nl, type, id, 0);
}

/* A read returned `ret`: taken on threads waiting for a ClientHello only. */
static __always_inline int accept_read_exit(long ret)
{
	__u64 id;
	struct hello_buf *h;
	struct hello_rx *rx;
	__u64 ssl = 0;
	__u32 n = 0;

	if (!accept_waiting)
		return 0;
	rx = accept_slot(0);
	if (!rx || !rx->armed)
		return 0;
	id = bpf_get_current_pid_tgid();
	rx->buf = syscall_buf();
	h = hello_rx_read(rx, &hello_scratch, ret, &n, &ssl);
	if (!rx->armed)
		__sync_fetch_and_add(&accept_waiting, -1);
	if (!h)
		return 0;
	return name_from_hello(h, n, ssl, SNI_RECEIVED, id);
}

/* read and recvfrom of a thread waiting for a ClientHello, at their exit
 * only (the tracepoints run on every read of the host). */
SEC("tracepoint/syscalls/sys_exit_read")
int accept_read_ret(struct trace_event_raw_sys_exit *ctx)
{
	return accept_read_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int accept_recvfrom_ret(struct trace_event_raw_sys_exit *ctx)
{
	return accept_read_exit(ctx->ret);
}

/* A write or sendto entering on a thread waiting for a ClientHello: a
 * client's own ClientHello names its connection (SNI_SENT). Anything else
 * leaves the thread waiting (a server's reads decide for it). */
static __always_inline int accept_send(__u64 buf, __u64 count)
{
	struct hello_buf *h;
	struct hello_rx *rx;
	__u8 hdr[6];
	__u64 id, ssl, len;

	if (!accept_waiting)
		return 0;
	rx = accept_slot(0);
	if (!rx || !rx->armed || count < sizeof(hdr))
		return 0;
	if (bpf_probe_read_user(hdr, sizeof(hdr), (void *)buf) != 0 ||
	    !hello_header(hdr, HS_CLIENT_HELLO))
		return 0;
	/* This thread sends a ClientHello: it is a client, done waiting. */
	ssl = rx->conn;
	rx->armed = 0;
	__sync_fetch_and_add(&accept_waiting, -1);
	id = bpf_get_current_pid_tgid();
	if (is_named(ssl, id))
		return 0;
	h = hello_read_sent(&hello_scratch, buf, count, &len);
	if (!h)
		return 0;
	return name_from_hello(h, len, ssl, SNI_SENT, id);
}

SEC("tracepoint/syscalls/sys_enter_write")
int accept_write(struct trace_event_raw_sys_enter *ctx)
{
	return accept_send(ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int accept_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return accept_send(ctx->args[1], ctx->args[2]);
}
