/* SPDX-License-Identifier: MIT */
/*
 * sslcalls: the OpenSSL family's plaintext calls, in every form a library
 * may export (src/probes.rs lists them; inspection probes the ones
 * present). Needs openssl.bpf.c's on_entry / on_return / on_return_ex.
 *
 * OpenSSL 3.3+ implements SSL_write_ex as a call of SSL_write_ex2 with the
 * same buffer and length pointer: the inner call's entry takes the
 * thread's slot over with identical arguments, its return delivers the
 * bytes, and the outer return finds the slot free. One write, one record.
 */

SEC("uprobe.multi")
int BPF_UPROBE(ssl_write_entry, void *ssl, const void *buf, int num)
{
	return on_entry(ctx, (__u64)ssl, (__u64)buf, 0);
}

SEC("uretprobe.multi")
int ssl_write_return(struct pt_regs *ctx)
{
	return on_return(ctx, SSL_EVENT_TYPE_WRITE);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_read_entry, void *ssl, void *buf, int num)
{
	return on_entry(ctx, (__u64)ssl, (__u64)buf, 0);
}

SEC("uretprobe.multi")
int ssl_read_return(struct pt_regs *ctx)
{
	return on_return(ctx, SSL_EVENT_TYPE_READ);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_write_ex_entry, void *ssl, const void *buf, __u64 num, __u64 *written)
{
	return on_entry(ctx, (__u64)ssl, (__u64)buf, (__u64)written);
}

SEC("uretprobe.multi")
int ssl_write_ex_return(struct pt_regs *ctx)
{
	return on_return_ex(ctx, SSL_EVENT_TYPE_WRITE);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_read_ex_entry, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return on_entry(ctx, (__u64)ssl, (__u64)buf, (__u64)readbytes);
}

SEC("uretprobe.multi")
int ssl_read_ex_return(struct pt_regs *ctx)
{
	return on_return_ex(ctx, SSL_EVENT_TYPE_READ);
}

SEC("uprobe.multi")
int BPF_UPROBE(ssl_write_ex2_entry, void *ssl, const void *buf, __u64 num, __u64 flags,
	       __u64 *written)
{
	return on_entry(ctx, (__u64)ssl, (__u64)buf, (__u64)written);
}
