// SPDX-License-Identifier: MIT
/*
 * statictls: TLS linked statically into an executable without a stable
 * ABI (rustls over aws-lc; BoringSSL/AWS-LC FIPS-module EVP_AEAD_CTX_*).
 * The spec's "Rust Application Using Statically Linked Rustls Library":
 *
 *  1. send path (write/sendto tracepoints; the spec's fexit on tcp_sendmsg):
 *     the first record of a connection of a watched process is parsed as a
 *     TLS ClientHello; its server_name is matched against the patterns; on a
 *     match (pid, fd) waits for a ServerHello and SNI_SENT is emitted;
 *  2. receive path (read/recvfrom; the spec's tcp_recvmsg): a ServerHello on
 *     that socket marks the receiving thread;
 *  3. EVP_AEAD_CTX_init_with_direction on a marked thread maps the new key
 *     context to the connection (every key epoch, both directions);
 *  4. EVP_AEAD_CTX_seal / _seal_scatter at entry and EVP_AEAD_CTX_open at
 *     return copy the plaintext of mapped contexts.
 *  ring: its key (KeyInner) is moved around in memory, so it is known by 8
 *  bytes of its key material (offset 8: the ChaCha20 key, or AES-GCM's
 *  derived hash key), read when ring::aead::algorithm::*_init builds it on a
 *  marked thread and again in *_seal / *_open (Rust ABI, as rustc lays it
 *  out today: rdi = result, rsi = &KeyInner, rcx/r8 = aad, r9 = in_out,
 *  stack = in_out length [, open: start of the ciphertext]). Only application data is
 *     delivered: TLS 1.2's type is in the additional data, TLS 1.3's inner
 *     type is the plaintext's last byte (removed).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "events.h"
#include "filter.h"
#include "sni.h"
#include "emit.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define HELLO_MAX 4096
#define TLS_HANDSHAKE 0x16
#define TLS_APPLICATION_DATA 0x17
#define HS_CLIENT_HELLO 0x01
#define HS_SERVER_HELLO 0x02

struct file_key {
	__u64 dev;
	__u64 ino;
};

/* Executables with static TLS: processes that exec them are watched. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct file_key);
	__type(value, __u8);
} static_files SEC(".maps");

/* Processes whose sockets are looked at. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} watched_pids SEC(".maps");

/* A socket of a process: its fd (tracepoint path) or its struct sock
 * (fentry/fexit path; one path serves a running agent). */
struct sock_key {
	__u32 pid;
	__u32 _pad;
	__u64 sock;
};

