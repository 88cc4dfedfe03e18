/* SPDX-License-Identifier: MIT */
/*
 * statictls: the send / receive hooks, which hand each buffer to
 * hello.bpf.h. Two sets serve the same steps, and for each direction user
 * space (src/hooks.rs) attaches one: the syscall tracepoints, or the spec's
 * tcp_sendmsg / tcp_recvmsg with fentry + fexit where the kernel allows BPF
 * trampolines. Needs hello.bpf.h (on_send, on_recv_*), proc.bpf.h
 * (watched_pids) and erlang_sock.bpf.h (erl_on_send, erl_recv_*) before
 * it. Erlang's records are walked on the syscall tracepoints only: the
 * tcp_sendmsg / tcp_recvmsg path sees one segment of a vector write.
 */

/* ---- syscall tracepoints -------------------------------------------------- */

SEC("tracepoint/syscalls/sys_enter_write")
int static_write(struct trace_event_raw_sys_enter *ctx)
{
	on_send(ctx->args[0], ctx->args[1], ctx->args[2]);
	erl_on_send(ctx->args[0], 0, 0, ctx->args[1], ctx->args[2]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int static_sendto(struct trace_event_raw_sys_enter *ctx)
{
	on_send(ctx->args[0], ctx->args[1], ctx->args[2]);
	erl_on_send(ctx->args[0], 0, 0, ctx->args[1], ctx->args[2]);
	return 0;
}

/* The first buffer of a vector write: a ClientHello is sent whole in it. */
static __always_inline int on_send_iov(__u32 fd, __u64 iov, __u64 iovcnt)
{
	struct iovec v = {};

	if (iovcnt == 0 || bpf_probe_read_user(&v, sizeof(v), (void *)iov) != 0)
		return 0;
	return on_send(fd, (__u64)v.iov_base, v.iov_len);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int static_writev(struct trace_event_raw_sys_enter *ctx)
{
	on_send_iov(ctx->args[0], ctx->args[1], ctx->args[2]);
	erl_on_send(ctx->args[0], ctx->args[1], ctx->args[2], 0, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int static_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	struct user_msghdr m = {};

	if (bpf_probe_read_user(&m, sizeof(m), (void *)ctx->args[1]) != 0)
		return 0;
	on_send_iov(ctx->args[0], (__u64)m.msg_iov, m.msg_iovlen);
	erl_on_send(ctx->args[0], (__u64)m.msg_iov, m.msg_iovlen, 0, 0);
	return 0;
}

/* The sends' returns: Erlang's records are walked over the bytes sent. */
SEC("tracepoint/syscalls/sys_exit_write")
int static_write_exit(struct trace_event_raw_sys_exit *ctx)
{
	erl_send_exit(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int static_sendto_exit(struct trace_event_raw_sys_exit *ctx)
{
	erl_send_exit(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_writev")
int static_writev_exit(struct trace_event_raw_sys_exit *ctx)
{
	erl_send_exit(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int static_sendmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	erl_send_exit(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_read")
int static_read_enter(struct trace_event_raw_sys_enter *ctx)
{
	erl_recv_enter(ctx->args[0], ctx->args[1]);
	return on_recv_enter(ctx->args[0], ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_read")
int static_read_exit(struct trace_event_raw_sys_exit *ctx)
{
	on_recv_exit(ctx->ret);
	erl_recv_exit(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int static_recvfrom_enter(struct trace_event_raw_sys_enter *ctx)
{
	erl_recv_enter(ctx->args[0], ctx->args[1]);
	return on_recv_enter(ctx->args[0], ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int static_recvfrom_exit(struct trace_event_raw_sys_exit *ctx)
{
	on_recv_exit(ctx->ret);
	erl_recv_exit(ctx->ret);
	return 0;
}

/* ---- the spec's hooks: tcp_sendmsg / tcp_recvmsg (fentry + fexit) -------- */
/*
 * Where the kernel allows BPF trampolines (src/hooks.rs decides), the
 * ClientHello and ServerHello are seen in tcp_sendmsg / tcp_recvmsg instead
 * of the syscall tracepoints: fentry notes where the user's buffer is (the
 * iterator is consumed by the call), fexit acts once the call succeeded.
 */

/* The iovec pointer of iov_iter before 6.4 (renamed __iov since). */
struct iov_iter___old {
	const struct iovec *iov;
} __attribute__((preserve_access_index));

/* The user buffer a msghdr's iterator starts at, and its length. */
static __always_inline __u64 msg_user_buf(struct msghdr *msg, __u64 *len)
{
	struct iov_iter *it = &msg->msg_iter;
	__u8 type = BPF_CORE_READ(it, iter_type);
	__u64 off = BPF_CORE_READ(it, iov_offset);
	const struct iovec *iov;
	struct iovec v = {};

	*len = BPF_CORE_READ(it, count);
	if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
	    type == bpf_core_enum_value(enum iter_type, ITER_UBUF))
		return (__u64)BPF_CORE_READ(it, ubuf) + off;
	if (type != bpf_core_enum_value(enum iter_type, ITER_IOVEC))
		return 0;
	if (bpf_core_field_exists(it->__iov))
		iov = BPF_CORE_READ(it, __iov);
	else
		iov = BPF_CORE_READ((struct iov_iter___old *)it, iov);
	if (bpf_probe_read_kernel(&v, sizeof(v), iov) != 0 || v.iov_len <= off)
		return 0;
	if (*len > v.iov_len - off)
		*len = v.iov_len - off;
	return (__u64)v.iov_base + off;
}

struct send_args {
	__u64 sock;
	__u64 buf;
	__u64 len;
};

/* tcp_sendmsg in flight, by thread (fentry -> fexit). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct send_args);
} pending_send SEC(".maps");

SEC("fentry/tcp_sendmsg")
int BPF_PROG(static_tcp_send_entry, struct sock *sk, struct msghdr *msg, size_t size)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct send_args a = { .sock = (__u64)sk };

	if (!bpf_map_lookup_elem(&watched_pids, &pid))
		return 0;
	a.buf = msg_user_buf(msg, &a.len);
	if (!a.buf || a.len < 48)
		return 0;
	bpf_map_update_elem(&pending_send, &id, &a, BPF_ANY);
	return 0;
}

SEC("fexit/tcp_sendmsg")
int static_tcp_send_exit(__u64 *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct send_args *p = bpf_map_lookup_elem(&pending_send, &id);
	struct send_args a;
	__u64 ret = 0;

	if (!p)
		return 0;
	a = *p;
	bpf_map_delete_elem(&pending_send, &id);
	bpf_get_func_ret(ctx, &ret);
	if ((long)ret <= 0)
		return 0;
	return on_send(a.sock, a.buf, a.len);
}

SEC("fentry/tcp_recvmsg")
int BPF_PROG(static_tcp_recv_entry, struct sock *sk, struct msghdr *msg)
{
	__u64 len = 0, buf = msg_user_buf(msg, &len);

	if (!buf)
		return 0;
	return on_recv_enter((__u64)sk, buf);
}

SEC("fexit/tcp_recvmsg")
int static_tcp_recv_exit(__u64 *ctx)
{
	__u64 ret = 0;

	bpf_get_func_ret(ctx, &ret);
	return on_recv_exit((long)(int)ret);
}
