/* SPDX-License-Identifier: MIT */
/*
 * statictls: Erlang/OTP's ssl (docs/erlang.md). ssl builds its records in
 * Erlang and seals / opens each one with one call of the crypto NIF's
 * aead_cipher_nif (crypto.so), which makes these libcrypto calls on its
 * thread: EVP_CipherInit_ex (cipher, direction), EVP_CipherInit_ex (key,
 * nonce), EVP_CipherUpdate (additional data), EVP_CipherUpdate (the
 * record), then EVP_CipherFinal_ex (sealing) or EVP_DecryptFinal_ex
 * (opening: 1 when the tag verified). User space probes those call
 * instructions inside aead_cipher_nif (src/inspect/erlang.rs), never
 * libcrypto itself: no other program pays.
 *
 * The plaintext is exact there; its connection is not (the records go
 * through Erlang processes, ports and other scheduler threads before and
 * after the socket). So a key is tied to its socket by its bytes: the
 * first 16 bytes of a record's payload on the wire are its ciphertext's
 * (TLS 1.3, ChaCha20), or the explicit nonce (the nonce's last 8 bytes)
 * and 8 bytes of ciphertext (TLS 1.2 AES-GCM). The send and receive hooks
 * walk the first records of each TLS socket of an Erlang process
 * (erl_socks, from its ClientHello) and:
 *  - receiving: note each record's 16 bytes (erl_seen); the record is
 *    opened later, and the first one opened under a new key finds its
 *    socket there;
 *  - sending: a record sealed under a key whose socket is not known yet
 *    is held (erl_held_recs, the plaintext copied: TLS 1.3's first
 *    records under a new key are sealed before any of them is sent) and
 *    its 16 bytes noted (erl_wait); the send that carries them ties the
 *    key, and the held records are emitted then, in order.
 * A false tie needs 16 equal bytes of ciphertext: 2^-128. A key never
 * tied emits nothing (counted: STAT_ERLANG_UNTIED). Only AEAD records
 * pass here: CBC suites and AES-CCM take other NIF paths, not probed.
 * This file: the keys, the sockets named by their ClientHello, and the
 * NIF's calls; erlang_tie.bpf.h: the held records handed over at a tie;
 * erlang_sock.bpf.h: the walk of the sockets' records.
 * Needs statictls.bpf.c's shared part (app_data_len), proc.bpf.h
 * (watched_pids), hello.bpf.h (struct sock_key; it calls erl_conn_named)
 * and emit.h before it.
 */

/* watched_pids' value for an Erlang process (user space sets it). */
#define ERL_WATCHED 2
/* Records of each direction of a socket walked at most: the handshake
 * and the first records of each key are among them. */
#define ERL_WALK_MAX 64
/* Bytes compared to tie a key. */
#define ERL_TAG 16
/* Steps of one walk (a record takes 22: header, 16 bytes, the rest). */
#define ERL_STEPS 1024
#define ERL_SEGS 32
#define ERL_HITS 16
/* Keys one send ties at most (a handshake key and an application key). */
#define ERL_TIES 4
/* Records of one key held before its socket is known. */
#define ERL_HELD_MAX 16

enum erl_walk_state { ERL_UNSYNCED = 0, ERL_SYNCED = 1, ERL_DONE = 2 };

static __always_inline bool erl_pid(__u32 pid)
{
	__u8 *v = bpf_map_lookup_elem(&watched_pids, &pid);

	return v && *v == ERL_WATCHED;
}

/* ---- sockets ------------------------------------------------------------- */

/* Where the walk of one direction of a socket is. */
struct erl_dir {
	__u32 left;    /* payload bytes of the current record still to come */
	__u16 records; /* records walked */
	__u8 hdr[8];   /* its header, while read */
	__u8 hdr_have;
	__u8 tag[ERL_TAG]; /* its first payload bytes, while read */
	__u8 tag_have;
	__u8 want_tag;
	__u8 state; /* enum erl_walk_state */
};

