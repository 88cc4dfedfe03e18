/* SPDX-License-Identifier: MIT */
/*
 * openssl.bpf.c, NSS. Needs openssl.bpf.c's calls (on_entry, on_return,
 * on_server_name, on_free) before it.
 *
 * NSS pushes its SSL layer onto an NSPR descriptor (SSL_ImportFD, which
 * keeps the top PRFileDesc * the same) and the program does its I/O with
 * NSPR's calls on it:
 *   PR_Send(fd, buf, n, flags, timeout) / PR_Write(fd, buf, n)  -> bytes, < 0 on failure
 *   PR_Recv(fd, buf, n, flags, timeout) / PR_Read(fd, buf, n)   -> bytes, 0 at EOF
 * These are NSPR's for every descriptor (files, stdout, plain sockets):
 * only descriptors SSL_ImportFD returned are captured. The connection is
 * the PRFileDesc *, its server name SSL_SetURL's, its end PR_Close. NSS's
 * own layer writes to the socket below through the method table, never
 * through these calls: nothing is seen twice.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, __u8);
} nss_fds SEC(".maps");

/* SSL_ImportFD(model, fd) in flight, by thread: fd. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} nss_imports SEC(".maps");

SEC("uprobe.multi")
int BPF_UPROBE(nss_import_entry, void *model, void *fd)
{
	__u64 id = bpf_get_current_pid_tgid(), f = (__u64)fd;

	if (!fd || !process_wanted(id >> 32))
		return 0;
	bpf_map_update_elem(&nss_imports, &id, &f, BPF_ANY);
	return 0;
}

SEC("uretprobe.multi")
int nss_import_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), *f = bpf_map_lookup_elem(&nss_imports, &id);
	struct conn_key k = { .pid = id >> 32 };
	__u8 one = 1;

	if (!f)
		return 0;
	k.ssl = *f;
	bpf_map_delete_elem(&nss_imports, &id);
	/* NULL on failure; else the same descriptor, now with an SSL layer */
	if (PT_REGS_RC(ctx) == k.ssl)
		bpf_map_update_elem(&nss_fds, &k, &one, BPF_ANY);
	return 0;
}

/* SSL_SetURL(fd, url): the server name NSS sends and checks. */
SEC("uprobe.multi")
int BPF_UPROBE(nss_set_url_entry, void *fd, const char *url)
{
	return on_server_name(ctx, (__u64)fd, url, -1);
}

static __always_inline int on_pr_entry(void *ctx, __u64 fd, __u64 buf)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = fd };

	if (!bpf_map_lookup_elem(&nss_fds, &k))
		return 0;
	return on_entry(ctx, fd, buf, 0);
}

/* PR_Send / PR_Write */
SEC("uprobe.multi")
int BPF_UPROBE(pr_write_entry, void *fd, const void *buf)
{
	return on_pr_entry(ctx, (__u64)fd, (__u64)buf);
}

SEC("uretprobe.multi")
int pr_write_return(struct pt_regs *ctx)
{
	return on_return(ctx, SSL_EVENT_TYPE_WRITE);
}

/* PR_Recv / PR_Read */
SEC("uprobe.multi")
int BPF_UPROBE(pr_read_entry, void *fd, void *buf)
{
	return on_pr_entry(ctx, (__u64)fd, (__u64)buf);
}

SEC("uretprobe.multi")
int pr_read_return(struct pt_regs *ctx)
{
	return on_return(ctx, SSL_EVENT_TYPE_READ);
}

/* PR_Close(fd): the end of an SSL descriptor. */
SEC("uprobe.multi")
int BPF_UPROBE(pr_close_entry, void *fd)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = (__u64)fd };

	if (!bpf_map_lookup_elem(&nss_fds, &k))
		return 0;
	bpf_map_delete_elem(&nss_fds, &k);
	return on_free(fd);
}
