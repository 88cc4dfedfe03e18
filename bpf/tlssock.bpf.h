/* SPDX-License-Identifier: MIT */
/*
 * openssl.bpf.c: the socket of an OpenSSL-family, GnuTLS, NSS or SSL BIO
 * connection. Such a library writes and reads its records with the
 * process's own descriptor, on the thread that called it, inside the call:
 * the descriptor of the first socket syscall (write, sendto, sendmsg,
 * writev, read, recvfrom, recvmsg, readv) a thread makes while a wanted
 * TLS call is in flight on it is that connection's, exactly, whatever other
 * connections the thread uses in between (each call names its SSL *).
 * Learned once per connection (conn_socks), reported as SOCK_INFO.
 *
 * The syscall tracepoints run on every such syscall of the host: they
 * return on one global read while no thread waits for a socket
 * (sock_waiting). Needs openssl.bpf.c's call slot, conn_key and
 * conn_verdict, and sock.bpf.h, before it.
 */

/* Connections whose socket is known: (pid, SSL *) -> whether --port and
 * --peer let it through. Deleted at SSL_free, swept for exited processes
 * by user space; a full map is counted (STAT_SOCK_FULL) and the socket is
 * learned again at the connection's next call. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, __u8);
} conn_socks SEC(".maps");

/* Threads of the host with a TLS call in flight whose connection's socket
 * is not known. A thread that exits waiting is never taken off: the count
 * can only be too high, which costs a lookup, never a socket. */
__u64 sock_waiting = 0;

/* The call in `a` (connection a->ssl) starts: it waits for its socket
 * unless that is known. */
static __always_inline void sock_watch(struct call_args *a, const struct conn_key *k)
{
	bool known = bpf_map_lookup_elem(&conn_socks, k) != NULL;

	if (known && a->want_sock) {
		a->want_sock = 0;
		__sync_fetch_and_add(&sock_waiting, -1);
	} else if (!known && !a->want_sock) {
		a->want_sock = 1;
		__sync_fetch_and_add(&sock_waiting, 1);
	}
}

/* The call in `a` returned: it waits no more. */
static __always_inline void sock_unwatch(struct call_args *a)
{
	if (a->want_sock) {
		a->want_sock = 0;
		__sync_fetch_and_add(&sock_waiting, -1);
	}
}

/* Whether the endpoint filters let connection `k`'s data through: its
 * socket must be known, and wanted. */
static __always_inline bool sock_passes(const struct conn_key *k)
{
	__u8 *w;

	if (!filter_ports && !filter_peers)
		return true;
	w = bpf_map_lookup_elem(&conn_socks, k);
	return w && *w;
}

/* A syscall on descriptor `fd` starts on this thread. */
static __always_inline int sock_syscall(__s64 fd)
{
	__u64 id;
	struct call_args *a;
	struct sock_event *e;
	struct conn_key k = {};
	__u8 wanted;

	if (!sock_waiting)
		return 0;
	a = call_slot(0);
	if (!a || !a->active || !a->want_sock)
		return 0;
	id = bpf_get_current_pid_tgid();
	k.pid = id >> 32;
	k.ssl = a->ssl;
	/* A connection not decided yet (a server reading its ClientHello)
	 * is looked at again by its next syscall. */
	if (conn_verdict(&k) != VERDICT_YES)
		return 0;
	e = sock_event_new(a->ssl, id);
	if (!e)
		return 0;
	if (!sock_fill_fd(e, fd)) {
		bpf_ringbuf_discard(e, 0);
		return 0;
	}
	wanted = sock_wanted(e);
	if (wanted)
		bpf_ringbuf_submit(e, submit_flags());
	else
		bpf_ringbuf_discard(e, 0);
	if (bpf_map_update_elem(&conn_socks, &k, &wanted, BPF_ANY) != 0)
		count_stat(STAT_SOCK_FULL);
	sock_unwatch(a);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int tls_sock_write(struct trace_event_raw_sys_enter *ctx)
{
	return sock_syscall(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int tls_sock_writev(struct trace_event_raw_sys_enter *ctx)
{
	return sock_syscall(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int tls_sock_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return sock_syscall(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int tls_sock_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return sock_syscall(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_read")
int tls_sock_read(struct trace_event_raw_sys_enter *ctx)
{
	return sock_syscall(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_readv")
int tls_sock_readv(struct trace_event_raw_sys_enter *ctx)
{
	return sock_syscall(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int tls_sock_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	return sock_syscall(ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int tls_sock_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return sock_syscall(ctx->args[0]);
}
