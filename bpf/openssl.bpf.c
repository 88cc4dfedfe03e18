// SPDX-License-Identifier: MIT
/*
 * openssl: plaintext of TLS libraries with a stable C API: the
 * OpenSSL family (OpenSSL 1.1/3, BoringSSL, AWS-LC, node's bundled OpenSSL,
 * static libssl), GnuTLS (gnutls_record_send2/recv, same shape), mbedTLS
 * and wolfSSL (OpenSSL's shapes too: src/probes.rs; their names:
 * mbedtls.bpf.h, wolfssl.bpf.h).
 *
 *   SSL_write(ssl, buf, num)            -> int  bytes written, <= 0 on failure
 *   SSL_read(ssl, buf, num)             -> int  bytes read, <= 0 on failure
 *   SSL_write_ex(ssl, buf, num, *written)   -> 1 on success, *written bytes
 *   SSL_read_ex(ssl, buf, num, *readbytes)  -> 1 on success, *readbytes bytes
 *   SSL_write_ex2(ssl, buf, num, flags, *written) (OpenSSL 3.3+)
 *   SSL_free(ssl)                        end of the connection
 *
 * Included at the end, one concern each: servers' names (accept.bpf.h),
 * OpenSSL's SSL BIO (sslbio.bpf.h), NSS on NSPR descriptors (nss.bpf.h).
 *
 * Arguments are saved at entry by thread; at return, only calls that
 * succeeded are copied, with the length the call reports, in DATA_CHUNK
 * pieces (bpf_loop), up to max_capture bytes per call.
 *
 * When filters are given, the return programs of these calls are attached
 * per process (src/attach.rs): a process's first wanted connection asks
 * user space for them (want_returns), which holds the process while they
 * are attached. Other processes pay the entry probe only.
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
#include "sock.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct call_args {
	__u64 ssl;
	__u64 buf;
	__u64 len_ptr; /* *written / *readbytes of the _ex calls, else 0 */
	__u32 recheck; /* undecided at entry: decide at return */
	__u32 active;  /* a call is in flight on this thread */
	__u32 want_sock; /* it waits for its connection's socket (tlssock.bpf.h) */
	__u32 _pad;
	/* This thread's process (its start, in ns since boot) has the
	 * return probes of library `returns_file` already: its calls there
	 * ask no more. */
	__u64 returns_boot_ns;
	__u64 returns_file;
};

/* The call in flight on each thread, from its entry to its return: task
 * local storage (no hashing, no LRU lock on the capture path; freed with the
 * thread). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct call_args);
} active_calls SEC(".maps");

static __always_inline struct call_args *call_slot(__u64 flags)
{
	return bpf_task_storage_get(&active_calls, bpf_get_current_task_btf(), 0, flags);
}

/* Connections whose server name was decided: (pid, SSL *) -> matched, so
 * that a call of either kind costs one lookup, and "set, not matching" is
 * told from "never set". Deleted at SSL_free and swept by user space for
 * exited processes; a hash, not LRU (sni.h, sni_decide). */
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

/* Set by user space when filters are given: return programs are attached
 * per process, on request. */
const volatile __u8 returns_per_process = 0;

/* Requests for return probes sent, by process and library (returns_key,
 * events.h): the start time of the process they were sent for, so that a
 * new process on a reused pid asks again. User space adds the libraries it
 * attached for a request. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct returns_key);
	__type(value, __u64);
} returns_asked SEC(".maps");

/* The requests (mmap_exec_file_event, EXEC_SOURCE_RETURNS), read by the
 * pause thread, which is woken for each. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} return_requests SEC(".maps");

/* Clock ticks in nanoseconds (user space sets it: 1e9 / sysconf(_SC_CLK_TCK)). */
const volatile __u64 tick_ns = 10000000;

/* When the current process started, in ns since boot. */
static __always_inline __u64 process_boot_ns(void)
{
	return bpf_get_current_task_btf()->group_leader->start_boottime;
}

/* The same in clock ticks: with its pid, the process's identity. The unit
 * of /proc/PID/stat's starttime, so that user space can tell it too. */
static __always_inline __u64 process_born(void)
{
	return process_boot_ns() / tick_ns;
}

