/* SPDX-License-Identifier: MIT */
/*
 * statictls: the socket side of Erlang/OTP's ssl (erlang.bpf.h says why):
 * the send / receive hooks (sendrecv.bpf.h) walk the first records of
 * each TLS socket of an Erlang process, a bounded number of steps per
 * call, and tie the keys erlang.bpf.h saw to the socket whose records
 * carry their ciphertext. Needs erlang.bpf.h and hello.bpf.h (on_hello,
 * hello_scratch) before it.
 */

/* ---- tying a sealing key ----------------------------------------------- */

/* A held record of connection `conn` out, from map memory. */
static __always_inline void erl_emit_held(struct erl_held *v, __u64 conn, __u64 id)
{
	struct ssl_data_event *e;
	struct emit_ctx c = {};
	__u64 n = v->len, m;

	if (n == 0 || n > DATA_CHUNK)
		return;
	c.conn = conn;
	c.cgroup = note_cgroup();
	c.ts_ns = bpf_ktime_get_ns();
	c.id = id;
	c.type = SSL_EVENT_TYPE_WRITE;
	c.len = n;
	c.captured = n;
	if (c.captured > max_capture) {
		c.captured = max_capture;
		c.flags |= DATA_FLAG_TRUNCATED;
	}
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

/* ---- the walk ------------------------------------------------------------ */

/* One walk: the segments of a send or the buffer of a receive. Per CPU (no
 * room on the stack); the walk runs to its end in one program. */
struct erl_walk {
	__u64 base[ERL_SEGS];
	__u64 len[ERL_SEGS];
	__u32 nseg;
	__u32 seg;
	__u64 pos;
	__u32 nhits;
	__u32 _pad;
	struct erl_dir d;
	struct erl_tag_key hits[ERL_HITS];
	__u32 nties;
	__u32 _pad2;
	struct erl_tied ties[ERL_TIES]; /* keys a send tied */
	__u8 done[ERL_TIES];            /* their flushes over */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct erl_walk);
} erl_walks SEC(".maps");

/* A record header: TLS's content types (20-24), version 3.x, a length
 * TLS allows (2^14 + 2048). Anything else: the walk lost the stream. */
static __always_inline bool erl_header_ok(const __u8 *h)
{
	__u32 len = ((__u32)h[3] << 8) | h[4];

	return h[0] >= 20 && h[0] <= 24 && h[1] == 3 && len <= 18432;
}

/* One step of a walk: a header byte, a tag byte, or a skip. */
static int erl_step(__u32 i, void *unused)
{
	__u32 zero = 0, seg;
	struct erl_walk *w = bpf_map_lookup_elem(&erl_walks, &zero);
	struct erl_dir *d;
	__u64 base, len, n;
	__u8 b = 0;

	if (!w)
		return 1;
	d = &w->d;
	seg = w->seg;
	if (seg >= w->nseg || seg >= ERL_SEGS || d->state != ERL_SYNCED)
		return 1;
	barrier_var(seg);
	seg &= ERL_SEGS - 1;
	base = w->base[seg];
	len = w->len[seg];
	if (w->pos >= len) {
		w->seg = seg + 1;
		w->pos = 0;
		return 0;
	}
	if (d->hdr_have < 5) {
		if (d->records >= ERL_WALK_MAX) {
			d->state = ERL_DONE;
			return 1;
		}
		if (bpf_probe_read_user(&b, 1, (void *)(base + w->pos)) != 0)
			goto lost;
		d->hdr[d->hdr_have & 7] = b;
		d->hdr_have++;
		w->pos++;
		if (d->hdr_have < 5)
			return 0;
		if (!erl_header_ok(d->hdr))
			goto lost;
		d->left = ((__u32)d->hdr[3] << 8) | d->hdr[4];
		d->records++;
		d->tag_have = 0;
		d->want_tag = d->left >= ERL_TAG;
		if (d->left == 0)
			d->hdr_have = 0;
		return 0;
	}
	if (d->want_tag && d->tag_have < ERL_TAG) {
		if (bpf_probe_read_user(&b, 1, (void *)(base + w->pos)) != 0)
			goto lost;
		d->tag[d->tag_have & (ERL_TAG - 1)] = b;
		d->tag_have++;
		w->pos++;
		d->left--;
		if (d->tag_have == ERL_TAG && w->nhits < ERL_HITS) {
			__builtin_memcpy(w->hits[w->nhits & (ERL_HITS - 1)].b, d->tag, ERL_TAG);
			w->nhits++;
		}
		if (d->left == 0)
			d->hdr_have = 0;
		return 0;
	}
	n = len - w->pos;
	if (n > d->left)
		n = d->left;
	w->pos += n;
	d->left -= n;
	if (d->left == 0)
		d->hdr_have = 0;
	return 0;
lost:
	d->state = ERL_DONE;
	return 1;
}


