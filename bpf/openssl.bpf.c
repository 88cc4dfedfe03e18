// SPDX-License-Identifier: MIT
/*
 * openssl: plaintext of TLS libraries with a stable C API: the
 * OpenSSL family (OpenSSL 1.1/3, BoringSSL, AWS-LC, node's bundled OpenSSL,
 * static libssl) and GnuTLS (gnutls_record_send2/recv, same shape).
 *
 *   SSL_write(ssl, buf, num)            -> int  bytes written, <= 0 on failure
 *   SSL_read(ssl, buf, num)             -> int  bytes read, <= 0 on failure
 *   SSL_write_ex(ssl, buf, num, *written)   -> 1 on success, *written bytes
 *   SSL_read_ex(ssl, buf, num, *readbytes)  -> 1 on success, *readbytes bytes
 *   SSL_free(ssl)                        end of the connection
 *
 * NSS (its SSL layer on an NSPR descriptor) is served here too: see the
 * NSS section.
 *
 * Arguments are saved at entry by thread; at return, only calls that
 * succeeded are copied, with the length the call reports, in DATA_CHUNK
 * pieces (bpf_loop), up to max_capture bytes per call.
 */
#include "vmlinux.h"
/* This object carries the ABI's types for the Rust skeleton (events.h). */
#define PLAINSIGHT_ABI_TYPES
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "events.h"
#include "filter.h"
#include "sni.h"
#include "emit.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct call_args {
	__u64 ssl;
	__u64 buf;
	__u64 len_ptr; /* *written / *readbytes of the _ex calls, else 0 */
	__u64 recheck; /* undecided at entry: decide at return */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct call_args);
} active_calls SEC(".maps");

/* Connections whose server name was decided: (pid, SSL *) -> matched.
 * Only matches are stored, and non-matches too when capture_no_sni is on (to
 * tell "set, not matching" from "never set"). Deleted at SSL_free and swept
 * by user space for exited processes; a hash, not LRU (sni.h, sni_decide). */
struct conn_key {
	__u32 pid;
	__u32 _pad;
	__u64 ssl;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, __u8);
} conns SEC(".maps");

/* Connections whose server name is known (an SNI record was emitted for a
 * match): a server may learn its client's name twice (SSL_get_servername,
 * the ClientHello), and reports it once. Deleted at SSL_free. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, __u8);
} named SEC(".maps");

/* Whether the name of connection `ssl` of this process is known already. */
static __always_inline bool is_named(__u64 ssl, __u64 id)
{
	struct conn_key k = { .pid = id >> 32, .ssl = ssl };

	return bpf_map_lookup_elem(&named, &k) != NULL;
}

static __always_inline int on_entry(__u64 ssl, __u64 buf, __u64 len_ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct call_args args = { .ssl = ssl, .buf = buf, .len_ptr = len_ptr };
	struct conn_key k = { .pid = id >> 32, .ssl = ssl };

	if (!process_wanted(id >> 32))
		return 0;
	if (!sni_conn_wanted(&conns, &k)) {
		/* A server's first read may run the handshake that names the
		 * connection (SSL BIO, SSL_read before SSL_do_handshake): the
		 * name is known by its return. */
		if (is_named(ssl, id))
			return 0;
		args.recheck = 1;
	}
	bpf_map_update_elem(&active_calls, &id, &args, BPF_ANY);
	return 0;
}

/* A call undecided at entry is captured if its connection is wanted now. */
static __always_inline bool still_wanted(struct call_args *a, __u64 id)
{
	struct conn_key k = { .pid = id >> 32, .ssl = a->ssl };

	return !a->recheck || sni_conn_wanted(&conns, &k);
}

/* Return of SSL_write / SSL_read (int) or gnutls_record_* (ssize_t, `wide`):
 * bytes, <= 0 on failure. */
static __always_inline int on_return_n(struct pt_regs *ctx, __u32 type, bool wide)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct call_args *args = bpf_map_lookup_elem(&active_calls, &id);
	struct call_args a;
	long ret = wide ? (long)PT_REGS_RC(ctx) : (long)(int)PT_REGS_RC(ctx);

	if (!args)
		return 0;
	a = *args;
	bpf_map_delete_elem(&active_calls, &id);
	if (ret <= 0 || !still_wanted(&a, id))
		return 0;
	emit_data(type, a.buf, a.ssl, (__u64)ret, id);
	return 0;
}