struct erl_sock {
	__u64 conn;   /* the connection; 0: one not captured (its name) */
	__u32 wanted; /* its ClientHello passed the filters */
	__u32 _pad;
	struct erl_dir dir[2]; /* 0: sent, 1: received */
};

/* (pid, descriptor) of a TLS socket of an Erlang process -> its walk. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sock_key);
	__type(value, struct erl_sock);
} erl_socks SEC(".maps");

/* Called by on_hello: the ClientHello of a connection of process `pid` on
 * `sock` was sent or received; `wanted`: it is captured, as `conn`. A
 * descriptor reused starts over. */
static __always_inline void erl_conn_named(__u32 pid, __u64 sock, __u64 conn, bool wanted)
{
	struct sock_key k = { .pid = pid, .sock = sock };
	struct erl_sock s = {};

	if (!erl_pid(pid))
		return;
	s.conn = conn;
	s.wanted = wanted;
	bpf_map_update_elem(&erl_socks, &k, &s, BPF_ANY);
}

/* 16 bytes of a record seen on a process's socket. */
struct erl_tag_key {
	__u32 pid;
	__u32 _pad;
	__u8 b[ERL_TAG];
};

struct erl_tie {
	__u64 conn;
	__u32 wanted;
	__u32 _pad;
};

/* Received records' first bytes -> their socket's connection. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct erl_tag_key);
	__type(value, struct erl_tie);
} erl_seen SEC(".maps");

/* A key of a process: its first 16 bytes (fresh random per direction,
 * connection and epoch). */
struct erl_key_id {
	__u32 pid;
	__u32 _pad;
	__u8 key[16];
};

/* Sealed records' first bytes on the wire -> the key sealing them. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct erl_tag_key);
	__type(value, struct erl_key_id);
} erl_wait SEC(".maps");

/*
 * A key's state, one word changed atomically: the state above the low 32
 * bits, the records held below. Sealing runs in one Erlang process at a
 * time (a direction's records are sealed in order), the tie on whichever
 * thread sends; the word hands the records over without loss or reorder:
 *   ERL_UNTIED   sealing holds record `count` (written, then the count
 *                raised by a compare-and-swap);
 *   ERL_FLUSHING the send that tied it emits the held records in order
 *                (and any held meanwhile), then moves to ERL_TIED by a
 *                compare-and-swap that fails if one more was held;
 *   ERL_TIED     sealing emits at once: every held record went before.
 * A seal that finds the word changed under it tries again, a bounded
 * number of times, then counts its record lost.
 */
enum erl_key_state { ERL_UNTIED = 0, ERL_FLUSHING = 1, ERL_TIED = 2 };

#define ERL_STATE(w) ((__u32)((w) >> 32))
#define ERL_COUNT(w) ((__u32)(w))
#define ERL_WORD(state, count) (((__u64)(state) << 32) | (__u32)(count))

struct erl_key {
	__u64 conn;   /* set before the state leaves ERL_UNTIED */
	__u64 word;   /* ERL_WORD(state, held) */
	__u32 wanted; /* its connection is captured */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct erl_key_id);
	__type(value, struct erl_key);
} erl_keys SEC(".maps");

/* A record's plaintext held until its key is tied. */
struct erl_held_id {
	struct erl_key_id k;
	__u32 idx;
	__u32 _pad;
};

struct erl_held {
	__u64 len;
	__u8 data[DATA_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 128); /* 2 MiB */
	__type(key, struct erl_held_id);
	__type(value, struct erl_held);
} erl_held_recs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct erl_held);
} erl_held_scratch SEC(".maps");

/* ---- the NIF's calls --------------------------------------------------- */

/* aead_cipher_nif in flight, by thread: what its calls said so far. */
struct erl_call {
	__u8 key[16];
	__u8 nonce[12];
	__u32 enc; /* sealing */
	__u32 keyed;
	__u32 _pad;
	__u64 aad;
	__u64 aad_len;
	__u64 in;
	__u64 in_len;
	__u64 out;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct erl_call);
} erl_calls SEC(".maps");