struct erl_hits_ctx {
	__u64 conn;
	__u32 wanted;
	__u32 pid;
	__u32 sent;
	__u32 _pad;
};

/* One record's tag of a walk: ties the key waiting for it (sent), or is
 * noted for the key that opens it (received). */
static int erl_hit(__u32 i, void *data)
{
	struct erl_hits_ctx *c = data;
	__u32 zero = 0, k;
	struct erl_walk *w = bpf_map_lookup_elem(&erl_walks, &zero);
	struct erl_tag_key t = {};
	struct erl_tie tie = {};

	if (!w || i >= w->nhits || i >= ERL_HITS)
		return 1;
	/* masked behind a barrier: clang drops a mask it proves redundant,
	 * and the verifier loses the check above on a copy of i */
	k = i;
	barrier_var(k);
	k &= ERL_HITS - 1;
	__builtin_memcpy(t.b, w->hits[k].b, ERL_TAG);
	t.pid = c->pid;
	if (c->sent) {
		k = w->nties;
		barrier_var(k);
		if (k < ERL_TIES && erl_tie_sent(&t, c->conn, c->wanted, &w->ties[k & (ERL_TIES - 1)]))
			w->nties = k + 1;
		return 0;
	}
	tie.conn = c->conn;
	tie.wanted = c->wanted;
	bpf_map_update_elem(&erl_seen, &t, &tie, BPF_ANY);
	return 0;
}

/* Step i of the flushes of the keys a send tied: key i / (HELD_MAX + 1),
 * step i % (HELD_MAX + 1) (one loop, not one per key: loops in loops cost
 * stack). */
static int erl_flush_step(__u32 i, void *data)
{
	__u32 zero = 0, j = i / (ERL_HELD_MAX + 1), idx = i % (ERL_HELD_MAX + 1);
	struct erl_walk *w = bpf_map_lookup_elem(&erl_walks, &zero);

	if (!w || j >= w->nties || j >= ERL_TIES)
		return 1;
	barrier_var(j);
	j &= ERL_TIES - 1;
	if (w->done[j])
		return 0;
	if (!erl_flush_held(&w->ties[j], idx, *(__u64 *)data))
		w->done[j] = 1;
	return 0;
}

/* Walks the segments in `w` of socket `sk`, direction `dir` (0 sent, 1
 * received). A direction starts at a send / receive that begins with a
 * handshake record (the ClientHello, the ServerHello); a walk that cannot
 * follow the stream (more segments than it reads, steps run out, bytes
 * that are no record) stops for good: keys of later epochs stay untied. */
static __always_inline void erl_walk_run(struct erl_walk *w, struct sock_key *sk, __u32 dir,
					 __u32 truncated, __u64 id)
{
	struct erl_sock *s = bpf_map_lookup_elem(&erl_socks, sk);
	struct erl_hits_ctx c = {};
	struct erl_dir *d;
	__u64 at = w->base[0];
	__u8 first = 0;

	if (!s)
		return;
	d = &s->dir[dir & 1];
	if (d->state == ERL_DONE)
		return;
	if (d->state == ERL_UNSYNCED) {
		if (w->len[0] == 0 && w->nseg > 1)
			at = w->base[1];
		if (bpf_probe_read_user(&first, 1, (void *)at) != 0 || first != TLS_HANDSHAKE)
			return;
		__builtin_memset(d, 0, sizeof(*d));
		d->state = ERL_SYNCED;
	}
	w->d = *d;
	w->seg = 0;
	w->pos = 0;
	w->nhits = 0;
	bpf_loop(ERL_STEPS, erl_step, NULL, 0);
	if (truncated || (w->d.state == ERL_SYNCED && w->seg < w->nseg))
		w->d.state = ERL_DONE;
	*d = w->d;
	c.conn = s->conn;
	c.wanted = s->wanted;
	c.pid = sk->pid;
	c.sent = dir == 0;
	w->nties = 0;
	bpf_loop(ERL_HITS, erl_hit, &c, 0);
	if (w->nties) {
		__builtin_memset(w->done, 0, sizeof(w->done));
		bpf_loop(ERL_TIES * (ERL_HELD_MAX + 1), erl_flush_step, &id, 0);
	}
}

/* Room to gather a ClientHello from segments: any offset below HELLO_MAX
 * plus any length up to HELLO_MAX fits, as the verifier needs. */
struct erl_gather {
	__u8 b[2 * HELLO_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct erl_gather);
} erl_gathers SEC(".maps");

/* OTP writes a record as several segments, cut anywhere (measured: an
 * empty one, then the record header and the handshake header, then the
 * rest): the ClientHello's first HELLO_MAX bytes are gathered for
 * on_hello. A first segment of 48 bytes or more was parsed by on_send. */