static __always_inline int on_return(struct pt_regs *ctx, __u32 type)
{
	return on_return_n(ctx, type, false);
}

/* Return of SSL_write_ex / SSL_read_ex: 1 on success, length in *len_ptr. */
static __always_inline int on_return_ex(struct pt_regs *ctx, __u32 type)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct call_args *args = bpf_map_lookup_elem(&active_calls, &id);
	struct call_args a;
	int ret = (int)PT_REGS_RC(ctx);
	__u64 len = 0;

	if (!args)
		return 0;
	a = *args;
	bpf_map_delete_elem(&active_calls, &id);
	if (ret != 1 || !a.len_ptr || !still_wanted(&a, id))
		return 0;
	if (bpf_probe_read_user(&len, sizeof(len), (void *)a.len_ptr) != 0) {
		count_stat(STAT_READ_FAILED);
		return 0;
	}
	emit_data(type, a.buf, a.ssl, len, id);
	return 0;
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_write_entry, void *ssl, const void *buf, int num)
{
	return on_entry((__u64)ssl, (__u64)buf, 0);
}

SEC("uretprobe.multi")
int ssl_write_return(struct pt_regs *ctx)
{
	return on_return(ctx, SSL_EVENT_TYPE_WRITE);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_read_entry, void *ssl, void *buf, int num)
{
	return on_entry((__u64)ssl, (__u64)buf, 0);
}

SEC("uretprobe.multi")
int ssl_read_return(struct pt_regs *ctx)
{
	return on_return(ctx, SSL_EVENT_TYPE_READ);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_write_ex_entry, void *ssl, const void *buf, __u64 num, __u64 *written)
{
	return on_entry((__u64)ssl, (__u64)buf, (__u64)written);
}

SEC("uretprobe.multi")
int ssl_write_ex_return(struct pt_regs *ctx)
{
	return on_return_ex(ctx, SSL_EVENT_TYPE_WRITE);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_read_ex_entry, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return on_entry((__u64)ssl, (__u64)buf, (__u64)readbytes);
}

SEC("uretprobe.multi")
int ssl_read_ex_return(struct pt_regs *ctx)
{
	return on_return_ex(ctx, SSL_EVENT_TYPE_READ);
}

/* ---- OpenSSL's SSL BIO (BIO_f_ssl) ----------------------------------------
 * Its method table's functions (src/inspect/sslbio.rs finds them) call
 * libssl's internal read and write, not SSL_read/SSL_write: probed
 * themselves, with the _ex shape
 *   write(BIO *, const char *buf, size_t n, size_t *written)  -> 1 on success
 *   read(BIO *, char *buf, size_t n, size_t *readbytes)        -> 1 on success
 * The connection is the BIO's SSL *, seen when it is set:
 *   ctrl(BIO *, BIO_C_SET_SSL, close_flag, SSL *)
 * Should a library's BIO call the exported SSL_*_ex, that inner call
 * replaces the BIO's in active_calls (one entry per thread) and its return
 * reports the bytes once. */
#define BIO_C_SET_SSL 109

struct bio_key {
	__u32 pid;
	__u32 _pad;
	__u64 bio;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct bio_key);
	__type(value, __u64);
} bio_ssl SEC(".maps");

SEC("uprobe.multi")
int BPF_UPROBE(ssl_bio_ctrl_entry, void *bio, int cmd, long larg, void *ssl)
{
	__u64 id = bpf_get_current_pid_tgid(), conn = (__u64)ssl;
	struct bio_key k = { .pid = id >> 32, .bio = (__u64)bio };

	if (cmd != BIO_C_SET_SSL || !ssl || !process_wanted(id >> 32))
		return 0;
	bpf_map_update_elem(&bio_ssl, &k, &conn, BPF_ANY);
	return 0;
}

static __always_inline void arm_accept(__u64 conn, __u64 id);

/* An SSL BIO runs the handshake inside its first reads and writes (no
 * SSL_accept or SSL_do_handshake): a server's ClientHello is read there. */
