/* SPDX-License-Identifier: MIT */
/*
 * What the capture objects (openssl, statictls) put on their data ring
 * buffer: plaintext, one call's bytes chunked into DATA_CHUNK records
 * (bpf_loop); the SNI event of a connection; its close. Needs events.h,
 * filter.h (count_stat) and sni.h (struct sni_scratch) first.
 */
#ifndef PLAINSIGHT_EMIT_H
#define PLAINSIGHT_EMIT_H

/* Bytes copied per call at most; more is flagged DATA_FLAG_TRUNCATED. */
const volatile __u32 max_capture = 4 << 20;
/* Wake the reader per record (0) or let it poll (BPF_RB_NO_WAKEUP). */
const volatile __u32 wakeup_flags = 0;
/* Unread bytes from which every record wakes the reader (0: never): a
 * polling reader is called in before the ring fills. */
const volatile __u64 wake_at = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 32 * 1024 * 1024);
} data_events SEC(".maps");

/* The flags a record is submitted with. */
static __always_inline __u64 submit_flags(void)
{
	if (wake_at && bpf_ringbuf_query(&data_events, BPF_RB_AVAIL_DATA) >= wake_at)
		return BPF_RB_FORCE_WAKEUP;
	return wakeup_flags;
}

/* The names of the cgroups records came from, by id, written the first
 * time one is seen: the process (and its cgroup) may be gone when user
 * space reads the records. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct cgroup_name);
} cgroup_names SEC(".maps");

/* The cgroup each CPU noted last: a run of records from one cgroup (the
 * usual case) looks cgroup_names up once. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_cgroup SEC(".maps");

/* The current task's cgroup (v2) id, its name noted in cgroup_names. */
static __always_inline __u64 note_cgroup(void)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct cgroup_name *n;
	struct task_struct *t;
	static const struct cgroup_name empty = {};
	__u32 zero = 0;
	__u64 *last = bpf_map_lookup_elem(&last_cgroup, &zero);

	if (last && *last == cg)
		return cg;
	if (bpf_map_lookup_elem(&cgroup_names, &cg)) {
		if (last)
			*last = cg;
		return cg;
	}
	bpf_map_update_elem(&cgroup_names, &cg, &empty, BPF_NOEXIST);
	n = bpf_map_lookup_elem(&cgroup_names, &cg);
	if (!n)
		return cg;
	t = (struct task_struct *)bpf_get_current_task();
	bpf_probe_read_kernel_str(n->name, sizeof(n->name), BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, name));
	return cg;
}

struct emit_ctx {
	__u64 buf;
	__u64 conn;
	__u64 cgroup;
	__u64 ts_ns;
	__u64 id;
	__u32 type;
	__u32 len;
	__u32 captured;
	__u32 flags;
};