static __always_inline void erl_hello_sent(struct erl_walk *w, __u64 fd, __u64 id)
{
	struct hello_buf *h;
	struct erl_gather *g;
	__u32 zero = 0, i;
	__u64 off = 0, n;

	if (w->len[0] >= 48 || w->nseg < 2)
		return;
	g = bpf_map_lookup_elem(&erl_gathers, &zero);
	h = bpf_map_lookup_elem(&hello_scratch, &zero);
	if (!g || !h)
		return;
	for (i = 0; i < 4 && i < w->nseg; i++) {
		n = w->len[i];
		if (n == 0)
			continue;
		if (n > HELLO_MAX - off)
			n = HELLO_MAX - off;
		n = ((n - 1) & (HELLO_MAX - 1)) + 1;
		if (bpf_probe_read_user(&g->b[off & (HELLO_MAX - 1)], n, (void *)w->base[i]) != 0)
			return;
		off += n;
		if (off >= HELLO_MAX)
			break;
	}
	if (off < 48 || g->b[0] != TLS_HANDSHAKE || g->b[1] != 3 || g->b[5] != HS_CLIENT_HELLO)
		return;
	if (bpf_probe_read_kernel(h->b, HELLO_MAX, g->b) != 0)
		return;
	on_hello(h, off, id, fd, false);
}

/* A send of an Erlang process on descriptor `fd`: `cnt` segments at `iov`,
 * or (iov 0) `len` bytes at `buf`. */
/* Loads up to `max` segments of the vector at `iov` into `w`. */
static __always_inline bool erl_load(struct erl_walk *w, __u64 iov, __u64 cnt, __u32 max)
{
	struct iovec v = {};
	__u32 i;

	for (i = 0; i < ERL_SEGS && i < max && i < cnt; i++) {
		if (bpf_probe_read_user(&v, sizeof(v), (void *)(iov + i * sizeof(v))) != 0)
			return false;
		w->base[i & (ERL_SEGS - 1)] = (__u64)v.iov_base;
		w->len[i & (ERL_SEGS - 1)] = v.iov_len;
	}
	w->nseg = i;
	return true;
}

/* A send of an Erlang process on descriptor `fd`: `cnt` segments at `iov`,
 * or (iov 0) `len` bytes at `buf`. A descriptor that is no TLS socket of
 * the process costs a lookup and, for a vector, the first 4 segments read
 * (where a ClientHello would be). */
static __always_inline void erl_on_send(__u64 fd, __u64 iov, __u64 cnt, __u64 buf, __u64 len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct sock_key sk = { .pid = id >> 32, .sock = fd };
	struct erl_walk *w;
	__u32 zero = 0;

	if (!erl_pid(sk.pid))
		return;
	w = bpf_map_lookup_elem(&erl_walks, &zero);
	if (!w)
		return;
	if (!iov) {
		w->base[0] = buf;
		w->len[0] = len;
		w->nseg = 1;
	} else if (!bpf_map_lookup_elem(&erl_socks, &sk)) {
		if (!erl_load(w, iov, cnt, 4))
			return;
		erl_hello_sent(w, fd, id);
		if (!bpf_map_lookup_elem(&erl_socks, &sk) || !erl_load(w, iov, cnt, ERL_SEGS))
			return;
	} else if (!erl_load(w, iov, cnt, ERL_SEGS)) {
		return;
	}
	erl_walk_run(w, &sk, 0, cnt > ERL_SEGS, id);
}

/* A receive in flight of an Erlang process, by thread. */
struct erl_recv {
	__u64 sock;
	__u64 buf;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct erl_recv);
} erl_recvs SEC(".maps");

static __always_inline void erl_recv_enter(__u64 fd, __u64 buf)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct erl_recv r = { .sock = fd, .buf = buf };

	if (erl_pid(id >> 32))
		bpf_map_update_elem(&erl_recvs, &id, &r, BPF_ANY);
}

/* After on_recv_exit: a server's ClientHello has named its socket. */
static __always_inline void erl_recv_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct erl_recv *r = bpf_map_lookup_elem(&erl_recvs, &id);
	struct sock_key sk = { .pid = id >> 32 };
	struct erl_walk *w;
	__u32 zero = 0;
	__u64 buf;

	if (!r)
		return;
	sk.sock = r->sock;
	buf = r->buf;
	bpf_map_delete_elem(&erl_recvs, &id);
	w = bpf_map_lookup_elem(&erl_walks, &zero);
	if (ret <= 0 || !w)
		return;
	w->base[0] = buf;
	w->len[0] = ret;
	w->nseg = 1;
	erl_walk_run(w, &sk, 1, 0, id);
}