/* This process (started at `born`) has a wanted connection, seen by a probe
 * in library `file` (an inode, the probe's cookie; 0: a syscall's hook):
 * asks once for the return probes of its TLS libraries. True once asked. */
static __always_inline bool want_returns(__u64 id, __u64 file, __u64 born)
{
	struct returns_key k = { .pid = id >> 32, .file = file };
	struct mmap_exec_file_event *e;
	__u64 *asked;

	if (!returns_per_process)
		return true;
	asked = bpf_map_lookup_elem(&returns_asked, &k);
	if (asked && *asked == born)
		return true;
	e = bpf_ringbuf_reserve(&return_requests, sizeof(*e), 0);
	if (!e) {
		/* Not marked asked: the next call asks again. */
		count_stat(STAT_RETURNS_LOST);
		return false;
	}
	bpf_map_update_elem(&returns_asked, &k, &born, BPF_ANY);
	e->type = MMAP_EXEC_FILE;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->source = EXEC_SOURCE_RETURNS;
	e->dev = born;
	e->ino = file;
	e->ts_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return true;
}

enum { VERDICT_NO = 0, VERDICT_YES = 1, VERDICT_UNDECIDED = 2 };

/* Whether connection `k` is captured, as far as the patterns go, in one
 * lookup: decided either way (conns), or not decided yet (no name seen). */
static __always_inline int conn_verdict(const struct conn_key *k)
{
	__u8 *m;

	if (!sni_filter)
		return VERDICT_YES;
	m = bpf_map_lookup_elem(&conns, k);
	if (m)
		return *m ? VERDICT_YES : VERDICT_NO;
	if (capture_no_sni && !sni_overflowed())
		return VERDICT_YES;
	return VERDICT_UNDECIDED;
}

#include "tlssock.bpf.h"

static __always_inline void arm_accept(__u64 conn, __u64 id);

static __always_inline int on_entry(void *ctx, __u64 ssl, __u64 buf, __u64 len_ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = ssl };
	struct call_args *a;
	__u32 recheck = 0;
	__u64 boot, file;
	int verdict;

	if (!process_wanted(id >> 32))
		return 0;
	verdict = conn_verdict(&k);
	if (verdict == VERDICT_NO)
		return 0;
	/* A server's first read may run the handshake that names the
	 * connection (SSL BIO, SSL_read before SSL_do_handshake): an undecided
	 * call is decided at its return. */
	if (verdict == VERDICT_UNDECIDED) {
		recheck = 1;
		/* ... and a handshake this call runs (the first SSL_write of a
		 * client that never called SSL_do_handshake) may name it. */
		arm_accept(ssl, id);
	}
	a = call_slot(BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!a)
		return 0;
	/* The thread's last wanted call never returned through a probe: its
	 * process's return probes were not in yet (or a return path was
	 * missed). Counted: its plaintext is lost. */
	/* ... unless it is the same call going on inside a wrapper
	 * (SSL_write_ex calls SSL_write_ex2 with its own arguments): the
	 * inner return delivers it, once. */
	if (a->active && !a->recheck &&
	    !(a->ssl == ssl && a->buf == buf && a->len_ptr == len_ptr))
		count_stat(STAT_RETURN_MISSED);
	if (verdict == VERDICT_YES && returns_per_process) {
		boot = process_boot_ns();
		file = bpf_get_attach_cookie(ctx);
		if ((a->returns_boot_ns != boot || a->returns_file != file) &&
		    want_returns(id, file, boot / tick_ns)) {
			a->returns_boot_ns = boot;
			a->returns_file = file;
		}
	}
	a->ssl = ssl;
	a->buf = buf;
	a->len_ptr = len_ptr;
	a->recheck = recheck;
	a->active = 1;
	sock_watch(a, &k);
	return 0;
}

/* A call undecided at entry is captured if its connection is wanted now,
 * and if the endpoint filters let its socket through. */
static __always_inline bool still_wanted(struct call_args *a, __u64 id)
{
	struct conn_key k = { .pid = id >> 32, .ssl = a->ssl };

	return (!a->recheck || sni_conn_wanted(&conns, &k)) && sock_passes(&k);
}

/* Return of SSL_write / SSL_read (int) or gnutls_record_* (ssize_t, `wide`):
 * bytes, <= 0 on failure. */