static __always_inline int on_bio_entry(__u64 bio, __u64 buf, __u64 len_ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct bio_key k = { .pid = id >> 32, .bio = bio };
	__u64 *p = bpf_map_lookup_elem(&bio_ssl, &k), ssl;

	if (!p)
		return 0;
	ssl = *p;
	arm_accept(ssl, id);
	return on_entry(ssl, buf, len_ptr);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_bio_write_entry, void *bio, const void *buf, __u64 num, __u64 *written)
{
	return on_bio_entry((__u64)bio, (__u64)buf, (__u64)written);
}

SEC("uretprobe.multi")
int ssl_bio_write_return(struct pt_regs *ctx)
{
	return on_return_ex(ctx, SSL_EVENT_TYPE_WRITE);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_bio_read_entry, void *bio, void *buf, __u64 num, __u64 *readbytes)
{
	return on_bio_entry((__u64)bio, (__u64)buf, (__u64)readbytes);
}

SEC("uretprobe.multi")
int ssl_bio_read_return(struct pt_regs *ctx)
{
	return on_return_ex(ctx, SSL_EVENT_TYPE_READ);
}

/*
 * Connection `ssl` has the server name in s->raw (`n` bytes, 0 < n <
 * MAX_NAME): match it, remember the decision, and tell user space the name
 * of a connection that will be captured (`type`: SNI_CONFIGURED when the
 * process set it, SNI_RECEIVED when its client sent it).
 */
static __always_inline int decide_name(__u64 ssl, struct sni_scratch *s, __u64 n, __u32 type,
				       __u64 id)
{
	struct conn_key k = { .pid = id >> 32, .ssl = ssl };
	__u32 rule = 0;
	__u8 matched, one = 1;

	sni_match(s, n, &rule);
	matched = !sni_filter || rule != 0;
	if (sni_filter) {
		if (matched || capture_no_sni)
			sni_decide(&conns, &k, matched);
		else
			bpf_map_delete_elem(&conns, &k);
	}
	bpf_map_update_elem(&named, &k, &one, BPF_ANY);
	if (matched)
		emit_sni(type, ssl, rule, s, true, id);
	return 0;
}

/* A server name was set on `ssl`: `len` < 0: NUL-terminated name; else its
 * length (GnuTLS). */
static __always_inline int on_server_name(__u64 ssl, const void *name, long len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct sni_scratch *s;
	long n;

	if (!ssl || !name || !process_wanted(id >> 32))
		return 0;
	s = sni_scratch_get();
	if (!s)
		return 0;
	if (len < 0) {
		n = bpf_probe_read_user_str(s->raw, sizeof(s->raw), name);
		if (n <= 1)
			return 0;
		n -= 1;
	} else {
		n = len;
		if (n == 0 || n >= MAX_NAME)
			return 0;
		if (bpf_probe_read_user(s->raw, n & (MAX_NAME - 1), name) != 0)
			return 0;
	}
	return decide_name(ssl, s, n, SNI_CONFIGURED, id);
}

#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55
#define GNUTLS_NAME_DNS 1
#define TLSEXT_NAMETYPE_host_name 0

/* OpenSSL, AWS-LC, node: SSL_set_tlsext_host_name() is a macro for this. */
SEC("uprobe.multi")
int BPF_UPROBE(ssl_ctrl_entry, void *ssl, int cmd, long larg, void *parg)
{
	if (cmd != SSL_CTRL_SET_TLSEXT_HOSTNAME || larg != TLSEXT_NAMETYPE_host_name)
		return 0;
	return on_server_name((__u64)ssl, parg, -1);
}

/* BoringSSL: a real function. */
SEC("uprobe.multi")
int BPF_UPROBE(ssl_set_host_name_entry, void *ssl, const char *name)
{
	return on_server_name((__u64)ssl, name, -1);
}

/* GnuTLS: gnutls_server_name_set(session, type, name, name_length) */
SEC("uprobe.multi")
int BPF_UPROBE(gnutls_server_name_entry, void *session, int type, const void *name, __u64 len)
{
	if (type != GNUTLS_NAME_DNS)
		return 0;
	return on_server_name((__u64)session, name, len);
}

