/* SPDX-License-Identifier: MIT */
/*
 * The socket of a captured connection, read in the kernel while the
 * connection is alive (a short connection is gone before /proc could be
 * read): SOCK_INFO records (events.h) and the --port / --peer filters.
 * Shared by openssl.bpf.c (the descriptor of the syscall a TLS call makes)
 * and statictls (the descriptor or struct sock its ClientHello went over).
 * Needs events.h, filter.h and emit.h (data_events, note_cgroup) first.
 */
#ifndef PLAINSIGHT_SOCK_H
#define PLAINSIGHT_SOCK_H

#include <bpf/bpf_endian.h>

#define PS_S_IFMT 00170000
#define PS_S_IFSOCK 0140000
#define PS_S_IFIFO 0010000
#define PS_AF_UNIX 1
#define PS_AF_INET 2
#define PS_AF_INET6 10
#define PS_IPPROTO_TCP 6
#define PS_IPPROTO_UDP 17

/* --port: connections with one of these ports at either end. */
const volatile __u8 filter_ports = 0;
/* --peer: connections whose other end is in one of these prefixes. */
const volatile __u8 filter_peers = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, __u8);
} target_ports SEC(".maps");

/* Keys of target_peers: IPv6 addresses; IPv4 ones as v4-mapped (::ffff:a.b.c.d,
 * prefix + 96), as the kernel shows a v4 peer of a v6 socket. */
struct peer_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__type(key, struct peer_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} target_peers SEC(".maps");

/* The open file behind descriptor `fd` of the current task, or NULL. */
static __always_inline struct file *file_of_fd(__s64 fd)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds, *f = NULL;

	if (!fdt || fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) != 0)
		return NULL;
	return f;
}

/* The endpoints of `sk` into `e` (family, transport, namespace, addresses,
 * ports; a v4-mapped v6 peer stays v6 here and is shown as v4 by user
 * space). */
static __always_inline void sock_fill(struct sock_event *e, struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u16 proto;

	e->family = family;
	e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (family == PS_AF_UNIX) {
		e->transport = TRANSPORT_UNIX;
		return;
	}
	if (family != PS_AF_INET && family != PS_AF_INET6) {
		e->transport = TRANSPORT_OTHER;
		return;
	}
	proto = BPF_CORE_READ(sk, sk_protocol);
	e->transport = proto == PS_IPPROTO_TCP ? TRANSPORT_TCP :
		       proto == PS_IPPROTO_UDP ? TRANSPORT_UDP : TRANSPORT_OTHER;
	e->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == PS_AF_INET) {
		BPF_CORE_READ_INTO(&e->local_addr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO(&e->peer_addr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO(&e->local_addr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->peer_addr, sk, __sk_common.skc_v6_daddr);
	}
	if (proto == PS_IPPROTO_TCP && BPF_CORE_READ(sk, sk_max_ack_backlog) > 0)
		e->flags |= SOCK_FLAG_ACCEPTED;
}

/* The file's kind (PS_S_IFSOCK, PS_S_IFIFO, ...). */
static __always_inline __u32 file_kind(struct file *f)
{
	return BPF_CORE_READ(f, f_inode, i_mode) & PS_S_IFMT;
}

/* The struct sock of an open socket file, or NULL when `f` is no socket. */
static __always_inline struct sock *sock_of_file(struct file *f)
{
	struct socket *so;

	if (file_kind(f) != PS_S_IFSOCK)
		return NULL;
	so = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(so, sk);
}

/* What descriptor `fd` of the current task is, into `e`: false when it is
 * neither a socket nor a pipe (a TLS call that also writes a log file). */
static __always_inline bool sock_fill_fd(struct sock_event *e, __s64 fd)
{
	struct file *f = file_of_fd(fd);
	struct sock *sk;

	if (!f)
		return false;
	e->fd = fd;
	if (file_kind(f) == PS_S_IFIFO) {
		e->transport = TRANSPORT_PIPE;
		return true;
	}
	sk = sock_of_file(f);
	if (!sk)
		return false;
	sock_fill(e, sk);
	return true;
}

/* The descriptor of `sk` in the syscall running on this thread (the fentry
 * path sees tcp_sendmsg / tcp_recvmsg, inside a write, sendto, sendmsg,
 * read, recvfrom or recvmsg whose first argument is the descriptor): that
 * argument, if it is indeed `sk`'s socket; else -1 (io_uring, say). */
static __always_inline __s32 fd_of_sock(struct sock *sk)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	__s64 fd = BPF_CORE_READ(regs, di);
	struct file *f = file_of_fd(fd);

	return f && sock_of_file(f) == sk ? fd : -1;
}

/* Whether the endpoint filters let a connection through: `verdicts` maps
 * connections to what sock_wanted said of their socket (openssl's
 * conn_socks, statictls's go_socks), `key` is this one's; with filters
 * given, one whose socket is not known yet is not let through. */
static __always_inline bool sock_verdict(void *verdicts, const void *key)
{
	__u8 *v;

	if (!filter_ports && !filter_peers)
		return true;
	v = bpf_map_lookup_elem(verdicts, key);
	return v && *v;
}

/* Whether --port and --peer let a connection over this socket through. */
static __always_inline bool sock_wanted(struct sock_event *e)
{
	struct peer_key k = { .prefixlen = 128 };

	if (filter_ports && !bpf_map_lookup_elem(&target_ports, &e->local_port) &&
	    !bpf_map_lookup_elem(&target_ports, &e->peer_port))
		return false;
	if (!filter_peers)
		return true;
	if (e->family == PS_AF_INET) {
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		__builtin_memcpy(&k.addr[12], e->peer_addr, 4);
	} else if (e->family == PS_AF_INET6) {
		__builtin_memcpy(k.addr, e->peer_addr, 16);
	} else {
		return false;
	}
	return bpf_map_lookup_elem(&target_peers, &k) != NULL;
}

/* A SOCK_INFO record for connection `conn`, reserved and headed; the
 * caller fills the socket and submits or discards it. */
static __always_inline struct sock_event *sock_event_new(__u64 conn, __u64 id)
{
	struct sock_event *e = bpf_ringbuf_reserve(&data_events, sizeof(*e), 0);

	if (!e) {
		count_stat(STAT_DATA_LOST);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = SOCK_INFO;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->fd = -1;
	e->ts_ns = bpf_ktime_get_ns();
	e->conn = conn;
	e->cgroup = note_cgroup();
	return e;
}

#endif