struct conn_info {
	__u64 conn; /* connection id: time of its ClientHello */
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

/* Thread that received a ServerHello: its next key contexts are this conn. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct conn_info);
} thread_conn SEC(".maps");

struct ctx_key {
	__u32 pid;
	__u32 _pad;
	__u64 ctx;
};

/* Key context (EVP_AEAD_CTX *) -> connection. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ctx_key);
	__type(value, struct conn_info);
} key_ctxs SEC(".maps");

struct open_args {
	__u64 out;
	__u64 out_len_ptr;
	__u64 ad;
	__u64 ad_len;
	__u64 conn;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct open_args);
} active_opens SEC(".maps");

/* ring opens in flight (out_len_ptr holds the plaintext length itself). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct open_args);
} ring_opens SEC(".maps");

struct hello_buf {
	__u8 b[HELLO_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hello_buf);
} hello_scratch SEC(".maps");

/* ---- Go crypto/tls (register ABI: RAX, RBX, RCX...; R14 = goroutine) --- */

struct go_key {
	__u32 pid;
	__u32 _pad;
	__u64 id; /* goroutine (g) or *tls.Conn */
};

/* (*Conn).clientHandshake running on goroutine g: its *Conn. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_key);
	__type(value, __u64);
} go_handshakes SEC(".maps");

/* Go connections decided by their ClientHello: *Conn -> matched. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct go_key);
	__type(value, __u8);
} go_conns SEC(".maps");

struct go_call {
	__u64 conn;
	__u64 buf;
};

/* Write/Read in progress, by goroutine (it may change threads). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct go_key);
	__type(value, struct go_call);
} go_calls SEC(".maps");

/* ---- process tracking --------------------------------------------------- */

SEC("tracepoint/sched/sched_process_exec")
int static_exec(void *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	struct file_key k = {};
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u8 one = 1;

	if (!exe)
		return 0;
	k.dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
	k.ino = BPF_CORE_READ(exe, f_inode, i_ino);
	if (bpf_map_lookup_elem(&static_files, &k))
		bpf_map_update_elem(&watched_pids, &pid, &one, BPF_ANY);
	else
		bpf_map_delete_elem(&watched_pids, &pid);
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int static_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	__u32 parent = ctx->parent_pid, child = ctx->child_pid;
	__u8 one = 1;

	if (bpf_map_lookup_elem(&watched_pids, &parent))
		bpf_map_update_elem(&watched_pids, &child, &one, BPF_ANY);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int static_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;

	bpf_map_delete_elem(&thread_conn, &id);
	bpf_map_delete_elem(&watched_pids, &tid);
	return 0;
}

/* ---- ClientHello (send path) ---------------------------------------------- */

#define HB(i) (h->b[(i) & (HELLO_MAX - 1)])

struct walk_ctx {
	struct hello_buf *h;
	__u32 off;
	__u32 end;
	__u32 name_off;
	__u32 name_len;
};

/* One extension per call: stop at server_name (type 0). */
static int walk_extension(__u32 i, void *data)
{
	struct walk_ctx *w = data;
	struct hello_buf *h = w->h;
	__u32 off = w->off, type, len;

	if (off + 4 > w->end)
		return 1;
	type = (HB(off) << 8) | HB(off + 1);
	len = (HB(off + 2) << 8) | HB(off + 3);
	if (type == 0) {
		/* server_name_list: u16 list length, u8 type (0 = host_name), u16 length, name */
		if (off + 9 > w->end || HB(off + 6) != 0)
			return 1;
		w->name_len = (HB(off + 7) << 8) | HB(off + 8);
		w->name_off = off + 9;
		if (w->name_off + w->name_len > w->end)
			w->name_len = 0;
		return 1;
	}
	w->off = off + 4 + len;
	return 0;
}

static __always_inline int on_send(__u64 sock, __u64 buf, __u64 len)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32, zero = 0, rule = 0, off;
	struct sock_key sk = { .pid = pid, .sock = sock };
	struct walk_ctx w = {};
	struct hello_buf *h;
	struct sni_scratch *s;
	struct conn_info ci;
	__u8 hdr[6];
	__u64 n, nl, no;

	if (!bpf_map_lookup_elem(&watched_pids, &pid))
		return 0;
	if (len < 48 || bpf_probe_read_user(hdr, sizeof(hdr), (void *)buf) != 0)
		return 0;
	if (hdr[0] != TLS_HANDSHAKE || hdr[1] != 3 || hdr[5] != HS_CLIENT_HELLO)
		return 0;
	h = bpf_map_lookup_elem(&hello_scratch, &zero);
	if (!h)
		return 0;
	n = len < HELLO_MAX ? len : HELLO_MAX;
	n = ((n - 1) & (HELLO_MAX - 1)) + 1;
	if (bpf_probe_read_user(h->b, n, (void *)buf) != 0)
		return 0;
	/* record header 5, handshake header 4, version 2, random 32 */
	off = 5 + 4 + 2 + 32;
	off += 1 + HB(off);                              /* session id */
	if (off + 2 > n)
		return 0;
	off += 2 + ((HB(off) << 8) | HB(off + 1));      /* cipher suites */
	if (off + 1 > n)
		return 0;
	off += 1 + HB(off);                              /* compression methods */
	if (off + 2 > n)
		return 0;
	w.end = off + 2 + ((HB(off) << 8) | HB(off + 1));
	if (w.end > n)
		w.end = n; /* a ClientHello larger than what was copied */
	w.off = off + 2;
	w.h = h;
	bpf_loop(64, walk_extension, &w, 0);