/* gnutls_record_send calls the exported gnutls_record_send2: probing only
 * send2 sees every write once. send2(session, data, size, pad, flags) */
SEC("uprobe.multi")
int BPF_UPROBE(gnutls_send_entry, void *session, const void *data, __u64 size)
{
	return on_entry((__u64)session, (__u64)data, 0);
}

SEC("uretprobe.multi")
int gnutls_send_return(struct pt_regs *ctx)
{
	return on_return_n(ctx, SSL_EVENT_TYPE_WRITE, true);
}

/* gnutls_record_recv(session, data, size) */
SEC("uprobe.multi")
int BPF_UPROBE(gnutls_recv_entry, void *session, void *data, __u64 size)
{
	return on_entry((__u64)session, (__u64)data, 0);
}

SEC("uretprobe.multi")
int gnutls_recv_return(struct pt_regs *ctx)
{
	return on_return_n(ctx, SSL_EVENT_TYPE_READ, true);
}

static __always_inline int on_free(void *ssl)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = (__u64)ssl };
	bool was_captured;

	if (!ssl || !process_wanted(id >> 32))
		return 0;
	was_captured = sni_conn_wanted(&conns, &k);
	if (sni_filter)
		bpf_map_delete_elem(&conns, &k);
	bpf_map_delete_elem(&named, &k);
	if (was_captured)
		emit_close((__u64)ssl, id);
	return 0;
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_free_entry, void *ssl)
{
	return on_free(ssl);
}

/* gnutls_deinit(session) */
SEC("uprobe.multi")
int BPF_UPROBE(gnutls_deinit_entry, void *session)
{
	return on_free(session);
}


/* ---- servers: the server name their clients sent -------------------------- */

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
	return decide_name(ssl, s, n - 1, SNI_RECEIVED, id);
}

/* Threads shaking hands for a connection whose name is not known yet, until
 * they read a ClientHello (a server) or something else (a client: the
 * ServerHello). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct hello_rx);
} accepting SEC(".maps");

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
	struct hello_rx fresh = { .conn = conn }, *rx;

	if (!conn || !process_wanted(id >> 32) || is_named(conn, id))
		return;
	rx = bpf_map_lookup_elem(&accepting, &id);
	if (rx && rx->conn == conn)
		return;
	bpf_map_update_elem(&accepting, &id, &fresh, BPF_ANY);
}

/* SSL_do_handshake(ssl) / SSL_accept(ssl) / gnutls_handshake(session) */
SEC("uprobe.multi")
int BPF_UPROBE(tls_handshake_entry, void *ssl)
{
	arm_accept((__u64)ssl, bpf_get_current_pid_tgid());
	return 0;
}

static __always_inline int accept_read_enter(__u64 buf)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct hello_rx *rx = bpf_map_lookup_elem(&accepting, &id);

	if (rx)
		rx->buf = buf;
	return 0;
}

static __always_inline int accept_read_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct hello_rx *rx = bpf_map_lookup_elem(&accepting, &id);
	struct walk_ctx w = {};
	struct sni_scratch *s;
	struct hello_buf *h;
	__u32 zero = 0, n = 0;
	__u64 ssl, nl, no;
	int r;

	if (!rx || !rx->buf)
		return 0;
	if (ret <= 0) {
		/* nothing yet (EAGAIN): the handshake reads again */
		rx->buf = 0;
		return 0;
	}
	h = bpf_map_lookup_elem(&hello_scratch, &zero);
	if (!h)
		return 0;
	r = hello_rx_exit(rx, ret, h, &n);
	rx->buf = 0;
	if (r == RX_MORE)
		return 0;
	ssl = rx->conn;
	bpf_map_delete_elem(&accepting, &id);
	if (r != RX_HELLO || !hello_find_name(h, n, &w) || is_named(ssl, id))
		return 0;
	nl = w.name_len;
	if (nl == 0 || nl >= MAX_NAME)
		return 0; /* no name: the connection stays undecided */
	s = sni_scratch_get();
	if (!s)
		return 0;
	no = w.name_off & (HELLO_MAX - 1);
	nl &= MAX_NAME - 1;
	if (bpf_probe_read_kernel(s->raw, nl, &h->b[no]) != 0)
		return 0;
	return decide_name(ssl, s, nl, SNI_RECEIVED, id);
}

