/* SPDX-License-Identifier: MIT */
/*
 * statictls: steps 3 and 4 for EVP_AEAD_CTX (aws-lc, BoringSSL/AWS-LC FIPS
 * modules). A key context created on a thread that received a ServerHello
 * (thread_conn) is that connection's, until EVP_AEAD_CTX_cleanup; records
 * sealed and opened with it are captured. Needs statictls.bpf.c's shared
 * part (conn_info, thread_conn, open_args, stack_arg, app_data_len) and
 * emit.h before it.
 */

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

/* EVP_AEAD_CTX_open of a mapped context in flight, by thread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct open_args);
} active_opens SEC(".maps");

/* EVP_AEAD_CTX_init_with_direction(ctx, ...): a new key context */
SEC("uprobe.multi")
int BPF_UPROBE(aead_init_entry, void *actx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_info *ci = bpf_map_lookup_elem(&thread_conn, &id);
	struct ctx_key k = { .pid = id >> 32, .ctx = (__u64)actx };

	/* A context made for nothing wanted may sit where a freed one of a
	 * captured connection was: forget that one. Cleanup alone is not
	 * enough: clang builds of aws-lc inline it into EVP_AEAD_CTX_free
	 * and drop it (seen in uv, rustup). */
	if (!ci) {
		bpf_map_delete_elem(&key_ctxs, &k);
		return 0;
	}
	bpf_map_update_elem(&key_ctxs, &k, ci, BPF_ANY);
	return 0;
}

/* EVP_AEAD_CTX_cleanup(ctx) */
SEC("uprobe.multi")
int BPF_UPROBE(aead_cleanup_entry, void *actx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ctx_key k = { .pid = id >> 32, .ctx = (__u64)actx };

	bpf_map_delete_elem(&key_ctxs, &k);
	return 0;
}

/* A seal with key context PARM1: `in` is read at entry, before it is encrypted. */
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

/* open returns 1 on success, with the plaintext's length in *out_len. */
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
