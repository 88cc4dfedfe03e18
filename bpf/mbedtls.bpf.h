/* SPDX-License-Identifier: MIT */
/*
 * openssl.bpf.c, mbedTLS's contexts reused for another connection. Needs
 * openssl.bpf.c's calls (decide_name, on_free) before it.
 *
 * mbedtls_ssl_session_reset(ssl) ends the context's connection and makes it
 * ready for the next one, "retaining all application-set variables": the
 * host name of mbedtls_ssl_set_hostname stays, and the next connection
 * sends it without another call. So the reset ends the connection (close
 * record, its socket forgotten, as mbedtls_ssl_free), then names the next
 * one with the name the program set, decided and reported again. A name a
 * server received is not kept: its next ClientHello names the next one.
 * The data calls and the handshake use OpenSSL's programs (src/probes.rs).
 */

/* A host name a program set, kept for later (here: the context's next
 * connections; wolfssl.bpf.h: the handshake that tells the side). */
struct kept_name {
	__u64 len;
	char name[MAX_NAME];
};

/* An entry's first value, filled in place (too large for the stack). */
const struct kept_name kept_name_none = {};

/* (pid, mbedtls_ssl_context *) -> the host name set on it. Bounded (LRU):
 * a context evicted while in use names no later connection after a reset.
 * Deleted at mbedtls_ssl_free. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct conn_key);
	__type(value, struct kept_name);
} mbedtls_names SEC(".maps");

/* mbedtls_ssl_set_hostname(ssl, hostname): NUL-terminated; NULL clears it. */
SEC("uprobe.multi")
int BPF_UPROBE(mbedtls_set_hostname_entry, void *ssl, const char *hostname)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = (__u64)ssl };
	struct sni_scratch *s;
	struct kept_name *kept;
	long n;

	if (!ssl || !process_wanted(k.pid))
		return 0;
	if (!hostname) {
		bpf_map_delete_elem(&mbedtls_names, &k);
		return 0;
	}
	s = sni_scratch_get();
	if (!s)
		return 0;
	n = bpf_probe_read_user_str(s->raw, sizeof(s->raw), hostname);
	if (n <= 1)
		return 0;
	n -= 1;
	/* Kept before decide_name: matching rewrites the scratch's keys only. */
	kept = bpf_map_lookup_elem(&mbedtls_names, &k);
	if (!kept && bpf_map_update_elem(&mbedtls_names, &k, &kept_name_none, BPF_ANY) == 0)
		kept = bpf_map_lookup_elem(&mbedtls_names, &k);
	if (kept) {
		__builtin_memcpy(kept->name, s->raw, MAX_NAME);
		kept->len = n;
	}
	return decide_name((__u64)ssl, s, n, SNI_CONFIGURED, id, bpf_get_attach_cookie(ctx));
}

/* mbedtls_ssl_session_reset(ssl): the connection ends, the next one on the
 * context has the name the program set, if any. */
SEC("uprobe.multi")
int BPF_UPROBE(mbedtls_reset_entry, void *ssl)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = (__u64)ssl };
	struct kept_name *kept;
	struct sni_scratch *s;
	__u64 n;

	on_free(ssl);
	if (!ssl || !process_wanted(k.pid))
		return 0;
	kept = bpf_map_lookup_elem(&mbedtls_names, &k);
	s = sni_scratch_get();
	if (!kept || !s)
		return 0;
	n = kept->len;
	if (n == 0 || n >= MAX_NAME)
		return 0;
	__builtin_memcpy(s->raw, kept->name, MAX_NAME);
	return decide_name((__u64)ssl, s, n, SNI_CONFIGURED, id, bpf_get_attach_cookie(ctx));
}

/* mbedtls_ssl_free(ssl): the connection's end, and the context's. */
SEC("uprobe.multi")
int BPF_UPROBE(mbedtls_free_entry, void *ssl)
{
	struct conn_key k = { .pid = bpf_get_current_pid_tgid() >> 32, .ssl = (__u64)ssl };

	bpf_map_delete_elem(&mbedtls_names, &k);
	return on_free(ssl);
}