	s = sni_scratch_get();
	if (!s)
		return 0;
	nl = w.name_len;
	if (nl == 0 || nl >= MAX_NAME) {
		/* no server name in the ClientHello */
		if (sni_filter && !capture_no_sni)
			return 0;
		s->raw[0] = 0;
		nl = 0;
	} else {
		no = w.name_off & (HELLO_MAX - 1);
		nl &= MAX_NAME - 1;
		if (bpf_probe_read_kernel(s->raw, nl, &h->b[no]) != 0)
			return 0;
		sni_match(s, nl, &rule);
		if (sni_filter && rule == 0)
			return 0;
	}
	ci.conn = bpf_ktime_get_ns();
	{
		/* A Go program: the goroutine sending it runs (*Conn).clientHandshake. */
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
		struct go_key gk = { .pid = pid, .id = BPF_CORE_READ(regs, r14) };
		__u64 *gconn = bpf_map_lookup_elem(&go_handshakes, &gk);
		__u8 matched = 1;

		if (gconn) {
			struct go_key ck = { .pid = pid, .id = *gconn };

			ci.conn = *gconn;
			bpf_map_update_elem(&go_conns, &ck, &matched, BPF_ANY);
		} else {
			bpf_map_update_elem(&hello_sent, &sk, &ci, BPF_ANY);
		}
	}
	emit_sni(SNI_SENT, ci.conn, rule, nl ? s : NULL, id);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int static_write(struct trace_event_raw_sys_enter *ctx)
{
	return on_send(ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int static_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return on_send(ctx->args[0], ctx->args[1], ctx->args[2]);
}

/* The first buffer of a vector write: a ClientHello is sent whole in it. */
static __always_inline int on_send_iov(__u32 fd, __u64 iov, __u64 iovcnt)
{
	struct iovec v = {};

	if (iovcnt == 0 || bpf_probe_read_user(&v, sizeof(v), (void *)iov) != 0)
		return 0;
	return on_send(fd, (__u64)v.iov_base, v.iov_len);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int static_writev(struct trace_event_raw_sys_enter *ctx)
{
	return on_send_iov(ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int static_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	struct user_msghdr m = {};

	if (bpf_probe_read_user(&m, sizeof(m), (void *)ctx->args[1]) != 0)
		return 0;
	return on_send_iov(ctx->args[0], (__u64)m.msg_iov, m.msg_iovlen);
}

/* ---- ServerHello (receive path) ------------------------------------------- */

static __always_inline int on_recv_enter(__u64 sock, __u64 buf)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct sock_key sk = { .pid = id >> 32, .sock = sock };
	struct recv_args a = { .buf = buf, .sock = sock };

	if (!bpf_map_lookup_elem(&hello_sent, &sk))
		return 0;
	bpf_map_update_elem(&pending_recv, &id, &a, BPF_ANY);
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
		return 0;
	sk.pid = id >> 32;
	sk.sock = a->sock;
	if (ret < 6 || bpf_probe_read_user(hdr, sizeof(hdr), (void *)a->buf) != 0) {
		bpf_map_delete_elem(&pending_recv, &id);
		return 0;
	}
	bpf_map_delete_elem(&pending_recv, &id);
	if (hdr[0] != TLS_HANDSHAKE || hdr[1] != 3 || hdr[5] != HS_SERVER_HELLO)
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

SEC("tracepoint/syscalls/sys_enter_read")
int static_read_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_recv_enter(ctx->args[0], ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_read")
int static_read_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_recv_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int static_recvfrom_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_recv_enter(ctx->args[0], ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int static_recvfrom_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_recv_exit(ctx->ret);
}

/* ---- the spec's hooks: tcp_sendmsg / tcp_recvmsg (fentry + fexit) -------- */
/*
 * Where the kernel allows BPF trampolines (src/hooks.rs decides), the
 * ClientHello and ServerHello are seen in tcp_sendmsg / tcp_recvmsg instead
 * of the syscall tracepoints: fentry notes where the user's buffer is (the
 * iterator is consumed by the call), fexit acts once the call succeeded.
 */

/* The iovec pointer of iov_iter before 6.4 (renamed __iov since). */
struct iov_iter___old {
	const struct iovec *iov;
} __attribute__((preserve_access_index));

/* The user buffer a msghdr's iterator starts at, and its length. */
static __always_inline __u64 msg_user_buf(struct msghdr *msg, __u64 *len)
{
	struct iov_iter *it = &msg->msg_iter;
	__u8 type = BPF_CORE_READ(it, iter_type);
	__u64 off = BPF_CORE_READ(it, iov_offset);
	const struct iovec *iov;
	struct iovec v = {};

	*len = BPF_CORE_READ(it, count);
	if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
	    type == bpf_core_enum_value(enum iter_type, ITER_UBUF))
		return (__u64)BPF_CORE_READ(it, ubuf) + off;
	if (type != bpf_core_enum_value(enum iter_type, ITER_IOVEC))
		return 0;
	if (bpf_core_field_exists(it->__iov))
		iov = BPF_CORE_READ(it, __iov);
	else
		iov = BPF_CORE_READ((struct iov_iter___old *)it, iov);
	if (bpf_probe_read_kernel(&v, sizeof(v), iov) != 0 || v.iov_len <= off)
		return 0;
	if (*len > v.iov_len - off)
		*len = v.iov_len - off;
	return (__u64)v.iov_base + off;
}

struct send_args {
	__u64 sock;
	__u64 buf;
	__u64 len;
};

/* tcp_sendmsg in flight, by thread (fentry -> fexit). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct send_args);
} pending_send SEC(".maps");

SEC("fentry/tcp_sendmsg")
int BPF_PROG(static_tcp_send_entry, struct sock *sk, struct msghdr *msg, size_t size)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct send_args a = { .sock = (__u64)sk };

	if (!bpf_map_lookup_elem(&watched_pids, &pid))
		return 0;
	a.buf = msg_user_buf(msg, &a.len);
	if (!a.buf || a.len < 48)
		return 0;
	bpf_map_update_elem(&pending_send, &id, &a, BPF_ANY);
	return 0;
}

SEC("fexit/tcp_sendmsg")
int static_tcp_send_exit(__u64 *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct send_args *p = bpf_map_lookup_elem(&pending_send, &id);
	struct send_args a;
	__u64 ret = 0;

	if (!p)
		return 0;
	a = *p;
	bpf_map_delete_elem(&pending_send, &id);
	bpf_get_func_ret(ctx, &ret);
	if ((long)ret <= 0)
		return 0;
	return on_send(a.sock, a.buf, a.len);
}

SEC("fentry/tcp_recvmsg")
int BPF_PROG(static_tcp_recv_entry, struct sock *sk, struct msghdr *msg)
{
	__u64 len = 0, buf = msg_user_buf(msg, &len);

	if (!buf)
		return 0;
	return on_recv_enter((__u64)sk, buf);
}

SEC("fexit/tcp_recvmsg")
int static_tcp_recv_exit(__u64 *ctx)
{
	__u64 ret = 0;

	bpf_get_func_ret(ctx, &ret);
	return on_recv_exit((long)(int)ret);
}

/* ---- key contexts and plaintext ------------------------------------------ */

SEC("uprobe.multi")
int BPF_UPROBE(aead_init_entry, void *actx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_info *ci = bpf_map_lookup_elem(&thread_conn, &id);
	struct ctx_key k = { .pid = id >> 32, .ctx = (__u64)actx };

	if (!ci)
		return 0;
	bpf_map_update_elem(&key_ctxs, &k, ci, BPF_ANY);
	return 0;
}

SEC("uprobe.multi")
int BPF_UPROBE(aead_cleanup_entry, void *actx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ctx_key k = { .pid = id >> 32, .ctx = (__u64)actx };

	bpf_map_delete_elem(&key_ctxs, &k);
	return 0;
}

static __always_inline __u64 stack_arg(struct pt_regs *ctx, int n)
{
	/* at function entry: return address at sp, argument 7 at sp + 8, ... */
	__u64 v = 0;

	bpf_probe_read_user(&v, sizeof(v), (void *)(PT_REGS_SP(ctx) + 8 * (n - 6)));
	return v;
}

/*
 * Length of the application data in a record's plaintext, or 0 when it is
 * not application data. TLS 1.2: 13 bytes of additional data hold the type
 * at [8]. TLS 1.3: 5 bytes (the record header); the inner type is the last
 * plaintext byte.
 */
static __always_inline __u64 app_data_len(__u64 ad, __u64 ad_len, __u64 pt, __u64 pt_len)
{
	__u8 t = 0;

	if (pt_len == 0)
		return 0;
	if (ad_len == 13) {
		if (bpf_probe_read_user(&t, 1, (void *)(ad + 8)) != 0)
			return 0;
		return t == TLS_APPLICATION_DATA ? pt_len : 0;
	}
	if (bpf_probe_read_user(&t, 1, (void *)(pt + pt_len - 1)) != 0)
		return 0;
	return t == TLS_APPLICATION_DATA ? pt_len - 1 : 0;
}

static __always_inline int on_seal(struct pt_regs *ctx, __u64 in, __u64 in_len, __u64 ad, __u64 ad_len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ctx_key k = { .pid = id >> 32, .ctx = PT_REGS_PARM1(ctx) };
	struct conn_info *ci = bpf_map_lookup_elem(&key_ctxs, &k);
	__u64 n;

	if (!ci)
		return 0;
	n = app_data_len(ad, ad_len, in, in_len);
	if (n)
		emit_data(SSL_EVENT_TYPE_WRITE, in, ci->conn, n, id);
	return 0;
}

/* seal(ctx, out, out_len*, max_out_len, nonce, nonce_len, in, in_len, ad, ad_len) */
SEC("uprobe.multi")
int aead_seal_entry(struct pt_regs *ctx)
{
	return on_seal(ctx, stack_arg(ctx, 7), stack_arg(ctx, 8), stack_arg(ctx, 9), stack_arg(ctx, 10));
}

/* seal_scatter(ctx, out, out_tag, out_tag_len*, max_out_tag_len, nonce,
 *              nonce_len, in, in_len, extra_in, extra_in_len, ad, ad_len) */
SEC("uprobe.multi")
int aead_seal_scatter_entry(struct pt_regs *ctx)
{
	return on_seal(ctx, stack_arg(ctx, 8), stack_arg(ctx, 9), stack_arg(ctx, 12), stack_arg(ctx, 13));
}

/* open(ctx, out, out_len*, max_out_len, nonce, nonce_len, in, in_len, ad, ad_len) */
SEC("uprobe.multi")
int aead_open_entry(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ctx_key k = { .pid = id >> 32, .ctx = PT_REGS_PARM1(ctx) };
	struct conn_info *ci = bpf_map_lookup_elem(&key_ctxs, &k);
	struct open_args a;

	if (!ci)
		return 0;
	a.out = PT_REGS_PARM2(ctx);
	a.out_len_ptr = PT_REGS_PARM3(ctx);
	a.ad = stack_arg(ctx, 9);
	a.ad_len = stack_arg(ctx, 10);
	a.conn = ci->conn;
	bpf_map_update_elem(&active_opens, &id, &a, BPF_ANY);
	return 0;
}

SEC("uretprobe.multi")
int aead_open_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct open_args *p = bpf_map_lookup_elem(&active_opens, &id);
	struct open_args a;
	__u64 len = 0, n;

	if (!p)
		return 0;
	a = *p;
	bpf_map_delete_elem(&active_opens, &id);
	if ((int)PT_REGS_RC(ctx) != 1)
		return 0;
	if (bpf_probe_read_user(&len, sizeof(len), (void *)a.out_len_ptr) != 0)
		return 0;
	n = app_data_len(a.ad, a.ad_len, a.out, len);
	if (n)
		emit_data(SSL_EVENT_TYPE_READ, a.out, a.conn, n, id);
	return 0;
}

/* ---- ring -------------------------------------------------------------- */

struct ring_key {
	__u32 pid;
	__u32 _pad;
	__u64 ident; /* 8 bytes of key material */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ring_key);
	__type(value, struct conn_info);
} ring_keys SEC(".maps");

/* KeyInner being built on a marked thread: its address, by thread. */
struct ring_init {
	__u64 out;
	__u64 conn;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ring_init);
} ring_inits SEC(".maps");

#define RING_KEY_IDENT_OFF 8
#define RING_KEY_ERR 6 /* Result::Err niche in KeyInner's tag */

static __always_inline __u64 ring_ident(__u64 key)
{
	__u64 v = 0;

	bpf_probe_read_user(&v, sizeof(v), (void *)(key + RING_KEY_IDENT_OFF));
	return v;
}

/* aes_gcm_init_128/256, chacha20_poly1305_init(out: *mut KeyInner, key, len) */
SEC("uprobe.multi")
int ring_init_entry(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_info *ci = bpf_map_lookup_elem(&thread_conn, &id);
	struct ring_init ri;

	if (!ci)
		return 0;
	ri.out = PT_REGS_PARM1(ctx);
	ri.conn = ci->conn;
	bpf_map_update_elem(&ring_inits, &id, &ri, BPF_ANY);
	return 0;
}

SEC("uretprobe.multi")
int ring_init_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ring_init *p = bpf_map_lookup_elem(&ring_inits, &id);
	struct ring_key k = { .pid = id >> 32 };
	struct conn_info ci;
	__u32 tag = RING_KEY_ERR;
	__u64 out;