static __always_inline struct erl_key *erl_key_of(struct erl_call *c, __u64 id, struct erl_key_id *kid)
{
	const struct erl_key fresh = {};

	kid->pid = id >> 32;
	__builtin_memcpy(kid->key, c->key, 16);
	bpf_map_update_elem(&erl_keys, kid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&erl_keys, kid);
}

/* The bytes the record's payload starts with on the wire, from its
 * ciphertext at `ct`: TLS 1.3 and ChaCha20 (`which` 0: 16 bytes of it),
 * TLS 1.2 AES-GCM (`which` 1: the explicit nonce, then 8 bytes of it). */
static __always_inline bool erl_tag_of(struct erl_call *c, __u64 ct, int which, struct erl_tag_key *t,
				       __u32 pid)
{
	t->pid = pid;
	t->_pad = 0;
	if (which == 0)
		return c->in_len >= ERL_TAG && bpf_probe_read_user(t->b, ERL_TAG, (void *)ct) == 0;
	if (c->aad_len != 13 || c->in_len < 8)
		return false;
	__builtin_memcpy(t->b, &c->nonce[4], 8);
	return bpf_probe_read_user(&t->b[8], 8, (void *)ct) == 0;
}

/* A record being sealed: emitted if its key is tied (and captured), else
 * held (erl_key_state). */
static __always_inline void erl_seal(struct erl_call *c, __u64 id)
{
	struct erl_key_id kid = {};
	struct erl_key *k = erl_key_of(c, id, &kid);
	struct erl_held_id h = {};
	struct erl_held *v;
	__u32 zero = 0;
	__u64 n, m, w;
	int i;

	n = app_data_len(c->aad, c->aad_len, c->in, c->in_len);
	if (!k || !n)
		return;
	if (ERL_STATE(k->word) == ERL_TIED) {
		if (k->wanted)
			emit_data(SSL_EVENT_TYPE_WRITE, c->in, k->conn, n, id);
		return;
	}
	v = bpf_map_lookup_elem(&erl_held_scratch, &zero);
	m = n;
	barrier_var(m);
	if (!v || m > DATA_CHUNK || m == 0 || bpf_probe_read_user(v->data, m, (void *)c->in) != 0) {
		count_stat(STAT_ERLANG_UNTIED);
		return;
	}
	v->len = m;
	h.k = kid;
	for (i = 0; i < 4; i++) {
		w = k->word;
		if (ERL_STATE(w) == ERL_TIED) {
			if (k->wanted)
				emit_data(SSL_EVENT_TYPE_WRITE, c->in, k->conn, n, id);
			return;
		}
		if (ERL_COUNT(w) >= ERL_HELD_MAX)
			break;
		/* Written before it is counted: a flush reads only counted ones. */
		h.idx = ERL_COUNT(w);
		if (bpf_map_update_elem(&erl_held_recs, &h, v, BPF_ANY) != 0)
			break;
		if (__sync_val_compare_and_swap(&k->word, w, w + 1) == w)
			return;
	}
	count_stat(STAT_ERLANG_UNTIED);
}

/* A record being opened under a key not tied yet: its socket noted it. */
static __always_inline void erl_open(struct erl_call *c, __u64 id)
{
	struct erl_key_id kid = {};
	struct erl_key *k = erl_key_of(c, id, &kid);
	struct erl_tag_key t = {};
	struct erl_tie *tie = NULL;
	int which;

	if (!k || ERL_STATE(k->word) != ERL_UNTIED)
		return;
	for (which = 0; which < 2 && !tie; which++)
		if (erl_tag_of(c, c->in, which, &t, id >> 32))
			tie = bpf_map_lookup_elem(&erl_seen, &t);
	if (!tie)
		return;
	/* Opening holds nothing: tied at once. */
	k->conn = tie->conn;
	k->wanted = tie->wanted;
	__sync_val_compare_and_swap(&k->word, ERL_WORD(ERL_UNTIED, 0), ERL_WORD(ERL_TIED, 0));
}

