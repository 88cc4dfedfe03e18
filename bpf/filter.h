/* SPDX-License-Identifier: MIT */
/*
 * Which processes an agent looks at: everything but itself, or only the pids
 * and process names it was given. Each BPF object includes this and gets its
 * own copies of the maps; user space fills them all the same way.
 */
#ifndef PLAINSIGHT_FILTER_H
#define PLAINSIGHT_FILTER_H

const volatile __u32 agent_tgid = 0;
const volatile __u8 filter_pids = 0;
const volatile __u8 filter_comms = 0;

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

/* True when the current process is one this agent should look at. */
static __always_inline bool process_wanted(__u32 tgid)
{
	if (tgid == agent_tgid)
		return false;
	if (filter_pids && !bpf_map_lookup_elem(&target_pids, &tgid))
		return false;
	if (filter_comms) {
		struct comm_key key = {};
		bpf_get_current_comm(&key.comm, sizeof(key.comm));
		if (!bpf_map_lookup_elem(&target_comms, &key))
			return false;
	}
	return true;
}

#endif