	if (!p)
		return 0;
	out = p->out;
	ci.conn = p->conn;
	bpf_map_delete_elem(&ring_inits, &id);
	bpf_probe_read_user(&tag, sizeof(tag), (void *)out);
	if (tag == RING_KEY_ERR)
		return 0;
	k.ident = ring_ident(out);
	if (k.ident)
		bpf_map_update_elem(&ring_keys, &k, &ci, BPF_ANY);
	return 0;
}

static __always_inline struct conn_info *ring_conn(struct pt_regs *ctx, __u64 id)
{
	struct ring_key k = { .pid = id >> 32, .ident = ring_ident(PT_REGS_PARM2(ctx)) };

	if (!k.ident)
		return NULL;
	return bpf_map_lookup_elem(&ring_keys, &k);
}

/* aes_gcm_seal / chacha20_poly1305_seal: plaintext in in_out at entry */
SEC("uprobe.multi")
int ring_seal_entry(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_info *ci = ring_conn(ctx, id);
	__u64 in, len, n;

	if (!ci)
		return 0;
	in = PT_REGS_PARM6(ctx);
	len = stack_arg(ctx, 7);
	n = app_data_len(PT_REGS_PARM4(ctx), PT_REGS_PARM5(ctx), in, len);
	if (n)
		emit_data(SSL_EVENT_TYPE_WRITE, in, ci->conn, n, id);
	return 0;
}