/* EVP_CipherInit_ex(ctx, cipher, engine, key, iv, enc), called in
 * aead_cipher_nif: first with the cipher and the direction, then with the
 * record's key and nonce. */
SEC("uprobe.multi")
int erl_cipher_init(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 cipher = PT_REGS_PARM2(ctx), key = PT_REGS_PARM4(ctx), iv = PT_REGS_PARM5(ctx);
	int enc = (int)PT_REGS_PARM6(ctx);
	struct erl_call fresh = {}, *c;

	if (!erl_pid(id >> 32))
		return 0;
	if (cipher) {
		fresh.enc = enc == 1;
		bpf_map_update_elem(&erl_calls, &id, &fresh, BPF_ANY);
	}
	c = bpf_map_lookup_elem(&erl_calls, &id);
	if (!c || !key || !iv)
		return 0;
	c->keyed = bpf_probe_read_user(c->key, 16, (void *)key) == 0 &&
		   bpf_probe_read_user(c->nonce, 12, (void *)iv) == 0;
	return 0;
}

/* EVP_CipherUpdate(ctx, out, outl, in, inl): the additional data (out
 * NULL), then the record: plaintext in `in` (sealing), ciphertext in `in`
 * and plaintext to come in `out` (opening). */
SEC("uprobe.multi")
int erl_cipher_update(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct erl_call *c = bpf_map_lookup_elem(&erl_calls, &id);
	__u64 out = PT_REGS_PARM2(ctx), in = PT_REGS_PARM4(ctx), len = PT_REGS_PARM5(ctx) & 0xffffffff;

	if (!c || !c->keyed)
		return 0;
	if (!out) {
		c->aad = in;
		c->aad_len = len;
		return 0;
	}
	c->in = in;
	c->in_len = len;
	c->out = out;
	if (c->enc)
		erl_seal(c, id);
	else
		erl_open(c, id);
	return 0;
}

/* EVP_CipherFinal_ex, sealing: the ciphertext is in `out`. A key not tied
 * waits for the send that carries it. */
SEC("uprobe.multi")
int erl_seal_final(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct erl_call *c = bpf_map_lookup_elem(&erl_calls, &id);
	struct erl_key_id kid = {};
	struct erl_tag_key t = {};
	struct erl_key *k;
	int which;

	if (!c)
		return 0;
	if (c->keyed && c->enc && c->out) {
		k = erl_key_of(c, id, &kid);
		for (which = 0; which < 2 && k && ERL_STATE(k->word) == ERL_UNTIED; which++)
			if (erl_tag_of(c, c->out, which, &t, id >> 32))
				bpf_map_update_elem(&erl_wait, &t, &kid, BPF_ANY);
	}
	bpf_map_delete_elem(&erl_calls, &id);
	return 0;
}

/* After EVP_DecryptFinal_ex returned: its result (1 when the tag verified)
 * is in eax, or, where the probe is a few instructions later, eax holds the
 * cookie's value then (src/inspect/erlang.rs, result_point). The plaintext
 * is in `out`, as long as the ciphertext. */
SEC("uprobe.multi")
int erl_open_done(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct erl_call *c = bpf_map_lookup_elem(&erl_calls, &id);
	struct erl_key_id kid = {};
	struct erl_key *k;
	__u64 n;

	if (!c)
		return 0;
	if ((int)PT_REGS_RC(ctx) == (int)bpf_get_attach_cookie(ctx) && c->keyed && !c->enc) {
		n = app_data_len(c->aad, c->aad_len, c->out, c->in_len);
		k = erl_key_of(c, id, &kid);
		if (n && k && ERL_STATE(k->word) == ERL_TIED && k->wanted)
			emit_data(SSL_EVENT_TYPE_READ, c->out, k->conn, n, id);
		else if (n && k && ERL_STATE(k->word) != ERL_TIED)
			count_stat(STAT_ERLANG_UNTIED);
	}
	bpf_map_delete_elem(&erl_calls, &id);
	return 0;
}
