/* SPDX-License-Identifier: MIT */
/*
 * openssl.bpf.c, wolfSSL's server name. Needs openssl.bpf.c's
 * on_server_name before it.
 *
 * wolfSSL's data calls have OpenSSL's shapes and use OpenSSL's programs
 * (src/probes.rs): wolfSSL_write/read(ssl, buf, int) -> bytes, _ex(ssl,
 * buf, size_t, size_t *) -> 1; its end wolfSSL_free(ssl). Only the server
 * name differs: wolfSSL_UseSNI(ssl, type, data, size) takes a length, no
 * NUL; wolfSSL_set_tlsext_host_name (and wolfSSL_ctrl(55) of the
 * compatibility layer) call it through the PLT, so this one probe sees
 * every name a connection is given.
 */

#define WOLFSSL_SNI_HOST_NAME 0

SEC("uprobe.multi")
int BPF_UPROBE(wolfssl_use_sni_entry, void *ssl, __u8 type, const void *data, __u16 size)
{
	if (type != WOLFSSL_SNI_HOST_NAME)
		return 0;
	return on_server_name(ctx, (__u64)ssl, data, size);
}
