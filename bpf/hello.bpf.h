/* SPDX-License-Identifier: MIT */
/*
 * statictls: steps 1 and 2 of statictls.bpf.c, the logic shared by every
 * send / receive hook (sendrecv.bpf.h): on_send parses the first record of
 * a watched process's connection as a ClientHello, matches its server name
 * and emits SNI_SENT; on_recv_enter / on_recv_exit look for the ServerHello
 * on that socket and then mark the receiving thread (thread_conn) for the
 * key contexts it creates next (aead.bpf.h, ring.bpf.h). A server's side:
 * a ClientHello a watched process reads (hello_rx.bpf.h) is matched the
 * same way (SNI_RECEIVED) and marks the reading thread at once.
 * The parsing itself is hello_parse.bpf.h. Needs statictls.bpf.c's shared
 * part, proc.bpf.h (watched_pids) and gotls.bpf.h (go_hello) before it.
 */

#include "hello_parse.bpf.h"
#include "hello_rx.bpf.h"

/* erlang.bpf.h: an Erlang process's TLS socket, named by its ClientHello. */
static __always_inline void erl_conn_named(__u32 pid, __u64 sock, __u64 conn, bool wanted);

/* A socket of a process: its fd (tracepoint path) or its struct sock
 * (fentry/fexit path; one path serves a running agent). */
struct sock_key {
	__u32 pid;
	__u32 _pad;
	__u64 sock;
};

/* ClientHello with a matching name sent: waiting for the ServerHello. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sock_key);
	__type(value, struct conn_info);
} hello_sent SEC(".maps");

/* A read in flight on a socket waiting for its ServerHello, by thread. */
struct recv_args {
	__u64 buf;
	__u64 sock;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct recv_args);
} pending_recv SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hello_buf);
} hello_scratch SEC(".maps");

/* ---- ClientHello (send path) ---------------------------------------------- */

/*
 * `len` bytes at user address `buf` are being sent on `sock`: if it is a
 * ClientHello whose server name passes the filter, the socket waits for its
 * ServerHello (hello_sent; a Go connection needs none, see go_hello) and
 * SNI_SENT is emitted.
 */
static __always_inline int on_hello(struct hello_buf *h, __u64 n, __u64 id, __u64 sock,
				    bool received);

static __always_inline int on_send(__u64 sock, __u64 buf, __u64 len)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct hello_buf *h;
	__u8 hdr[6];
	__u64 n;

	if (!bpf_map_lookup_elem(&watched_pids, &pid))
		return 0;
	if (len < 48 || bpf_probe_read_user(hdr, sizeof(hdr), (void *)buf) != 0)
		return 0;
	if (!hello_header(hdr, HS_CLIENT_HELLO))
		return 0;
	h = hello_read_sent(&hello_scratch, buf, len, &n);
	if (!h)
		return 0;
	return on_hello(h, n, id, sock, false);
}

/*
 * The socket of connection `conn`, whose ClientHello passed the name
 * filter: `sock` is a descriptor (the tracepoint path; below 2^32) or a
 * struct sock * (the fentry path; kernel addresses lie above). Emits its
 * SOCK_INFO record unless --port / --peer keep it out; returns whether they
 * let it through (without them, always). The record is reserved, filled
 * and given back in this one function: 6.1's verifier loses a ring-buffer
 * record's non-NULL state across the branches that follow.
 */
static __always_inline bool hello_sock(__u64 sock, __u64 conn, __u64 id)
{
	struct sock_event *e = sock_event_new(conn, id);
	bool known = false, ok;

	if (!e)
		return !filter_ports && !filter_peers;
	if (sock < (1ULL << 32)) {
		known = sock_fill_fd(e, (__s64)sock);
	} else if (sock) {
		sock_fill(e, (struct sock *)sock);
		e->fd = fd_of_sock((struct sock *)sock);
		known = true;
	}
	if (!known) {
		bpf_ringbuf_discard(e, 0);
		return !filter_ports && !filter_peers;
	}
	ok = sock_wanted(e);
	if (ok)
		bpf_ringbuf_submit(e, submit_flags());
	else
		bpf_ringbuf_discard(e, 0);
	return ok;
}

/*
 * The first `n` bytes of a ClientHello record are in `h`, sent on `sock`
 * (a client) or `received` (a server, on thread `id`). A connection whose
 * name passes the filter gets an id and its SNI record; a client's then
 * waits for its ServerHello (hello_sent), a server's thread is marked for
 * the key contexts it creates next (thread_conn); a Go connection is its
 * *Conn (go_hello). A thread whose ClientHello does not pass forgets any
 * connection it was marked with.
 */
