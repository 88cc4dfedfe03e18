/* SPDX-License-Identifier: MIT */
/*
 * A server receiving its client's ClientHello, seen in the read that
 * returns it: the receive side of hello_parse.bpf.h, shared by openssl.bpf.c
 * (OpenSSL-family and GnuTLS servers) and statictls (rustls and Go servers).
 *
 * OpenSSL reads a record's 5-byte header and its body in two reads (unless
 * read-ahead is on), so a read that returns only a handshake record's header
 * keeps it, and the next read on that thread is taken as the body.
 * Needs hello_parse.bpf.h before it.
 */
#ifndef PLAINSIGHT_HELLO_RX_H
#define PLAINSIGHT_HELLO_RX_H

#define TLS_RECORD_HEADER 5

/* A read in flight on a thread that may receive a ClientHello. */
struct hello_rx {
	__u64 buf;  /* the read's buffer (user memory) */
	__u64 conn; /* the caller's connection (openssl: SSL *); 0 if none yet */
	__u8 hdr[TLS_RECORD_HEADER]; /* a handshake record header read alone */
	__u8 have_hdr;
	__u8 armed; /* the thread waits for a ClientHello */
	__u8 _pad;
};

enum hello_rx_result {
	RX_NONE = 0,  /* no ClientHello: the thread is done waiting */
	RX_MORE = 1,  /* a record header alone: the body comes next */
	RX_HELLO = 2, /* `h` holds the first `*n` bytes of a ClientHello record */
};

/*
 * A read of `ret` bytes into rx->buf returned. Puts a ClientHello record (its
 * header first, also when it was read alone before) into `h`.
 */
static __always_inline int hello_rx_exit(struct hello_rx *rx, long ret, struct hello_buf *h,
					 __u32 *n)
{
	__u8 hdr[6];
	__u64 len;

	if (ret <= 0)
		return RX_NONE;
	if (rx->have_hdr) {
		/* the body of the handshake record whose header came alone */
		if (bpf_probe_read_user(hdr, 1, (void *)rx->buf) != 0 || hdr[0] != HS_CLIENT_HELLO)
			return RX_NONE;
		__builtin_memcpy(h->b, rx->hdr, TLS_RECORD_HEADER);
		len = ret;
		if (len > HELLO_MAX - TLS_RECORD_HEADER)
			len = HELLO_MAX - TLS_RECORD_HEADER;
		if (bpf_probe_read_user(&h->b[TLS_RECORD_HEADER], len, (void *)rx->buf) != 0)
			return RX_NONE;
		*n = len + TLS_RECORD_HEADER;
		return RX_HELLO;
	}
	if (ret == TLS_RECORD_HEADER) {
		if (bpf_probe_read_user(rx->hdr, TLS_RECORD_HEADER, (void *)rx->buf) != 0 ||
		    rx->hdr[0] != TLS_HANDSHAKE || rx->hdr[1] != 3)
			return RX_NONE;
		rx->have_hdr = 1;
		return RX_MORE;
	}
	if (ret < 6 || bpf_probe_read_user(hdr, sizeof(hdr), (void *)rx->buf) != 0 ||
	    !hello_header(hdr, HS_CLIENT_HELLO))
		return RX_NONE;
	len = ret < HELLO_MAX ? ret : HELLO_MAX;
	len = ((len - 1) & (HELLO_MAX - 1)) + 1;
	if (bpf_probe_read_user(h->b, len, (void *)rx->buf) != 0)
		return RX_NONE;
	*n = len;
	return RX_HELLO;
}

/*
 * The ClientHello a thread is sending: its first bytes (at most HELLO_MAX of
 * the `len` at user address `buf`) read into `scratch`, a per-CPU
 * hello_buf; their count in *n. NULL if they cannot be read.
 */
static __always_inline struct hello_buf *hello_read_sent(void *scratch, __u64 buf, __u64 len,
							  __u64 *n)
{
	struct hello_buf *h;
	__u32 zero = 0;
	__u64 m;

	h = bpf_map_lookup_elem(scratch, &zero);
	if (!h)
		return NULL;
	m = len < HELLO_MAX ? len : HELLO_MAX;
	m = ((m - 1) & (HELLO_MAX - 1)) + 1;
	if (bpf_probe_read_user(h->b, m, (void *)buf) != 0)
		return NULL;
	*n = m;
	return h;
}

/*
 * A read returned `ret` on a thread whose waiting state is `rx` (NULL: it
 * waits for nothing); `scratch` is a per-CPU hello_buf. Returns the
 * ClientHello record (`*n` bytes) with the thread's connection in *conn, or
 * NULL. The thread stops waiting (rx->armed = 0) unless its read brought
 * nothing yet (EAGAIN: the handshake reads again) or a header alone.
 */
static __always_inline struct hello_buf *hello_rx_read(struct hello_rx *rx, void *scratch, long ret,
							__u32 *n, __u64 *conn)
{
	struct hello_buf *h;
	__u32 zero = 0;
	int r;

	if (!rx || !rx->armed || !rx->buf)
		return NULL;
	if (ret <= 0) {
		rx->buf = 0;
		return NULL;
	}
	h = bpf_map_lookup_elem(scratch, &zero);
	if (!h)
		return NULL;
	r = hello_rx_exit(rx, ret, h, n);
	rx->buf = 0;
	if (r == RX_MORE)
		return NULL;
	*conn = rx->conn;
	rx->armed = 0;
	rx->have_hdr = 0;
	if (r != RX_HELLO)
		return NULL;
	return h;
}

#endif
