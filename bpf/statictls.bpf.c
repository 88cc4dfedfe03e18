// SPDX-License-Identifier: MIT
/*
 * statictls: TLS linked statically into an executable, with no stable ABI
 * to probe: aws-lc or a BoringSSL/AWS-LC FIPS module used through
 * EVP_AEAD_CTX_* (rustls over aws-lc-rs), ring (rustls' ring provider) and
 * Go's crypto/tls. The spec's "Rust Application Using Statically Linked
 * Rustls Library", and Go alike.
 *
 * The send / receive hooks look only at processes that exec such an
 * executable (user space lists it in static_files) and at their children
 * (proc.bpf.h); the uprobes fire only in the executables they are attached
 * to.
 *
 *  1. send path (write/sendto/writev/sendmsg tracepoints; the spec's fexit
 *     on tcp_sendmsg): the first record of a connection is parsed as a TLS
 *     ClientHello; its server_name is matched against the patterns; if the
 *     connection is to be captured, SNI_SENT is emitted and the socket
 *     waits for a ServerHello;
 *  2. receive path (read/recvfrom; the spec's tcp_recvmsg): a ServerHello on
 *     that socket marks the receiving thread with the connection; a server
 *     that reads a ClientHello goes through step 1 on it and marks its
 *     thread at once;
 *  3. the key contexts that thread creates next are the connection's (every
 *     key epoch, both directions): EVP_AEAD_CTX_init_with_direction maps its
 *     EVP_AEAD_CTX *; ring's *_init maps its key, known by 8 bytes of key
 *     material because ring moves the key around in memory;
 *  4. plaintext is captured where records are sealed and opened: at entry
 *     of EVP_AEAD_CTX_seal / _seal_scatter and ring's *_seal, at return of
 *     EVP_AEAD_CTX_open and ring's *_open. Only application data is
 *     delivered: TLS 1.2's record type is in the additional data, TLS 1.3's
 *     inner type is the plaintext's last byte (removed).
 *
 * Erlang/OTP's ssl (erlang.bpf.h): a record's plaintext at the crypto
 * NIF's libcrypto calls, its key tied to the socket whose records carry
 * its ciphertext (the sockets named by steps 1 and 2).
 *
 * Go: the goroutine that sends the ClientHello runs (*Conn).clientHandshake,
 * so step 1 gives the connection and its decision to that *Conn (no
 * ServerHello or key contexts needed); plaintext is captured at
 * (*Conn).Write / (*Conn).Read themselves, and (*Conn).Close ends it.
 *
 * The pieces, included once each at the end of this file in this order (a
 * piece may use what the ones before it define):
 *   proc.bpf.h      which processes are watched (exec, fork, exit)
 *   gotls.bpf.h     Go crypto/tls: handshake, Write / Read / Close
 *   hello.bpf.h     ClientHello / ServerHello parsing: steps 1 and 2
 *   erlang.bpf.h    Erlang/OTP's ssl: keys and records at the crypto NIF
 *   erlang_tie.bpf.h   ... a sealing key's held records handed over
 *   erlang_sock.bpf.h  ... keys tied to their sockets by ciphertext
 *   sendrecv.bpf.h  the send / receive hooks that feed hello.bpf.h (and
 *                   erlang_sock.bpf.h)
 *   aead.bpf.h      EVP_AEAD_CTX key contexts, seal / open
 *   ring.bpf.h      ring keys, seal / open
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "events.h"
#include "filter.h"
#include "sni.h"
#include "emit.h"
#include "sock.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define TLS_APPLICATION_DATA 0x17

/* ---- shared by the pieces ------------------------------------------------ */

struct conn_info {
	__u64 conn; /* connection id: time of its ClientHello (Go: the *tls.Conn) */
};

/* Thread that received a ServerHello: its next key contexts are this conn. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct conn_info);
} thread_conn SEC(".maps");

/* An open (decryption) in flight, by thread: what its return needs (ring.bpf.h
 * keeps the plaintext length itself in out_len_ptr). */
struct open_args {
	__u64 out;
	__u64 out_len_ptr;
	__u64 ad;
	__u64 ad_len;
	__u64 conn;
};

/* Arguments and record type at the record cipher (aead.bpf.h, ring.bpf.h). */

static __always_inline __u64 stack_arg(struct pt_regs *ctx, int n)
{
	/* at function entry: return address at sp, argument 7 at sp + 8, ... */
	__u64 v = 0;

	bpf_probe_read_user(&v, sizeof(v), (void *)(PT_REGS_SP(ctx) + 8 * (n - 6)));
	return v;
}

/*
 * Length of the application data in a record's plaintext, or 0 when it is
 * not application data. TLS 1.2: 13 bytes of additional data hold the type
 * at [8]. TLS 1.3: 5 bytes (the record header); the inner type is the last
 * plaintext byte.
 */
static __always_inline __u64 app_data_len(__u64 ad, __u64 ad_len, __u64 pt, __u64 pt_len)
{
	__u8 t = 0;

	if (pt_len == 0)
		return 0;
	if (ad_len == 13) {
		if (bpf_probe_read_user(&t, 1, (void *)(ad + 8)) != 0)
			return 0;
		return t == TLS_APPLICATION_DATA ? pt_len : 0;
	}
	if (bpf_probe_read_user(&t, 1, (void *)(pt + pt_len - 1)) != 0)
		return 0;
	return t == TLS_APPLICATION_DATA ? pt_len - 1 : 0;
}

#include "proc.bpf.h"
#include "gotls.bpf.h"
#include "hello.bpf.h"
#include "erlang.bpf.h"
#include "erlang_tie.bpf.h"
#include "erlang_sock.bpf.h"
#include "sendrecv.bpf.h"
#include "aead.bpf.h"
#include "ring.bpf.h"
