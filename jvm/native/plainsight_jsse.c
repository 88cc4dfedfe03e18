// SPDX-License-Identifier: MIT
/*
 * libplainsight-jsse.so: the native half of plainsight's Java agent.
 *
 * The agent's code inside the JVM (jvm/boot, PlainsightJsse.java) calls these JNI
 * methods; each hands its arguments to one of the plainsight_jsse_*
 * functions below, which do nothing: plainsight's uprobes on them
 * (bpf/jsse.bpf.h) read the arguments. With no agent running they cost a
 * call. Their layout is bpf/events.h's (struct jsse_conn), the one ABI
 * header.
 */
#include <jni.h>
#include <linux/types.h>
#include <string.h>

#define TASK_COMM_LEN 16
#include "events.h"

#define PROBED __attribute__((noinline, used, visibility("default")))

/* The probes read the arguments. The empty asm keeps the compiler from
 * dropping the calls or the memory they point to. */
PROBED void plainsight_jsse_open(const struct jsse_conn *c)
{
	__asm__ volatile("" : : "r"(c) : "memory");
}

PROBED void plainsight_jsse_data(__u64 conn, __u32 direction, const void *buf, __u64 len)
{
	__asm__ volatile("" : : "r"(conn), "r"(direction), "r"(buf), "r"(len) : "memory");
}

PROBED void plainsight_jsse_close(__u64 conn)
{
	__asm__ volatile("" : : "r"(conn) : "memory");
}

/* Copies a Java address (4 or 16 bytes) into `out`; its family, 0 if none. */
static int address(JNIEnv *env, jbyteArray a, __u8 out[16])
{
	jsize n;

	if (!a)
		return 0;
	n = (*env)->GetArrayLength(env, a);
	if (n != 4 && n != 16)
		return 0;
	(*env)->GetByteArrayRegion(env, a, 0, n, (jbyte *)out);
	return n == 4 ? 2 /* AF_INET */ : 10 /* AF_INET6 */;
}

/* open(id, client, local, localPort, peer, peerPort, name): a connection
 * first seen. */
JNIEXPORT void JNICALL Java_sun_security_ssl_PlainsightJsse_open(JNIEnv *env, jclass cls,
								 jlong id, jboolean client,
								 jbyteArray local, jint local_port,
								 jbyteArray peer, jint peer_port,
								 jbyteArray name)
{
	struct jsse_conn c;
	int lf, pf;
	jsize n;

	(void)cls;
	memset(&c, 0, sizeof(c));
	c.id = (__u64)id;
	c.flags = client ? JSSE_CLIENT : 0;
	lf = address(env, local, c.local_addr);
	pf = address(env, peer, c.peer_addr);
	/* Both ends share one family field: an end of another family is
	 * dropped rather than misread. */
	if (pf) {
		c.family = pf;
		c.flags |= JSSE_PEER_KNOWN;
		c.peer_port = (__u16)peer_port;
	}
	if (lf && (!pf || lf == pf)) {
		c.family = lf;
		c.flags |= JSSE_LOCAL_KNOWN;
		c.local_port = (__u16)local_port;
	}
	if (name) {
		n = (*env)->GetArrayLength(env, name);
		if (n > 0 && n < MAX_NAME) {
			(*env)->GetByteArrayRegion(env, name, 0, n, (jbyte *)c.name);
			c.name_len = (__u16)n;
		}
	}
	plainsight_jsse_open(&c);
}

/* data(id, direction, bytes, off, len): bytes sent or received. */
JNIEXPORT void JNICALL Java_sun_security_ssl_PlainsightJsse_data(JNIEnv *env, jclass cls,
								 jlong id, jint direction,
								 jbyteArray b, jint off, jint len)
{
	jbyte *p;
	jsize n;

	(void)cls;
	if (!b || off < 0 || len <= 0)
		return;
	n = (*env)->GetArrayLength(env, b);
	if (off > n || len > n - off)
		return;
	p = (*env)->GetPrimitiveArrayCritical(env, b, NULL);
	if (!p)
		return;
	plainsight_jsse_data((__u64)id, (__u32)direction, p + off, (__u64)len);
	(*env)->ReleasePrimitiveArrayCritical(env, b, p, JNI_ABORT);
}

/* close(id): the connection's end. */
JNIEXPORT void JNICALL Java_sun_security_ssl_PlainsightJsse_close(JNIEnv *env, jclass cls, jlong id)
{
	(void)env;
	(void)cls;
	plainsight_jsse_close((__u64)id);
}
