/* SPDX-License-Identifier: MIT */
/*
 * openssl.bpf.c, Java (JSSE). Needs openssl.bpf.c's names (conn_verdict,
 * on_free) and tlssock.bpf.h (conn_socks) before it.
 *
 * JSSE is written in Java: no native TLS library carries its plaintext.
 * The agent loads a Java agent into the JVM (src/jvm) whose code, woven
 * into JSSE's plaintext boundary, hands each connection to the functions
 * of a small native library of ours (jvm/native/plainsight_jsse.c):
 *
 *   plainsight_jsse_open(const struct jsse_conn *c)
 *   plainsight_jsse_data(__u64 conn, __u32 direction, const void *buf, __u64 len)
 *   plainsight_jsse_close(__u64 conn)
 *
 * open is called once per connection, with its server name and endpoints
 * as Java knows them; the probe decides it like SSL_ctrl's name and tells
 * user space (JSSE_VERDICT), which writes the verdict where the Java side
 * reads it (src/jvm/verdicts.rs): a probe cannot write it into the JVM
 * itself (bpf_probe_write_user is refused under kernel lockdown, as on this
 * machine kind). Until the verdict arrives the Java side hands over every
 * connection's bytes and this probe drops those not wanted. data is called
 * with bytes that are final (sent, or received): entry probes only, no
 * return probe.
 */

/* The netns inode of the current task (a JVM's connections are in it). */
static __always_inline __u32 current_netns(void)
{
	struct task_struct *t = bpf_get_current_task_btf();

	return BPF_CORE_READ(t, nsproxy, net_ns, ns.inum);
}

/* SOCK_INFO for a JVM connection from what Java knows of its ends; the
 * verdict of the endpoint filters kept in conn_socks. Unknown ends are
 * flagged, never zeros passed off as addresses. */
static __always_inline void jsse_endpoints(const struct conn_key *k, const struct jsse_conn *c,
					   __u64 id)
{
	struct sock_event *e;

	if (!(c->flags & (JSSE_LOCAL_KNOWN | JSSE_PEER_KNOWN)))
		return;
	if (c->family != PS_AF_INET && c->family != PS_AF_INET6)
		return;
	e = sock_event_new(k->ssl, id);
	if (!e)
		return;
	e->netns = current_netns();
	e->family = c->family;
	e->transport = TRANSPORT_TCP;
	if (!(c->flags & JSSE_CLIENT))
		e->flags |= SOCK_FLAG_ACCEPTED;
	if (c->flags & JSSE_LOCAL_KNOWN) {
		e->local_port = c->local_port;
		__builtin_memcpy(e->local_addr, c->local_addr, 16);
	} else {
		e->flags |= SOCK_FLAG_LOCAL_UNKNOWN;
	}
	if (c->flags & JSSE_PEER_KNOWN) {
		e->peer_port = c->peer_port;
		__builtin_memcpy(e->peer_addr, c->peer_addr, 16);
	} else {
		e->flags |= SOCK_FLAG_PEER_UNKNOWN;
	}
	sock_decide(k, e);
}

/* The connection's head (all of struct jsse_conn but its name), read in
 * one piece; the name goes to the SNI scratch. */
struct jsse_head {
	__u8 bytes[offsetof(struct jsse_conn, name)];
};

SEC("uprobe.multi")
int BPF_UPROBE(jsse_open_entry, const struct jsse_conn *uc)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32 };
	struct jsse_head h;
	const struct jsse_conn *c = (const struct jsse_conn *)&h;
	struct sni_scratch *s;
	__u32 rule = 0, n;
	struct jsse_verdict_event *v;
	bool wanted = false;
	__u8 one = 1;

	if (!uc || !process_wanted(k.pid))
		return 0;
	if (bpf_probe_read_user(&h, sizeof(h), uc) != 0) {
		count_stat(STAT_READ_FAILED);
		return 0;
	}
	k.ssl = c->id;
	/* Announced again later (for agents started since): known here. */
	if (is_named(k.ssl, id))
		return 0;
	bpf_map_update_elem(&named, &k, &one, BPF_ANY);
	n = c->name_len;
	s = sni_scratch_get();
	if (!s)
		return 0;
	if (n > 0 && n < MAX_NAME) {
		if (bpf_probe_read_user(s->raw, n & (MAX_NAME - 1), uc->name) != 0) {
			count_stat(STAT_READ_FAILED);
			return 0;
		}
		sni_match(s, n, &rule);
		if (sni_filter)
			sni_decide(&conns, &k, rule != 0);
	} else {
		n = 0;
	}
	if (conn_verdict(&k) == VERDICT_YES) {
		emit_sni(c->flags & JSSE_CLIENT ? SNI_CONFIGURED : SNI_RECEIVED, k.ssl, rule, s,
			 n != 0, id);
		jsse_endpoints(&k, c, id);
		wanted = sock_passes(&k);
	}
	/* A JVM connection has all it will ever have now: no name or no
	 * ends later, so "not wanted" is final. */
	v = bpf_ringbuf_reserve(&data_events, sizeof(*v), 0);
	if (!v) {
		count_stat(STAT_DATA_LOST);
		return 0;
	}
	v->type = JSSE_VERDICT;
	v->pid = k.pid;
	v->conn = k.ssl;
	v->wanted = wanted;
	v->_pad = 0;
	bpf_ringbuf_submit(v, submit_flags());
	return 0;
}

SEC("uprobe.multi")
int BPF_UPROBE(jsse_data_entry, __u64 conn, __u32 direction, const void *buf, __u64 len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = { .pid = id >> 32, .ssl = conn };

	if (!buf || !len || !process_wanted(k.pid))
		return 0;
	if (conn_verdict(&k) != VERDICT_YES || !sock_passes(&k))
		return 0;
	emit_data(direction == JSSE_RECEIVED ? SSL_EVENT_TYPE_READ : SSL_EVENT_TYPE_WRITE,
		  (__u64)buf, conn, len, id);
	return 0;
}

SEC("uprobe.multi")
int BPF_UPROBE(jsse_close_entry, __u64 conn)
{
	return on_free((void *)conn);
}
