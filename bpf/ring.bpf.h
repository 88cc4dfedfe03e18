/* SPDX-License-Identifier: MIT */
/*
 * statictls: steps 3 and 4 for ring (rustls' ring provider). ring moves its
 * key (KeyInner) around in memory, so a key is known by 8 bytes of its key
 * material (ring_ident: where depends on the variant), read
 * when ring::aead::algorithm::*_init builds it on a thread that received a
 * ServerHello (thread_conn), and again in *_seal / *_open. Those take
 * (Rust ABI, as rustc lays it out today) rdi = result, rsi = &KeyInner,
 * rcx/r8 = additional data, r9 = in_out, stack = in_out length [, open:
 * start of the ciphertext].
 * Needs statictls.bpf.c's shared part (conn_info, thread_conn, open_args,
 * stack_arg, app_data_len) and emit.h before it.
 */

/* ring opens in flight (out_len_ptr holds the plaintext length itself). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct open_args);
} ring_opens SEC(".maps");

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

/*
 * KeyInner's tag (u32 at offset 0) is the variant: AES-GCM's DynKey
 * implementations 0-4 (chosen by CPU features: VAES/AVX2, AES-NI+CLMUL+AVX+
 * MOVBE, AES-NI+CLMUL, SIMD, fallback), 5 ChaCha20-Poly1305, 6 the Err of
 * the init's Result. ChaCha20's key starts at offset 8; AES-GCM's 16-byte
 * aligned key schedule at offset 16, with zero padding at 8 on some CPUs
 * (measured: tag 1 on an AMD EPYC without VAES).
 */
#define RING_KEY_CHACHA 5
#define RING_KEY_ERR 6
#define RING_IDENT_CHACHA 8
#define RING_IDENT_AES 16

static __always_inline __u64 ring_ident(__u64 key)
{
	__u32 tag = RING_KEY_ERR;
	__u64 v = 0;

	bpf_probe_read_user(&tag, sizeof(tag), (void *)key);
	if (tag > RING_KEY_CHACHA)
		return 0;
	bpf_probe_read_user(&v, sizeof(v),
			    (void *)(key + (tag == RING_KEY_CHACHA ? RING_IDENT_CHACHA : RING_IDENT_AES)));
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
	__u64 out;

	if (!p)
		return 0;
	out = p->out;
	ci.conn = p->conn;
	bpf_map_delete_elem(&ring_inits, &id);
	/* 0 for the Err of a failed init */
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
