/* SPDX-License-Identifier: MIT */
/*
 * openssl.bpf.c, OpenSSL's SSL BIO (BIO_f_ssl). Needs openssl.bpf.c's calls
 * (on_entry, on_return_ex) and accept.bpf.h (arm_accept) before it.
 *
 * Its method table's functions (src/inspect/sslbio.rs finds them) call
 * libssl's internal read and write, not SSL_read/SSL_write: probed
 * themselves, with the _ex shape
 *   write(BIO *, const char *buf, size_t n, size_t *written)  -> 1 on success
 *   read(BIO *, char *buf, size_t n, size_t *readbytes)        -> 1 on success
 * so their returns are SSL_write_ex's and SSL_read_ex's programs
 * (sslcalls.bpf.h; src/probes.rs names them).
 * The connection is the BIO's SSL *, seen when it is set:
 *   ctrl(BIO *, BIO_C_SET_SSL, close_flag, SSL *)
 * Should a library's BIO call the exported SSL_*_ex, that inner call
 * replaces the BIO's in active_calls (one per thread) and its return
 * reports the bytes once.
 */
#define BIO_C_SET_SSL 109

struct bio_key {
	__u32 pid;
	__u32 _pad;
	__u64 bio;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct bio_key);
	__type(value, __u64);
} bio_ssl SEC(".maps");

SEC("uprobe.multi")
int BPF_UPROBE(ssl_bio_ctrl_entry, void *bio, int cmd, long larg, void *ssl)
{
	__u64 id = bpf_get_current_pid_tgid(), conn = (__u64)ssl;
	struct bio_key k = { .pid = id >> 32, .bio = (__u64)bio };

	if (cmd != BIO_C_SET_SSL || !ssl || !process_wanted(id >> 32))
		return 0;
	bpf_map_update_elem(&bio_ssl, &k, &conn, BPF_ANY);
	return 0;
}


/* An SSL BIO runs the handshake inside its first reads and writes (no
 * SSL_accept or SSL_do_handshake): a server's ClientHello is read there. */
static __always_inline int on_bio_entry(void *ctx, __u64 bio, __u64 buf, __u64 len_ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct bio_key k = { .pid = id >> 32, .bio = bio };
	__u64 *p = bpf_map_lookup_elem(&bio_ssl, &k), ssl;

	if (!p)
		return 0;
	ssl = *p;
	arm_accept(ssl, id);
	return on_entry(ctx, ssl, buf, len_ptr);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_bio_write_entry, void *bio, const void *buf, __u64 num, __u64 *written)
{
	return on_bio_entry(ctx, (__u64)bio, (__u64)buf, (__u64)written);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_bio_read_entry, void *bio, void *buf, __u64 num, __u64 *readbytes)
{
	return on_bio_entry(ctx, (__u64)bio, (__u64)buf, (__u64)readbytes);
}

