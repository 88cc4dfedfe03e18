/* SPDX-License-Identifier: MIT */
/*
 * statictls: Go's crypto/tls. Go's register ABI (amd64, Go 1.17 on):
 * arguments in RAX, RBX, RCX, ...; R14 = the running goroutine (g).
 * The connection is the *tls.Conn. Its ClientHello is seen on the send path
 * (hello.bpf.h calls go_hello), while (*Conn).clientHandshake runs on the
 * sending goroutine; plaintext is captured at (*Conn).Write / (*Conn).Read,
 * by goroutine because a goroutine may change threads.
 * Needs statictls.bpf.c's struct conn_info, filter.h, sni.h and emit.h
 * before it; comes before hello.bpf.h.
 */

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

/* Go connections decided by their ClientHello: *Conn -> matched (and
 * non-matches with capture_no_sni, as openssl's conns). A hash, not LRU
 * (sni.h, sni_decide); deleted at Close, swept for exited processes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
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

/*
 * A ClientHello is being sent (hello.bpf.h). If a Go program sends it, the
 * goroutine doing so (R14 of the user registers: the send path runs in the
 * kernel) runs (*Conn).clientHandshake: the connection is that *Conn, so
 * its decision (`matched`) is remembered and it becomes ci->conn. Returns
 * false when the sender is not in a Go handshake.
 */
/* Go connections' verdicts of --port / --peer (sock.bpf.h), taken at their
 * ClientHello: *Conn -> passed. Deleted at Close, swept for exited
 * processes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct go_key);
	__type(value, __u8);
} go_socks SEC(".maps");

static __always_inline bool go_sock_passes(const struct go_key *k)
{
	return sock_verdict(&go_socks, k);
}

/* The *Conn whose handshake runs on this goroutine, into ci->conn; false
 * when none does (not Go). */
static __always_inline bool go_conn_of(__u32 pid, struct conn_info *ci)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	struct go_key gk = { .pid = pid, .id = BPF_CORE_READ(regs, r14) };
	__u64 *gconn = bpf_map_lookup_elem(&go_handshakes, &gk);

	if (!gconn)
		return false;
	ci->conn = *gconn;
	return true;
}

/* Go connection `conn`'s verdicts: its server name and its endpoints. */
static __always_inline void go_decide(__u32 pid, __u64 conn, __u8 matched, __u8 ends_ok)
{
	struct go_key ck = { .pid = pid, .id = conn };

	sni_decide(&go_conns, &ck, matched);
	if (filter_ports || filter_peers)
		bpf_map_update_elem(&go_socks, &ck, &ends_ok, BPF_ANY);
}

static __always_inline bool go_hello(__u32 pid, struct conn_info *ci, __u8 matched, __u8 ends_ok)
{
	if (!go_conn_of(pid, ci))
		return false;
	go_decide(pid, ci->conn, matched, ends_ok);
	return true;
}

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

	if (!process_wanted(id >> 32) || !sni_conn_wanted(&go_conns, &ck) || !go_sock_passes(&ck))
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
	bool captured = process_wanted(id >> 32) && sni_conn_wanted(&go_conns, &k) &&
			go_sock_passes(&k);

	bpf_map_delete_elem(&go_conns, &k);
	bpf_map_delete_elem(&go_socks, &k);
	if (captured)
		emit_close(k.id, id);
	return 0;
}