/* aes_gcm_open / chacha20_poly1305_open: decrypted in place, in_out[..len - src] */
SEC("uprobe.multi")
int ring_open_entry(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_info *ci = ring_conn(ctx, id);
	struct open_args a;
	__u64 len, src;

	if (!ci)
		return 0;
	len = stack_arg(ctx, 7);
	src = stack_arg(ctx, 8);
	if (src > len)
		return 0;
	a.out = PT_REGS_PARM6(ctx);
	a.out_len_ptr = len - src; /* the length itself, not a pointer */
	a.ad = PT_REGS_PARM4(ctx);
	a.ad_len = PT_REGS_PARM5(ctx);
	a.conn = ci->conn;
	bpf_map_update_elem(&ring_opens, &id, &a, BPF_ANY);
	return 0;
}

SEC("uretprobe.multi")
int ring_open_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct open_args *p = bpf_map_lookup_elem(&ring_opens, &id);
	struct open_args a;
	__u64 n;

	if (!p)
		return 0;
	a = *p;
	bpf_map_delete_elem(&ring_opens, &id);
	n = app_data_len(a.ad, a.ad_len, a.out, a.out_len_ptr);
	if (n)
		emit_data(SSL_EVENT_TYPE_READ, a.out, a.conn, n, id);
	return 0;
}

