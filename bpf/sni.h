/* SPDX-License-Identifier: MIT */
/*
 * Server-name patterns, matched in the kernel.
 *
 * Suffix patterns ("*.acme.com") and exact names ("api.acme.com") live in
 * one LPM trie keyed by the *reversed* lower-case name: "*.acme.com" is the
 * prefix "moc.emca." and matches every name ending in ".acme.com"; an exact
 * name is stored reversed with its terminating NUL, so it matches only
 * itself. Prefix patterns ("api.*") live in a second trie keyed by the name
 * as is. The value is the pattern's id.
 * Needs events.h (MAX_NAME) and filter.h (count_stat) first.
 */
#ifndef PLAINSIGHT_SNI_H
#define PLAINSIGHT_SNI_H

/* Any pattern given at all (else every connection is captured). */
const volatile __u8 sni_filter = 0;
/* Capture connections that never set a server name. */
const volatile __u8 capture_no_sni = 0;

struct name_key {
	__u32 prefixlen; /* in bits */
	__u8 data[MAX_NAME];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct name_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sni_suffixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct name_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sni_prefixes SEC(".maps");

struct sni_scratch {
	struct name_key fwd;
	struct name_key rev;
	char raw[MAX_NAME];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sni_scratch);
} sni_scratch_map SEC(".maps");

/* Clamp an index into [0, MAX_NAME) in a way the compiler cannot drop. */
#define NAME_INDEX(v) asm volatile("%0 &= 255" : "+r"(v))

struct lower_ctx {
	struct sni_scratch *s;
	__u64 len;
};

static int lower_and_reverse(__u32 i, void *data)
{
	struct lower_ctx *c = data;
	__u64 fi = i, ri;
	__u8 ch;

	if (fi >= c->len)
		return 1;
	ri = c->len - 1 - fi;
	NAME_INDEX(fi);
	NAME_INDEX(ri);
	ch = c->s->raw[fi];
	if (ch >= 'A' && ch <= 'Z')
		ch += 'a' - 'A';
	c->s->fwd.data[fi] = ch;
	c->s->rev.data[ri] = ch;
	return 0;
}

/*
 * Matches the name in s->raw (len bytes, len < MAX_NAME) against the
 * patterns: lower-cases it into s->fwd.data (NUL terminated) and sets *rule
 * to the matching pattern's id, 0 for none (ids start at 1).
 */
static __always_inline void sni_match(struct sni_scratch *s, __u64 len, __u32 *rule)
{
	struct lower_ctx c = { .s = s, .len = len };
	__u64 end = len;
	__u32 *v;

	*rule = 0;
	bpf_loop(MAX_NAME, lower_and_reverse, &c, 0);
	NAME_INDEX(end);
	s->fwd.data[end] = 0;
	s->rev.data[end] = 0;
	if (!sni_filter)
		return;
	/* reversed name + NUL: exact entries match whole, suffixes as prefix */
	s->rev.prefixlen = (end + 1) * 8;
	v = bpf_map_lookup_elem(&sni_suffixes, &s->rev);
	if (v) {
		*rule = *v;
		return;
	}
	s->fwd.prefixlen = end * 8;
	v = bpf_map_lookup_elem(&sni_prefixes, &s->fwd);
	if (v)
		*rule = *v;
}

static __always_inline struct sni_scratch *sni_scratch_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sni_scratch_map, &zero);
}

/*
 * Set when a decision could not be stored because its map was full (a
 * process may call SSL_ctrl on as many connections as it likes): a
 * connection missing from the map may then be a non-match that was never
 * remembered, so none is captured as "without a server name" until user
 * space sees room again and clears this (fail closed). The decision maps
 * are plain hashes, not LRU: an eviction would turn a remembered non-match
 * into an undecided connection, captured with capture_no_sni.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sni_overflow SEC(".maps");

static __always_inline bool sni_overflowed(void)
{
	__u32 zero = 0, *v = bpf_map_lookup_elem(&sni_overflow, &zero);

	return v && *v;
}

/* Remembers a connection's decision in `decided`. */
static __always_inline void sni_decide(void *decided, const void *key, __u8 matched)
{
	__u32 zero = 0, *v;

	if (bpf_map_update_elem(decided, key, &matched, BPF_ANY) == 0)
		return;
	count_stat(STAT_SNI_FULL);
	v = bpf_map_lookup_elem(&sni_overflow, &zero);
	if (v)
		*v = 1;
}

/*
 * Is this connection one to capture, as far as the patterns go? Without
 * patterns every one is. `decided` maps the connections whose server name
 * was decided (openssl's conns by SSL *, statictls's go_conns by *tls.Conn)
 * to whether it matched, and `key` is this connection's key in it; one
 * never decided is captured only with capture_no_sni (and no overflow).
 */
static __always_inline bool sni_conn_wanted(void *decided, const void *key)
{
	__u8 *m;

	if (!sni_filter)
		return true;
	m = bpf_map_lookup_elem(decided, key);
	if (!m)
		return capture_no_sni && !sni_overflowed();
	return *m;
}

/*
 * Copies the NUL-terminated user string at `uname` and matches it.
 * Returns the scratch (name in fwd.data) or NULL if unreadable or empty.
 */
static __always_inline struct sni_scratch *match_server_name(const void *uname, __u32 *rule)
{
	struct sni_scratch *s = sni_scratch_get();
	long n;

	*rule = 0;
	if (!s)
		return NULL;
	n = bpf_probe_read_user_str(s->raw, sizeof(s->raw), uname);
	if (n <= 1)
		return NULL;
	sni_match(s, n - 1, rule);
	return s;
}

#endif