SEC("tracepoint/syscalls/sys_enter_read")
int accept_read(struct trace_event_raw_sys_enter *ctx)
{
	return accept_read_enter(ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_read")
int accept_read_ret(struct trace_event_raw_sys_exit *ctx)
{
	return accept_read_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int accept_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	return accept_read_enter(ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int accept_recvfrom_ret(struct trace_event_raw_sys_exit *ctx)
{
	return accept_read_exit(ctx->ret);
}

/* ---- NSS ------------------------------------------------------------------
 * NSS pushes its SSL layer onto an NSPR descriptor (SSL_ImportFD, which
 * keeps the top PRFileDesc * the same) and the program does its I/O with
 * NSPR's calls on it:
 *   PR_Send(fd, buf, n, flags, timeout) / PR_Write(fd, buf, n)  -> bytes, < 0 on failure
 *   PR_Recv(fd, buf, n, flags, timeout) / PR_Read(fd, buf, n)   -> bytes, 0 at EOF
 * These are NSPR's for every descriptor (files, stdout, plain sockets):
 * only descriptors SSL_ImportFD returned are captured. The connection is
 * the PRFileDesc *, its server name SSL_SetURL's, its end PR_Close. NSS's
 * own layer writes to the socket below through the method table, never
 * through these calls: nothing is seen twice.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, __u8);
} nss_fds SEC(".maps");

/* SSL_ImportFD(model, fd) in flight, by thread: fd. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} nss_imports SEC(".maps");

SEC("uprobe.multi")
int BPF_UPROBE(nss_import_entry, void *model, void *fd)
{
	__u64 id = bpf_get_current_pid_tgid(), f = (__u64)fd;

	if (!fd || !process_wanted(id >> 32))
		return 0;
	bpf_map_update_elem(&nss_imports, &id, &f, BPF_ANY);
	return 0;
}

SEC("uretprobe.multi")
int nss_import_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), *f = bpf_map_lookup_elem(&nss_imports, &id);
	struct conn_key k = { .pid = id >> 32 };
	__u8 one = 1;

	if (!f)
		return 0;
	k.ssl = *f;
	bpf_map_delete_elem(&nss_imports, &id);
	/* NULL on failure; else the same descriptor, now with an SSL layer */
	if (PT_REGS_RC(ctx) == k.ssl)
		bpf_map_update_elem(&nss_fds, &k, &one, BPF_ANY);
	return 0;
}

/* SSL_SetURL(fd, url): the server name NSS sends and checks. */
SEC("uprobe.multi")
int BPF_UPROBE(nss_set_url_entry, void *fd, const char *url)
{
	return on_server_name((__u64)fd, url, -1);
}

static __always_inline int on_pr_entry(__u64 fd, __u64 buf)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = fd };

	if (!bpf_map_lookup_elem(&nss_fds, &k))
		return 0;
	return on_entry(fd, buf, 0);
}

/* PR_Send / PR_Write */
SEC("uprobe.multi")
int BPF_UPROBE(pr_write_entry, void *fd, const void *buf)
{
	return on_pr_entry((__u64)fd, (__u64)buf);
}

SEC("uretprobe.multi")
int pr_write_return(struct pt_regs *ctx)
{
	return on_return(ctx, SSL_EVENT_TYPE_WRITE);
}

/* PR_Recv / PR_Read */
SEC("uprobe.multi")
int BPF_UPROBE(pr_read_entry, void *fd, void *buf)
{
	return on_pr_entry((__u64)fd, (__u64)buf);
}

SEC("uretprobe.multi")
int pr_read_return(struct pt_regs *ctx)
{
	return on_return(ctx, SSL_EVENT_TYPE_READ);
}

/* PR_Close(fd): the end of an SSL descriptor. */
SEC("uprobe.multi")
int BPF_UPROBE(pr_close_entry, void *fd)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = (__u64)fd };

	if (!bpf_map_lookup_elem(&nss_fds, &k))
		return 0;
	bpf_map_delete_elem(&nss_fds, &k);
	return on_free(fd);
}