static __always_inline int on_hello(struct hello_buf *h, __u64 n, __u64 id, __u64 sock,
				    bool received)
{
	__u32 pid = id >> 32, rule = 0;
	struct sock_key sk = { .pid = pid, .sock = sock };
	struct walk_ctx w = {};
	struct sni_scratch *s;
	struct conn_info ci;
	__u64 nl, no;
	bool ends_ok, is_go;

	if (!hello_find_name(h, n, &w))
		return 0;
	s = sni_scratch_get();
	if (!s)
		return 0;
	nl = w.name_len;
	if (nl == 0 || nl >= MAX_NAME) {
		/* no server name in the ClientHello */
		if (sni_filter && !capture_no_sni)
			goto skip;
		s->raw[0] = 0;
		nl = 0;
	} else {
		no = w.name_off & (HELLO_MAX - 1);
		NAME_INDEX(nl); /* a bound the compiler keeps (6.1 loses it in a spill) */
		if (bpf_probe_read_kernel(s->raw, nl, &h->b[no]) != 0)
			return 0;
		sni_match(s, nl, &rule);
		if (sni_filter && rule == 0) {
			/* A Go connection remembers its non-match, or it would be
			 * taken for one without a server name. */
			if (capture_no_sni)
				go_hello(pid, &ci, 0, 0);
			goto skip;
		}
	}
	/* Its socket, before anything names the connection: the SNI record
	 * and every data record come after it. */
	ci.conn = bpf_ktime_get_ns();
	is_go = go_conn_of(pid, &ci);
	ends_ok = hello_sock(sock, ci.conn, id);
	if (is_go)
		go_decide(pid, ci.conn, 1, ends_ok);
	if (!ends_ok)
		goto skip;
	erl_conn_named(pid, sock, ci.conn, true);
	if (!is_go) {
		if (received)
			bpf_map_update_elem(&thread_conn, &id, &ci, BPF_ANY);
		else
			bpf_map_update_elem(&hello_sent, &sk, &ci, BPF_ANY);
	}
	emit_sni(received ? SNI_RECEIVED : SNI_SENT, ci.conn, rule, s, nl != 0, id);
	return 0;
skip:
	/* its key contexts are not those of an earlier connection */
	bpf_map_delete_elem(&thread_conn, &id);
	erl_conn_named(pid, sock, 0, false);
	return 0;
}

/* ---- ServerHello (receive path) ------------------------------------------- */

/* Reads of watched processes that may bring a ClientHello (a server), by
 * thread; a header read alone is kept for the body (hello_rx.bpf.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct hello_rx);
} server_rx SEC(".maps");

static __always_inline int on_recv_enter(__u64 sock, __u64 buf)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct sock_key sk = { .pid = pid, .sock = sock };
	struct recv_args a = { .buf = buf, .sock = sock };
	/* conn: the socket the read is on, for the ClientHello's SOCK_INFO */
	struct hello_rx fresh = { .buf = buf, .conn = sock, .armed = 1 }, *rx;

	if (bpf_map_lookup_elem(&hello_sent, &sk)) {
		bpf_map_update_elem(&pending_recv, &id, &a, BPF_ANY);
		return 0;
	}
	if (!bpf_map_lookup_elem(&watched_pids, &pid))
		return 0;
	rx = bpf_map_lookup_elem(&server_rx, &id);
	if (rx) {
		rx->buf = buf;
		rx->conn = sock;
	}
	else
		bpf_map_update_elem(&server_rx, &id, &fresh, BPF_ANY);
	return 0;
}

/* A read of a watched process returned: a server's ClientHello? */
static __always_inline int on_server_recv_exit(__u64 id, long ret)
{
	struct hello_rx *rx = bpf_map_lookup_elem(&server_rx, &id);
	struct hello_buf *h;
	__u64 conn = 0;
	__u32 n = 0;

	h = hello_rx_read(rx, &hello_scratch, ret, &n, &conn);
	if (rx && !rx->armed)
		bpf_map_delete_elem(&server_rx, &id);
	if (h)
		on_hello(h, n, id, conn, true);
	return 0;
}

static __always_inline int on_recv_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct recv_args *a = bpf_map_lookup_elem(&pending_recv, &id);
	struct sock_key sk = {};
	struct conn_info *ci, c;
	__u8 hdr[6];

	if (!a)
		return on_server_recv_exit(id, ret);
	sk.pid = id >> 32;
	sk.sock = a->sock;
	if (ret < 6 || bpf_probe_read_user(hdr, sizeof(hdr), (void *)a->buf) != 0) {
		bpf_map_delete_elem(&pending_recv, &id);
		return 0;
	}
	bpf_map_delete_elem(&pending_recv, &id);
	if (!hello_header(hdr, HS_SERVER_HELLO))
		return 0;
	ci = bpf_map_lookup_elem(&hello_sent, &sk);
	if (!ci)
		return 0;
	c = *ci;
	bpf_map_delete_elem(&hello_sent, &sk);
	/* The TLS connection is established: this thread's next key contexts are it. */
	bpf_map_update_elem(&thread_conn, &id, &c, BPF_ANY);
	return 0;
}