/* ---- Go crypto/tls ---------------------------------------------------------- */

static __always_inline __u64 go_g(struct pt_regs *ctx)
{
	return ctx->r14;
}

/* (*Conn).clientHandshake(ctx): RAX = *Conn */
SEC("uprobe.multi")
int go_handshake_entry(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct go_key k = { .pid = id >> 32, .id = go_g(ctx) };
	__u64 conn = ctx->ax;

	bpf_map_update_elem(&go_handshakes, &k, &conn, BPF_ANY);
	return 0;
}

/* (*Conn).Write(b) / (*Conn).Read(b): RAX = *Conn, RBX = b.ptr, RCX = b.len */
static __always_inline int go_entry(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct go_key k = { .pid = id >> 32, .id = go_g(ctx) };
	struct go_call c = { .conn = ctx->ax, .buf = ctx->bx };
	struct go_key ck = { .pid = id >> 32, .id = c.conn };

	if (!process_wanted(id >> 32) || !sni_conn_wanted(&go_conns, &ck))
		return 0;
	bpf_map_update_elem(&go_calls, &k, &c, BPF_ANY);
	return 0;
}

/* At each RET of Write/Read (no uretprobes on Go: stacks move): RAX = n. */
static __always_inline int go_ret(struct pt_regs *ctx, __u32 type)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct go_key k = { .pid = id >> 32, .id = go_g(ctx) };
	struct go_call *p = bpf_map_lookup_elem(&go_calls, &k);
	struct go_call c;
	long n = (long)ctx->ax;

	if (!p)
		return 0;
	c = *p;
	bpf_map_delete_elem(&go_calls, &k);
	if (n > 0)
		emit_data(type, c.buf, c.conn, n, id);
	return 0;
}

SEC("uprobe.multi")
int go_write_entry(struct pt_regs *ctx)
{
	return go_entry(ctx);
}

SEC("uprobe.multi")
int go_write_ret(struct pt_regs *ctx)
{
	return go_ret(ctx, SSL_EVENT_TYPE_WRITE);
}

SEC("uprobe.multi")
int go_read_entry(struct pt_regs *ctx)
{
	return go_entry(ctx);
}

SEC("uprobe.multi")
int go_read_ret(struct pt_regs *ctx)
{
	return go_ret(ctx, SSL_EVENT_TYPE_READ);
}

/* (*Conn).Close(): RAX = *Conn */
SEC("uprobe.multi")
int go_close_entry(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct go_key k = { .pid = id >> 32, .id = ctx->ax };
	bool captured = process_wanted(id >> 32) && sni_conn_wanted(&go_conns, &k);

	bpf_map_delete_elem(&go_conns, &k);
	if (captured)
		emit_close(k.id, id);
	return 0;
}
