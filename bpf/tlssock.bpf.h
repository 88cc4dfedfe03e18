/* SPDX-License-Identifier: MIT */
/*
 * openssl.bpf.c: the socket of an OpenSSL-family, GnuTLS, NSS or SSL BIO
 * connection. Such a library writes and reads its records with the
 * process's own descriptor, on the thread that called it, inside the call:
 * the descriptor of the first socket syscall (write, sendto, sendmsg,
 * writev, read, recvfrom, recvmsg, readv) a thread makes while a wanted
 * TLS call is in flight on it is that connection's, exactly, whatever other
 * connections the thread uses in between (each call names its SSL *).
 * Learned once per connection (conn_socks), reported as SOCK_INFO. A
 * program that gives its connection a descriptor itself (SSL_set_fd,
 * gnutls_transport_set_int2) names it at once: known before the first
 * call, or, with server-name patterns, as soon as the name matched (before
 * the SNI record).
 *
 * The syscall hook runs on every syscall of the host: it returns on one
 * global read while no thread waits for a socket (sock_waiting). Needs
 * openssl.bpf.c's call slot, conn_key and conn_verdict, and sock.bpf.h,
 * before it.
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

/* Descriptors programs gave connections not decided yet (SSL_set_fd before
 * the server name), until the name decides: (pid, SSL *) -> descriptor.
 * Deleted when used and at SSL_free. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, __s32);
} conn_fds SEC(".maps");

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
	return sock_verdict(&conn_socks, k);
}

/* SOCK_INFO `e`, filled, of connection `k`: submitted if --port and --peer
 * let it through, and their verdict kept for the connection's data. */
static __always_inline void sock_decide(const struct conn_key *k, struct sock_event *e)
{
	__u8 wanted = sock_wanted(e);

	if (wanted)
		bpf_ringbuf_submit(e, submit_flags());
	else
		bpf_ringbuf_discard(e, 0);
	if (bpf_map_update_elem(&conn_socks, k, &wanted, BPF_ANY) != 0)
		count_stat(STAT_SOCK_FULL);
}

/* Connection `k` (wanted) goes over descriptor `fd` of this process:
 * SOCK_INFO if the endpoint filters let it through, and it is known from
 * now on. False when `fd` is no socket or pipe, or a TCP socket not
 * connected yet (a descriptor given before connect()). */
static __always_inline bool sock_learn(const struct conn_key *k, __s64 fd, __u64 id)
{
	struct sock_event *e = sock_event_new(k->ssl, id);

	if (!e)
		return false;
	if (!sock_fill_fd(e, fd) || (e->transport == TRANSPORT_TCP && e->peer_port == 0)) {
		bpf_ringbuf_discard(e, 0);
		return false;
	}
	sock_decide(k, e);
	return true;
}

/* A syscall on descriptor `fd` starts on this thread. */
static __always_inline int sock_syscall(__s64 fd)
{
	struct call_args *a;
	struct conn_key k = {};
	__u64 id;

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
	if (sock_learn(&k, fd, id))
		sock_unwatch(a);
	return 0;
}

/* The program gave connection `ssl` descriptor `fd`: learned now if the
 * connection is wanted, else kept until its name decides. */
static __always_inline int sock_given(__u64 ssl, __s64 fd)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = ssl };
	__s32 f = fd;
	int verdict;

	if (!ssl || fd < 0 || !process_wanted(k.pid))
		return 0;
	verdict = conn_verdict(&k);
	if (verdict == VERDICT_YES && sock_learn(&k, fd, id))
		return 0;
	if (verdict != VERDICT_NO)
		bpf_map_update_elem(&conn_fds, &k, &f, BPF_ANY);
	return 0;
}

/* Connection `k` was just found wanted by its server name: its socket, if
 * the program gave it a descriptor before. */
static __always_inline void sock_named(const struct conn_key *k, __u64 id)
{
	__s32 *f = bpf_map_lookup_elem(&conn_fds, k);
	__s64 fd;

	if (!f)
		return;
	fd = *f;
	bpf_map_delete_elem(&conn_fds, k);
	sock_learn(k, fd, id);
}

/* SSL_set_fd(ssl, fd) (and SSL_set_wfd: the descriptor records go out on) */
SEC("uprobe.multi")
int BPF_UPROBE(ssl_set_fd_entry, void *ssl, int fd)
{
	return sock_given((__u64)ssl, fd);
}

/* gnutls_transport_set_int2(session, recv_fd, send_fd) (gnutls_transport_set_int
 * is a macro for it) */
SEC("uprobe.multi")
int BPF_UPROBE(gnutls_set_int_entry, void *session, int recv_fd, int send_fd)
{
	return sock_given((__u64)session, send_fd);
}

/* x86-64 numbers of the syscalls a TLS library moves its records with. */
enum {
	NR_READ = 0,
	NR_WRITE = 1,
	NR_READV = 19,
	NR_WRITEV = 20,
	NR_SENDTO = 44,
	NR_RECVFROM = 45,
	NR_SENDMSG = 46,
	NR_RECVMSG = 47,
};

/* Every syscall's entry, as a raw tracepoint: no record is built for it
 * (a syscalls/sys_enter_* tracepoint fills one per call before its program
 * runs), so the host pays one global read per syscall while no thread
 * waits for a socket. Attached once a C-API library has a wanted
 * connection (src/kernel.rs, enable_tls_socket). */
SEC("raw_tp/sys_enter")
int tls_sock_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs;

	if (!sock_waiting)
		return 0;
	switch (ctx->args[1]) {
	case NR_READ:
	case NR_WRITE:
	case NR_READV:
	case NR_WRITEV:
	case NR_SENDTO:
	case NR_RECVFROM:
	case NR_SENDMSG:
	case NR_RECVMSG:
		break;
	default:
		return 0;
	}
	regs = (struct pt_regs *)ctx->args[0];
	return sock_syscall(BPF_CORE_READ(regs, di));
}