static __always_inline int on_return_n(struct pt_regs *ctx, __u32 type, bool wide)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct call_args *args = call_slot(0);
	struct call_args a;
	long ret = wide ? (long)PT_REGS_RC(ctx) : (long)(int)PT_REGS_RC(ctx);

	if (!args || !args->active)
		return 0;
	a = *args;
	args->active = 0;
	sock_unwatch(args);
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
	struct call_args *args = call_slot(0);
	struct call_args a;
	int ret = (int)PT_REGS_RC(ctx);
	__u64 len = 0;

	if (!args || !args->active)
		return 0;
	a = *args;
	args->active = 0;
	sock_unwatch(args);
	if (ret != 1 || !a.len_ptr || !still_wanted(&a, id))
		return 0;
	if (bpf_probe_read_user(&len, sizeof(len), (void *)a.len_ptr) != 0) {
		count_stat(STAT_READ_FAILED);
		return 0;
	}
	emit_data(type, a.buf, a.ssl, len, id);
	return 0;
}

#include "sslcalls.bpf.h"

/*
 * Connection `ssl` has the server name in s->raw (`n` bytes, 0 < n <
 * MAX_NAME): match it, remember the decision, and tell user space the name
 * of a connection that will be captured (`type`: SNI_CONFIGURED when the
 * process set it, SNI_RECEIVED when its client sent it). `file`: the inode
 * of the library whose probe saw it (the probe's cookie; 0 from a syscall).
 */
static __always_inline int decide_name(__u64 ssl, struct sni_scratch *s, __u64 n, __u32 type,
				       __u64 id, __u64 file)
{
	struct conn_key k = { .pid = id >> 32, .ssl = ssl };
	__u32 rule = 0;
	__u8 matched, one = 1;

	sni_match(s, n, &rule);
	matched = !sni_filter || rule != 0;
	if (sni_filter)
		sni_decide(&conns, &k, matched);
	bpf_map_update_elem(&named, &k, &one, BPF_ANY);
	if (matched) {
		/* Its socket first, when the program gave it one already. */
		sock_named(&k, id);
		emit_sni(type, ssl, rule, s, true, id);
		/* Asked before the handshake ends: the process is held while
		 * the return probes go in, before its first call on it. */
		want_returns(id, file, process_born());
	}
	return 0;
}

/* A server name was set on `ssl`: `len` < 0: NUL-terminated name; else its
 * length (GnuTLS). */
static __always_inline int on_server_name(void *ctx, __u64 ssl, const void *name, long len)
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
	return decide_name(ssl, s, n, SNI_CONFIGURED, id, bpf_get_attach_cookie(ctx));
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
	return on_server_name(ctx, (__u64)ssl, parg, -1);
}

/* BoringSSL: a real function. */
SEC("uprobe.multi")
int BPF_UPROBE(ssl_set_host_name_entry, void *ssl, const char *name)
{
	return on_server_name(ctx, (__u64)ssl, name, -1);
}

/* GnuTLS: gnutls_server_name_set(session, type, name, name_length) */
SEC("uprobe.multi")
int BPF_UPROBE(gnutls_server_name_entry, void *session, int type, const void *name, __u64 len)
{
	if (type != GNUTLS_NAME_DNS)
		return 0;
	return on_server_name(ctx, (__u64)session, name, len);
}

/* gnutls_record_send calls the exported gnutls_record_send2: probing only
 * send2 sees every write once. send2(session, data, size, pad, flags) */
SEC("uprobe.multi")
int BPF_UPROBE(gnutls_send_entry, void *session, const void *data, __u64 size)
{
	return on_entry(ctx, (__u64)session, (__u64)data, 0);
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
	return on_entry(ctx, (__u64)session, (__u64)data, 0);
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
	was_captured = was_captured && sock_passes(&k);
	bpf_map_delete_elem(&conn_socks, &k);
	bpf_map_delete_elem(&conn_fds, &k);
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

#include "accept.bpf.h"
#include "sslbio.bpf.h"
#include "nss.bpf.h"
#include "jsse.bpf.h"
#include "mbedtls.bpf.h"
#include "wolfssl.bpf.h"