static __always_inline void fill_header(struct ssl_data_event *e, struct emit_ctx *c, __u64 off, __u64 n)
{
	e->type = c->type;
	e->pid = c->id >> 32;
	e->tid = (__u32)c->id;
	e->flags = c->flags;
	e->ts_ns = c->ts_ns;
	e->conn = c->conn;
	e->cgroup = c->cgroup;
	e->len = c->len;
	e->captured = c->captured;
	e->offset = off;
	e->chunk_len = n;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

/* Reserve a record with room for SIZE bytes, read n (<= SIZE) into it. */
#define EMIT_CLASS(SIZE)                                                                   \
	do {                                                                               \
		e = bpf_ringbuf_reserve(&data_events,                                      \
					offsetof(struct ssl_data_event, data) + (SIZE), 0); \
		if (!e) {                                                                  \
			count_stat(STAT_DATA_LOST);                                        \
			return 0;                                                          \
		}                                                                          \
		fill_header(e, c, off, n);                                                 \
		/* Clamp where every verifier sees it (6.1's loses the branch bound). */  \
		m = n;                                                                     \
		barrier_var(m);                                                            \
		if (m > (SIZE))                                                            \
			m = (SIZE);                                                        \
		if (bpf_probe_read_user(e->data, m, (void *)(c->buf + off)) != 0) {        \
			count_stat(STAT_READ_FAILED);                                      \
			bpf_ringbuf_discard(e, 0);                                         \
			return 1;                                                          \
		}                                                                          \
		bpf_ringbuf_submit(e, submit_flags());                                     \
	} while (0)

static int emit_chunk(__u32 index, void *data)
{
	struct emit_ctx *c = data;
	struct ssl_data_event *e;
	__u64 off, n, m;

	if (index >= MAX_CHUNKS)
		return 1;
	off = (__u64)index * DATA_CHUNK;
	if (off >= c->captured)
		return 1;
	n = c->captured - off;
	if (n > DATA_CHUNK)
		n = DATA_CHUNK;
	/* n is in [1, DATA_CHUNK]; say so in a form the verifier can follow. */
	n = ((n - 1) & (DATA_CHUNK - 1)) + 1;

	/*
	 * Reserve ring space of a size class that fits (sizes must be constants)
	 * and read the user's bytes straight into it: one copy.
	 */
	if (n <= 256)
		EMIT_CLASS(256);
	else if (n <= 1024)
		EMIT_CLASS(1024);
	else if (n <= 4096)
		EMIT_CLASS(4096);
	else
		EMIT_CLASS(DATA_CHUNK);
	return 0;
}

/* What every record of `len` plaintext bytes of connection `conn` says:
 * its header fields, and `captured`, cut at max_capture. */
static __always_inline void emit_ctx_init(struct emit_ctx *c, __u32 type, __u64 conn, __u64 len,
					  __u64 id)
{
	c->conn = conn;
	c->cgroup = note_cgroup();
	c->ts_ns = bpf_ktime_get_ns();
	c->id = id;
	c->type = type;
	c->len = len;
	c->captured = len;
	if (c->captured > max_capture) {
		c->captured = max_capture;
		c->flags |= DATA_FLAG_TRUNCATED;
	}
}

/* Copies `len` bytes of plaintext at user address `buf` to the ring buffer
 * as SSL_EVENT_TYPE_WRITE/READ chunks of connection `conn`. */
static __always_inline void emit_data(__u32 type, __u64 buf, __u64 conn, __u64 len, __u64 id)
{
	struct emit_ctx c = {};
	__u32 chunks;

	if (len == 0 || len > 0x7fffffff)
		return;
	c.buf = buf;
	emit_ctx_init(&c, type, conn, len, id);
	chunks = (c.captured + DATA_CHUNK - 1) / DATA_CHUNK;
	/* Most calls fit one chunk: no loop helper for them. */
	if (chunks == 1)
		emit_chunk(0, &c);
	else
		bpf_loop(chunks, emit_chunk, &c, 0);
}

/*
 * SNI_CONFIGURED (openssl) / SNI_SENT (statictls): connection `conn` will be
 * captured. Its server name, lower case, is in s->fwd.data when `named`
 * (else it sent none); `rule` is the pattern it matched (0: no patterns
 * given, or no name and capture_no_sni).
 */
static __always_inline void emit_sni(__u32 type, __u64 conn, __u32 rule, struct sni_scratch *s,
				     bool named, __u64 id)
{
	struct sni_event *e = bpf_ringbuf_reserve(&data_events, sizeof(*e), 0);

	if (!e) {
		count_stat(STAT_DATA_LOST);
		return;
	}
	e->type = type;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->rule = rule;
	e->ts_ns = bpf_ktime_get_ns();
	e->conn = conn;
	e->cgroup = note_cgroup();
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	/* A flag, not a NULL `s`: clang may turn "cond ? s : NULL" into
	 * arithmetic that 6.1's verifier no longer sees as a pointer. */
	if (named)
		__builtin_memcpy(e->name, s->fwd.data, MAX_NAME);
	else
		e->name[0] = 0;
	bpf_ringbuf_submit(e, submit_flags());
}

/* SSL_EVENT_TYPE_CLOSE: the library let go of connection `conn`. */
static __always_inline void emit_close(__u64 conn, __u64 id)
{
	struct ssl_close_event *e = bpf_ringbuf_reserve(&data_events, sizeof(*e), 0);

	if (!e) {
		count_stat(STAT_DATA_LOST);
		return;
	}
	e->type = SSL_EVENT_TYPE_CLOSE;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->_pad = 0;
	e->ts_ns = bpf_ktime_get_ns();
	e->conn = conn;
	e->cgroup = note_cgroup();
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, submit_flags());
}

#endif
