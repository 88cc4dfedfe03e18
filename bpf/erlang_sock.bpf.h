/* SPDX-License-Identifier: MIT */
/*
 * statictls: the socket side of Erlang/OTP's ssl (erlang.bpf.h says why):
 * the send / receive hooks (sendrecv.bpf.h) walk the first records of
 * each TLS socket of an Erlang process, a bounded number of steps per
 * call, and tie the keys erlang.bpf.h saw to the socket whose records
 * carry their ciphertext: receiving at the call's exit, over the bytes
 * read; sending at the call's exit too, over the bytes the kernel took.
 * Needs erlang.bpf.h, erlang_tie.bpf.h and hello.bpf.h (on_hello,
 * hello_scratch) before it.
 */

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

/* A send in flight on a TLS socket of an Erlang process, by thread: walked
 * at its exit, over the bytes the kernel took (after a partial write the
 * rest is sent again, by a later call). */
struct erl_send {
	__u64 sock;
	__u64 iov;
	__u64 cnt;
	__u64 buf;
	__u64 len;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct erl_send);
} erl_sends SEC(".maps");

/* A send of an Erlang process on descriptor `fd` starts: `cnt` segments at
 * `iov`, or (iov 0) `len` bytes at `buf`. A ClientHello names its socket
 * here (a vector's first 4 segments read, where it would be); a TLS
 * socket's send is kept for its exit. */
static __always_inline void erl_on_send(__u64 fd, __u64 iov, __u64 cnt, __u64 buf, __u64 len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct sock_key sk = { .pid = id >> 32, .sock = fd };
	struct erl_send a = { .sock = fd, .iov = iov, .cnt = cnt, .buf = buf, .len = len };
	struct erl_walk *w;
	__u32 zero = 0;

	if (!erl_pid(sk.pid))
		return;
	if (iov && !bpf_map_lookup_elem(&erl_socks, &sk)) {
		w = bpf_map_lookup_elem(&erl_walks, &zero);
		if (!w || !erl_load(w, iov, cnt, 4))
			return;
		erl_hello_sent(w, fd, id);
	}
	if (bpf_map_lookup_elem(&erl_socks, &sk))
		bpf_map_update_elem(&erl_sends, &id, &a, BPF_ANY);
}

/* The send returned `ret`: its first `ret` bytes are walked. */
static __always_inline void erl_send_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct erl_send *p = bpf_map_lookup_elem(&erl_sends, &id);
	struct sock_key sk = { .pid = id >> 32 };
	struct erl_send a;
	struct erl_walk *w;
	__u32 zero = 0, i;
	__u64 left;

	if (!p)
		return;
	a = *p;
	bpf_map_delete_elem(&erl_sends, &id);
	w = bpf_map_lookup_elem(&erl_walks, &zero);
	if (ret <= 0 || !w)
		return;
	sk.sock = a.sock;
	left = ret;
	if (!a.iov) {
		w->base[0] = a.buf;
		w->len[0] = a.len < left ? a.len : left;
		w->nseg = 1;
		erl_walk_run(w, &sk, 0, 0, id);
		return;
	}
	if (!erl_load(w, a.iov, a.cnt, ERL_SEGS))
		return;
	for (i = 0; i < ERL_SEGS && i < w->nseg; i++) {
		if (w->len[i & (ERL_SEGS - 1)] > left)
			w->len[i & (ERL_SEGS - 1)] = left;
		left -= w->len[i & (ERL_SEGS - 1)];
	}
	/* bytes sent past the segments read: the walk cannot follow */
	erl_walk_run(w, &sk, 0, left > 0, id);
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
