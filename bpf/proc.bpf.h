/* SPDX-License-Identifier: MIT */
/*
 * statictls: which processes' sockets are looked at (watched_pids). A
 * process that execs an executable user space put in static_files is
 * watched, and so are its children (user space adds those already running).
 * The send/receive hooks look only at watched processes; the uprobes need no
 * such list, as they fire only in the executables they are attached to.
 * Needs thread_conn (statictls.bpf.c) before it: a thread's pending
 * connection is dropped when the thread exits. struct file_key is in
 * events.h.
 */

/* Executables with static TLS: processes that exec them are watched. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct file_key);
	__type(value, __u8);
} static_files SEC(".maps");

/* Processes whose sockets are looked at. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} watched_pids SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int static_exec(void *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	struct file_key k = {};
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u8 one = 1;

	if (!exe)
		return 0;
	k.dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
	k.ino = BPF_CORE_READ(exe, f_inode, i_ino);
	if (bpf_map_lookup_elem(&static_files, &k))
		bpf_map_update_elem(&watched_pids, &pid, &one, BPF_ANY);
	else
		bpf_map_delete_elem(&watched_pids, &pid);
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int static_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	__u32 parent = ctx->parent_pid, child = ctx->child_pid;
	__u8 one = 1;

	if (bpf_map_lookup_elem(&watched_pids, &parent))
		bpf_map_update_elem(&watched_pids, &child, &one, BPF_ANY);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int static_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;

	bpf_map_delete_elem(&thread_conn, &id);
	bpf_map_delete_elem(&watched_pids, &tid);
	return 0;
}
