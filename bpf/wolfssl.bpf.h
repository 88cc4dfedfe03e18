/* SPDX-License-Identifier: MIT */
/*
 * openssl.bpf.c, wolfSSL's server name. Needs openssl.bpf.c's calls
 * (decide_name, on_free), accept.bpf.h's on_handshake and mbedtls.bpf.h's
 * kept_name before it.
 *
 * wolfSSL's data calls have OpenSSL's shapes and use OpenSSL's programs
 * (src/probes.rs). Its server name differs: wolfSSL_UseSNI(ssl, type, data,
 * size) takes a length, and both sides call it. A client names the server
 * it sends the name to; a server names the one name it accepts, while its
 * client may send another (WOLFSSL_SNI_CONTINUE_ON_MISMATCH). So the name
 * is kept until the handshake tells the side: wolfSSL_connect makes it the
 * connection's configured name, wolfSSL_accept drops it (the server's name
 * comes from the ClientHello it reads). wolfSSL_negotiate and
 * wolfSSL_set_tlsext_host_name call these functions through the PLT: the
 * probes see them.
 */

#define WOLFSSL_SNI_HOST_NAME 0

/* (pid, WOLFSSL *) -> the name wolfSSL_UseSNI gave it, until its handshake
 * starts. Bounded (LRU); deleted at the handshake and at wolfSSL_free. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct conn_key);
	__type(value, struct kept_name);
} wolfssl_names SEC(".maps");

/* wolfSSL_UseSNI(ssl, type, data, size) */
SEC("uprobe.multi")
int BPF_UPROBE(wolfssl_use_sni_entry, void *ssl, __u8 type, const void *data, __u16 size)
{
	struct conn_key k = { .pid = bpf_get_current_pid_tgid() >> 32, .ssl = (__u64)ssl };
	struct kept_name *kept;
	__u64 n = size;

	if (type != WOLFSSL_SNI_HOST_NAME || !ssl || !data || !process_wanted(k.pid))
		return 0;
	if (n == 0 || n >= MAX_NAME)
		return 0;
	kept = bpf_map_lookup_elem(&wolfssl_names, &k);
	if (!kept && bpf_map_update_elem(&wolfssl_names, &k, &kept_name_none, BPF_ANY) == 0)
		kept = bpf_map_lookup_elem(&wolfssl_names, &k);
	if (!kept)
		return 0;
	NAME_INDEX(n);
	if (bpf_probe_read_user(kept->name, n, data) != 0) {
		bpf_map_delete_elem(&wolfssl_names, &k);
		return 0;
	}
	kept->len = n;
	return 0;
}

/* wolfSSL_connect(ssl), wolfSSL_connect_TLSv13(ssl): a client's handshake;
 * the name it was given is the connection's. */
SEC("uprobe.multi")
int BPF_UPROBE(wolfssl_connect_entry, void *ssl)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = (__u64)ssl };
	struct kept_name *kept = bpf_map_lookup_elem(&wolfssl_names, &k);
	struct sni_scratch *s;
	__u64 n;

	if (!kept)
		return 0;
	n = kept->len;
	s = sni_scratch_get();
	if (s && n > 0 && n < MAX_NAME)
		__builtin_memcpy(s->raw, kept->name, MAX_NAME);
	bpf_map_delete_elem(&wolfssl_names, &k);
	if (!s || n == 0 || n >= MAX_NAME)
		return 0;
	return decide_name((__u64)ssl, s, n, SNI_CONFIGURED, id, bpf_get_attach_cookie(ctx));
}

/* wolfSSL_accept(ssl), wolfSSL_accept_TLSv13(ssl): a server's handshake;
 * its name comes from the ClientHello. */
SEC("uprobe.multi")
int BPF_UPROBE(wolfssl_accept_entry, void *ssl)
{
	struct conn_key k = { .pid = bpf_get_current_pid_tgid() >> 32, .ssl = (__u64)ssl };

	bpf_map_delete_elem(&wolfssl_names, &k);
	return on_handshake(ctx, ssl);
}

/* wolfSSL_free(ssl): the connection's end. */
SEC("uprobe.multi")
int BPF_UPROBE(wolfssl_free_entry, void *ssl)
{
	struct conn_key k = { .pid = bpf_get_current_pid_tgid() >> 32, .ssl = (__u64)ssl };

	bpf_map_delete_elem(&wolfssl_names, &k);
	return on_free(ssl);
}
