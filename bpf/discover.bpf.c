// SPDX-License-Identifier: MIT
/*
 * discover: report every executable file the first time it is mapped.
 *
 * The spec hooks mmap with fexit (discover_mmap_fexit); kernels that refuse
 * trampolines get tracepoints (the choice per hook is made in src/hooks.rs):
 *  - sched_process_exec: the main executable, which the kernel maps itself;
 *  - sys_enter_mmap / sys_exit_mmap: PROT_EXEC file mappings made by ld.so
 *    and dlopen.
 * `seen_files` holds every (device, inode) already reported, so each file is
 * reported (and so parsed and instrumented) once. While a file is being
 * inspected (FILE_PENDING) every process that maps it is reported too, so
 * that it is held paused until the file's probes are in place; once user
 * space marks the file FILE_DONE nothing more is reported for it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "events.h"
#include "filter.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define PROT_EXEC 0x4
#define MAP_ANONYMOUS 0x20

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct file_key);
	__type(value, __u8);
} seen_files SEC(".maps");

/* fd of an mmap in flight, by thread, between sys_enter and sys_exit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} pending_mmaps SEC(".maps");

/* Own ring buffer: the pause thread reads nothing else, and is woken at once. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} exec_events SEC(".maps");

static __always_inline int report_file(struct file *file, __u32 source)
{
	struct file_key key = {};
	struct mmap_exec_file_event *e;
	__u64 id = bpf_get_current_pid_tgid();
	__u8 pending = FILE_PENDING, *state;

	if (!file)
		return 0;
	key.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(file, f_inode, i_ino);
	if (key.ino == 0)
		return 0;
	state = bpf_map_lookup_elem(&seen_files, &key);
	if (state && *state == FILE_DONE)
		return 0; /* instrumented (or found to need nothing) already */
	if (state && *state == FILE_WATCHED)
		source = EXEC_SOURCE_WATCHED;
	if (!state && bpf_map_update_elem(&seen_files, &key, &pending, BPF_NOEXIST) != 0) {
		/* Another CPU reported it just now: report this process too. */
	}

	e = bpf_ringbuf_reserve(&exec_events, sizeof(*e), 0);
	if (!e) {
		/* Forget it so that the next mapping reports it again. */
		if (!state)
			bpf_map_delete_elem(&seen_files, &key);
		count_stat(STAT_DISCOVER_LOST);
		return 0;
	}
	e->type = MMAP_EXEC_FILE;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->source = source;
	e->dev = key.dev;
	e->ino = key.ino;
	e->ts_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP); /* the pause thread acts at once */
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int discover_exec(void *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!process_wanted(tgid))
		return 0;
	return report_file(BPF_CORE_READ(task, mm, exe_file), EXEC_SOURCE_EXEC);
}

/*
 * The spec's hook, where the kernel allows trampolines (src/hooks.rs
 * decides): fexit on vm_mmap_pgoff, which serves the mmap syscall and the
 * ELF loader alike, with the mapped file and the result at hand.
 */
SEC("fexit/vm_mmap_pgoff")
int BPF_PROG(discover_mmap_fexit, struct file *file, unsigned long addr, unsigned long len,
	     unsigned long prot, unsigned long flag, unsigned long pgoff, unsigned long ret)
{
	if (!file || !(prot & PROT_EXEC) || ret >= (unsigned long)-4095)
		return 0;
	if (!process_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return report_file(file, EXEC_SOURCE_MMAP);
}

SEC("tracepoint/syscalls/sys_enter_mmap")
int discover_mmap_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 prot = ctx->args[2];
	__u64 flags = ctx->args[3];
	int fd = (int)ctx->args[4];
	__u32 fd32;

	if (!(prot & PROT_EXEC) || (flags & MAP_ANONYMOUS) || fd < 0)
		return 0;
	if (!process_wanted(id >> 32))
		return 0;
	fd32 = fd;
	bpf_map_update_elem(&pending_mmaps, &id, &fd32, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int discover_mmap_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *task;
	struct file **fds;
	struct file *file = NULL;
	unsigned int max_fds;
	__u32 *fdp, fd;

	fdp = bpf_map_lookup_elem(&pending_mmaps, &id);
	if (!fdp)
		return 0;
	fd = *fdp;
	bpf_map_delete_elem(&pending_mmaps, &id);
	/* Failed mappings return -errno (page aligned addresses never do). */
	if ((long)ctx->ret < 0 && (long)ctx->ret > -4096)
		return 0;

	task = bpf_get_current_task_btf();
	max_fds = BPF_CORE_READ(task, files, fdt, max_fds);
	if (fd >= max_fds)
		return 0;
	fds = BPF_CORE_READ(task, files, fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) != 0)
		return 0;
	return report_file(file, EXEC_SOURCE_MMAP);
}
