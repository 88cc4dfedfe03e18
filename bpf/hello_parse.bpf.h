/* SPDX-License-Identifier: MIT */
/*
 * The ClientHello / ServerHello parsing itself, apart from any map or hook:
 * statictls (hello.bpf.h) runs it on what a process sends and receives, and
 * hellotest.bpf.c runs the same code under BPF_PROG_TEST_RUN, so that the
 * fuzz harness (src/fuzzing.rs, `hello`) feeds it any bytes through the
 * real verifier and JIT.
 */

#define HELLO_MAX 4096
#define TLS_HANDSHAKE 0x16
#define HS_CLIENT_HELLO 0x01
#define HS_SERVER_HELLO 0x02
/* Extensions looked at before server_name, at most. */
#define HELLO_MAX_EXTS 64

/* The first HELLO_MAX bytes of a record. */
struct hello_buf {
	__u8 b[HELLO_MAX];
};

/* The context of hellotest.bpf.c's program: `len` bytes of `data` in, what
 * the parser found out. */
struct hello_test {
	__u32 len;
	__u32 client_hello; /* hello_find_name's result */
	__u32 name_off;
	__u32 name_len;
	__u32 server_hello; /* hello_header(data, HS_SERVER_HELLO) */
	__u32 _pad;
	__u8 data[HELLO_MAX];
};

#define HB(i) (h->b[(i) & (HELLO_MAX - 1)])

struct walk_ctx {
	struct hello_buf *h;
	__u32 off;
	__u32 end;
	__u32 name_off;
	__u32 name_len;
};

/* Whether the first 6 bytes of a record start a handshake message `type`. */
static __always_inline int hello_header(const __u8 *hdr, __u8 type)
{
	return hdr[0] == TLS_HANDSHAKE && hdr[1] == 3 && hdr[5] == type;
}

/* One extension per call: stop at server_name (type 0). */
static int walk_extension(__u32 i, void *data)
{
	struct walk_ctx *w = data;
	struct hello_buf *h = w->h;
	__u32 off = w->off, type, len;

	if (off + 4 > w->end)
		return 1;
	type = (HB(off) << 8) | HB(off + 1);
	len = (HB(off + 2) << 8) | HB(off + 3);
	if (type == 0) {
		/* server_name_list: u16 list length, u8 type (0 = host_name), u16 length, name */
		if (off + 9 > w->end || HB(off + 6) != 0)
			return 1;
		w->name_len = (HB(off + 7) << 8) | HB(off + 8);
		w->name_off = off + 9;
		if (w->name_off + w->name_len > w->end)
			w->name_len = 0;
		return 1;
	}
	w->off = off + 4 + len;
	return 0;
}

/*
 * The server name of the ClientHello whose first `n` bytes (1..HELLO_MAX)
 * are in `h`: its offset and length in `w` (length 0: none, or not all of
 * it within the n bytes). Returns 0 if the bytes are no ClientHello record,
 * or end before its extensions.
 */
static __always_inline int hello_find_name(struct hello_buf *h, __u32 n, struct walk_ctx *w)
{
	__u32 off;

	if (n < 48 || !hello_header(h->b, HS_CLIENT_HELLO))
		return 0;
	/* record header 5, handshake header 4, version 2, random 32 */
	off = 5 + 4 + 2 + 32;
	off += 1 + HB(off);                              /* session id */
	if (off + 2 > n)
		return 0;
	off += 2 + ((HB(off) << 8) | HB(off + 1));      /* cipher suites */
	if (off + 1 > n)
		return 0;
	off += 1 + HB(off);                              /* compression methods */
	if (off + 2 > n)
		return 0;
	w->end = off + 2 + ((HB(off) << 8) | HB(off + 1));
	if (w->end > n)
		w->end = n; /* a ClientHello larger than what was copied */
	w->off = off + 2;
	w->h = h;
	bpf_loop(HELLO_MAX_EXTS, walk_extension, w, 0);
	return 1;
}
