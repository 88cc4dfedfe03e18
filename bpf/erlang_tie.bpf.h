/* SPDX-License-Identifier: MIT */
/*
 * statictls: Erlang/OTP's ssl (erlang.bpf.h says why), the hand-over of a
 * sealing key's held records when a send ties it (erl_key_state): the tie
 * itself, and the flush that emits them in order. Called by
 * erlang_sock.bpf.h's walk; needs erlang.bpf.h and emit.h before it.
 */

/* A held record of connection `conn` out, from map memory. */
static __always_inline void erl_emit_held(struct erl_held *v, __u64 conn, __u64 id)
{
	struct ssl_data_event *e;
	struct emit_ctx c = {};
	__u64 n = v->len, m;

	if (n == 0 || n > DATA_CHUNK)
		return;
	emit_ctx_init(&c, SSL_EVENT_TYPE_WRITE, conn, n, id);
	if (c.captured == 0)
		return;
	e = bpf_ringbuf_reserve(&data_events, offsetof(struct ssl_data_event, data) + DATA_CHUNK, 0);
	if (!e) {
		count_stat(STAT_DATA_LOST);
		return;
	}
	fill_header(e, &c, 0, c.captured);
	m = c.captured;
	barrier_var(m);
	if (m > DATA_CHUNK)
		m = DATA_CHUNK;
	if (m == 0 || bpf_probe_read_kernel(e->data, m, v->data) != 0) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
	bpf_ringbuf_submit(e, submit_flags());
}

/* A key a send just tied (ERL_FLUSHING): its held records go out. */
struct erl_tied {
	struct erl_key_id k;
	__u64 conn;
	__u32 wanted;
	__u32 _pad;
};

/* A send carried `t`: the key waiting for it is tied to that socket's
 * connection `conn` (`wanted`: captured); `f` names it. */
static __always_inline bool erl_tie_sent(struct erl_tag_key *t, __u64 conn, __u32 wanted,
					 struct erl_tied *f)
{
	struct erl_key_id *kid = bpf_map_lookup_elem(&erl_wait, t);
	struct erl_key *k;
	__u64 w;
	int i;

	if (!kid)
		return false;
	f->k = *kid;
	bpf_map_delete_elem(&erl_wait, t);
	k = bpf_map_lookup_elem(&erl_keys, &f->k);
	if (!k)
		return false;
	f->conn = conn;
	f->wanted = wanted;
	for (i = 0; i < 4; i++) {
		w = k->word;
		if (ERL_STATE(w) != ERL_UNTIED)
			return false;
		k->conn = conn;
		k->wanted = wanted;
		if (__sync_val_compare_and_swap(&k->word, w, ERL_WORD(ERL_FLUSHING, ERL_COUNT(w))) == w)
			return true;
	}
	return false;
}

/* Step `idx` of key `f`'s flush (ERL_FLUSHING): held record `idx` goes
 * out (if wanted) while there is one; past the last, the key becomes
 * ERL_TIED unless one more was held meanwhile. Returns whether the flush
 * goes on. */
static __always_inline bool erl_flush_held(struct erl_tied *f, __u32 idx, __u64 id)
{
	struct erl_held_id h = { .k = f->k, .idx = idx };
	struct erl_key *k = bpf_map_lookup_elem(&erl_keys, &f->k);
	struct erl_held *v;
	__u64 w;
	int i;

	if (!k)
		return false;
	for (i = 0; i < 4; i++) {
		w = k->word;
		if (ERL_STATE(w) != ERL_FLUSHING)
			return false;
		if (idx < ERL_COUNT(w))
			break;
		/* All held records out: a seal from now on emits at once. */
		if (idx >= ERL_HELD_MAX ||
		    __sync_val_compare_and_swap(&k->word, w, ERL_WORD(ERL_TIED, 0)) == w) {
			if (idx >= ERL_HELD_MAX)
				k->word = ERL_WORD(ERL_TIED, 0);
			return false;
		}
	}
	if (i == 4)
		return false;
	v = bpf_map_lookup_elem(&erl_held_recs, &h);
	if (!v) {
		if (f->wanted)
			count_stat(STAT_ERLANG_UNTIED); /* evicted */
		return true;
	}
	if (f->wanted)
		erl_emit_held(v, f->conn, id);
	bpf_map_delete_elem(&erl_held_recs, &h);
	return true;
}

