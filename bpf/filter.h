/* SPDX-License-Identifier: MIT */
/*
 * Which processes an agent looks at: everything but itself, or only the pids,
 * process names and containers it was given. Each BPF object includes this
 * and gets its own copies of the maps; user space fills them all the same
 * way. Needs bpf_core_read.h before it.
 */
#ifndef PLAINSIGHT_FILTER_H
#define PLAINSIGHT_FILTER_H

const volatile __u32 agent_tgid = 0;
const volatile __u8 filter_pids = 0;
const volatile __u8 filter_comms = 0;
const volatile __u8 filter_containers = 0;

struct comm_key {
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} target_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct comm_key);
	__type(value, __u8);
} target_comms SEC(".maps");

/* --container: the first 12 hex digits of each id wanted, as a number
 * (container_key). User space checks longer prefixes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u8);
} target_containers SEC(".maps");

/* Whether a cgroup (by id) is one of a wanted container: decided once. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} container_verdict SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count_stat(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

#define CGROUP_NAME_MAX 128

/* The cgroup (v2) name's container id, as container runtimes name their
 * cgroups (libpod-<id>, docker-<id>.scope, cri-containerd-<id>.scope,
 * crio-<id>.scope, <id>): the 64 hex digits at the end of the name, less
 * ".scope". Returns their first 12 as a number, or 0. No loop over the name:
 * the length comes from the copy. */
static __always_inline __u64 container_key(const char *name)
{
	char b[CGROUP_NAME_MAX] = {};
	long len = bpf_probe_read_kernel_str(b, sizeof(b), name);
	__u64 key = 0;
	__u32 i, start;

	if (len <= 64)
		return 0;
	len -= 1; /* the NUL */
	if (len > 70 && b[(len - 6) & (CGROUP_NAME_MAX - 1)] == '.')
		len -= 6; /* ".scope" */
	start = len - 64;
	for (i = 0; i < 12; i++) {
		char c = b[(start + i) & (CGROUP_NAME_MAX - 1)];
		__u64 d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else
			return 0;
		key = (key << 4) | d;
	}
	return key;
}

/* --container: the current task's cgroup is one of the wanted containers. */
static __noinline bool container_wanted(void)
{
	__u64 cg = bpf_get_current_cgroup_id(), key;
	struct task_struct *t;
	__u8 *v, verdict;

	v = bpf_map_lookup_elem(&container_verdict, &cg);
	if (v)
		return *v;
	t = (struct task_struct *)bpf_get_current_task();
	key = container_key(BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, name));
	verdict = key != 0 && bpf_map_lookup_elem(&target_containers, &key) != NULL;
	bpf_map_update_elem(&container_verdict, &cg, &verdict, BPF_ANY);
	return verdict;
}

/* True when the current process is one this agent should look at. */
static __always_inline bool process_wanted(__u32 tgid)
{
	if (tgid == agent_tgid)
		return false;
	if (filter_pids && !bpf_map_lookup_elem(&target_pids, &tgid))
		return false;
	if (filter_comms) {
		/* The process's name (/proc/PID/comm: its main thread's), not
		 * this thread's: a JVM names each of its threads. */
		struct comm_key key = {};
		struct task_struct *t = bpf_get_current_task_btf();
		bpf_probe_read_kernel_str(&key.comm, sizeof(key.comm), t->group_leader->comm);
		if (!bpf_map_lookup_elem(&target_comms, &key))
			return false;
	}
	if (filter_containers && !container_wanted())
		return false;
	return true;
}

#endif
