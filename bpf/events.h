/* SPDX-License-Identifier: MIT */
/*
 * The event ABI between plainsight's BPF programs and its user space.
 * Every record put on a BPF ring buffer starts with a `u32 type` from
 * `enum event_type` (the event names of the spec).
 *
 * This file is the one source of the ABI: src/abi.rs takes every constant
 * (the enums below, which BTF carries) and every layout (offset_of! on the
 * generated skeleton types) from the compiled objects, so a change here
 * either compiles into user space or fails its tests. Constants are enums,
 * not #defines, for that reason.
 */
#ifndef PLAINSIGHT_EVENTS_H
#define PLAINSIGHT_EVENTS_H

/* TASK_COMM_LEN (16) comes from vmlinux.h. */
enum abi_sizes {
	/* Plaintext is copied in chunks of this size (a power of two). */
	DATA_CHUNK = 16384,
	/* Largest number of chunks one call may produce (caps max_capture). */
	MAX_CHUNKS = 4096,
	/* Longest server name, with its NUL. */
	MAX_NAME = 256,
	/* Longest cgroup name kept (cgroup_names), with its NUL. */
	CGROUP_NAME = 128,
};

enum event_type {
	/* An executable file was mapped for the first time (discover.bpf.c). */
	MMAP_EXEC_FILE = 1,
	/* Plaintext handed to the TLS library to encrypt (a chunk of it). */
	SSL_EVENT_TYPE_WRITE = 2,
	/* Plaintext the TLS library returned after decryption (a chunk of it). */
	SSL_EVENT_TYPE_READ = 3,
	/* The library freed its connection object. */
	SSL_EVENT_TYPE_CLOSE = 4,
	/* A server name was set on a connection and matched (SNI issue). */
	SNI_CONFIGURED = 5,
	/* A ClientHello with a matching server name was sent (static path). */
	SNI_SENT = 6,
	/* A server learned the server name its client sent (openssl: from
	 * SSL_get_servername or the ClientHello read; statictls: the
	 * ClientHello read) and it matched. */
	SNI_RECEIVED = 7,
	/* The socket a captured connection goes over became known
	 * (sock.bpf.h): emitted once per connection, before the records it
	 * names, on the data ring buffer. */
	SOCK_INFO = 8,
	/* What this agent decided for a JVM connection our Java agent
	 * announced (jsse.bpf.h): user space tells the Java side, which stops
	 * handing over the bytes of a connection no agent wants. */
	JSSE_VERDICT = 9,
};

/* What a connection's descriptor is (sock_event.transport). */
enum sock_transport {
	TRANSPORT_TCP = 1,
	TRANSPORT_UDP = 2,
	TRANSPORT_UNIX = 3,
	TRANSPORT_PIPE = 4,
	TRANSPORT_OTHER = 5, /* another socket family or protocol */
};

/* Flags of a sock_event. */
enum sock_event_flags {
	/* A TCP socket a listener accepted: the captured process is the
	 * connection's server (its listener's backlog is inherited; a socket
	 * that connected never listened). */
	SOCK_FLAG_ACCEPTED = 1,
	/* The record names only one end (the JVM agent's engines know their
	 * peer, not their socket): the other is not known. */
	SOCK_FLAG_LOCAL_UNKNOWN = 2,
	SOCK_FLAG_PEER_UNKNOWN = 4,
};

/* Where an MMAP_EXEC_FILE came from. */
enum exec_source {
	EXEC_SOURCE_EXEC = 1, /* the main executable, at execve */
	EXEC_SOURCE_MMAP = 2, /* a PROT_EXEC file mapping (ld.so, dlopen) */
	/* Not a mapping: a process's first wanted connection asks for its
	 * return probes (openssl.bpf.c, want_returns). `dev` is the start
	 * time of the process in clock ticks since boot (as /proc/PID/stat
	 * says; with the pid, its identity), `ino` the inode
	 * of the library whose probe asked (0: a syscall's hook). User space
	 * attaches the return probes of all the process's TLS libraries. */
	EXEC_SOURCE_RETURNS = 3,
	/* A mapping of a file user space watches (FILE_WATCHED: a JVM's
	 * libjvm): every process that maps it is reported, never held. */
	EXEC_SOURCE_WATCHED = 4,
};

/* Key of a file: `seen_files` (discover) and `static_files` (statictls). */
struct file_key {
	__u64 dev; /* kernel dev_t: major << 20 | minor */
	__u64 ino;
};

/* Key of `returns_asked` (openssl.bpf.c): a process and the library whose
 * probe asked for its return probes (an inode; 0: a syscall's hook). */
struct returns_key {
	__u32 pid;
	__u32 _pad;
	__u64 file;
};

/* Values of `seen_files`. */
enum seen_state {
	FILE_PENDING = 1, /* reported, being inspected: report every mapper */
	FILE_DONE = 2,    /* inspected: report no more */
	FILE_WATCHED = 3, /* inspected: report each mapper, not to be held */
};

struct mmap_exec_file_event {
	__u32 type; /* MMAP_EXEC_FILE */
	__u32 pid;  /* thread group id */
	__u32 tid;
	__u32 source; /* enum exec_source */
	__u64 dev;    /* kernel dev_t of the file's superblock: major << 20 | minor */
	__u64 ino;
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	char comm[TASK_COMM_LEN];
};

/* Flags of a data event. */
enum data_flags {
	DATA_FLAG_TRUNCATED = 1, /* the call reported more than was captured */
};

struct ssl_data_event {
	__u32 type; /* SSL_EVENT_TYPE_WRITE or SSL_EVENT_TYPE_READ */
	__u32 pid;
	__u32 tid;
	__u32 flags;    /* DATA_FLAG_* */
	__u64 ts_ns;    /* when the call returned, CLOCK_MONOTONIC */
	__u64 conn;     /* the library's connection object (SSL *) */
	__u64 cgroup;   /* the task's cgroup (v2) id: its name is in cgroup_names */
	__u32 len;      /* bytes the call reported */
	__u32 captured; /* bytes captured for the whole call (<= len) */
	__u32 offset;   /* offset of this chunk in the call's data */
	__u32 chunk_len;
	char comm[TASK_COMM_LEN];
	__u8 data[DATA_CHUNK];
};

struct ssl_close_event {
	__u32 type; /* SSL_EVENT_TYPE_CLOSE */
	__u32 pid;
	__u32 tid;
	__u32 _pad;
	__u64 ts_ns;
	__u64 conn;
	__u64 cgroup; /* as in ssl_data_event */
	char comm[TASK_COMM_LEN];
};

/* SOCK_INFO: connection `conn` of process `pid` goes over this descriptor.
 * Addresses are in network order (IPv4: the first 4 bytes), ports in host
 * order; a pipe or unix socket has none. */
struct sock_event {
	__u32 type; /* SOCK_INFO */
	__u32 pid;
	__u32 tid;
	__s32 fd; /* -1: not known (the fentry path sees the socket only) */
	__u64 ts_ns;
	__u64 conn;
	__u64 cgroup;
	__u32 netns;  /* inode of the socket's network namespace (0: none) */
	__u16 family; /* AF_INET, AF_INET6, AF_UNIX, ...; 0: not a socket */
	__u8 transport; /* enum sock_transport */
	__u8 flags;     /* enum sock_event_flags */
	__u16 local_port;
	__u16 peer_port;
	__u32 _pad;
	__u8 local_addr[16];
	__u8 peer_addr[16];
};

/* What the JVM agent's native library (jvm/native) hands jsse.bpf.h when
 * the Java side first sees a connection: the library includes this header
 * too, so both read one layout. Ports in host order. */
struct jsse_conn {
	__u64 id;         /* the Java side's number for the connection */
	__u32 flags;      /* enum jsse_conn_flags */
	__u16 family;     /* AF_INET, AF_INET6 (of both addresses) */
	__u16 local_port;
	__u16 peer_port;
	__u16 name_len;   /* bytes of `name`; 0: no server name */
	__u32 _pad;
	__u8 local_addr[16];
	__u8 peer_addr[16];
	char name[MAX_NAME]; /* the server name, not NUL-terminated */
};

enum jsse_conn_flags {
	/* The JVM is the connection's client (it sent the server name). */
	JSSE_CLIENT = 1,
	JSSE_LOCAL_KNOWN = 2,
	JSSE_PEER_KNOWN = 4,
};

/* JSSE_VERDICT */
struct jsse_verdict_event {
	__u32 type; /* JSSE_VERDICT */
	__u32 pid;
	__u64 conn;
	__u32 wanted; /* 1: captured; 0: not (names, endpoints, filters) */
	__u32 _pad;
};

/* The direction of a jsse data call. */
enum jsse_direction {
	JSSE_SENT = 0,
	JSSE_RECEIVED = 1,
};

/* SNI_CONFIGURED: a connection's server name was set and matched a pattern
 * (or no pattern was given). Emitted on the data ring buffer, before any
 * data of that connection. */
struct sni_event {
	__u32 type; /* SNI_CONFIGURED */
	__u32 pid;
	__u32 tid;
	__u32 rule; /* id of the pattern that matched (0: no patterns given) */
	__u64 ts_ns;
	__u64 conn;
	__u64 cgroup; /* as in ssl_data_event */
	char comm[TASK_COMM_LEN];
	char name[MAX_NAME]; /* NUL-terminated, lower case */
};

/* Values of `cgroup_names` (emit.h): the name of a cgroup that records came
 * from, which names its container; kept after the cgroup is gone. */
struct cgroup_name {
	char name[CGROUP_NAME];
};

/* Indexes of the per-CPU counters array `stats`. */
enum stat_index {
	STAT_DATA_LOST = 0,      /* data records the ring buffer had no room for */
	STAT_DISCOVER_LOST = 1,  /* MMAP_EXEC_FILE records lost */
	STAT_READ_FAILED = 2,    /* user memory that could not be read */
	STAT_SNI_FULL = 3,       /* server-name decisions not stored: map full */
	STAT_RETURNS_LOST = 4,   /* requests for return probes the ring had no room for */
	STAT_RETURN_MISSED = 5,  /* wanted calls whose return was never seen (plaintext lost) */
	STAT_SOCK_FULL = 6,      /* a socket learned but not remembered: conn_socks full */
	/* Erlang records not emitted: their key was never tied to its
	 * socket, or more were held than erlang.bpf.h keeps */
	STAT_ERLANG_UNTIED = 7,
	STAT_MAX = 8,
};

/*
 * One variable of every ABI type, in the object that defines
 * PLAINSIGHT_ABI_TYPES before including this file (openssl.bpf.c): the
 * skeleton generator emits Rust types only for what a global variable
 * reaches. Never read or written by the programs.
 */
#ifdef PLAINSIGHT_ABI_TYPES
struct abi_types {
	enum event_type event_type;
	enum exec_source exec_source;
	enum abi_sizes abi_sizes;
	enum seen_state seen_state;
	enum data_flags data_flags;
	enum stat_index stat_index;
	struct file_key file_key;
	struct returns_key returns_key;
	struct mmap_exec_file_event mmap_exec_file_event;
	struct ssl_data_event ssl_data_event;
	struct ssl_close_event ssl_close_event;
	struct sni_event sni_event;
	struct sock_event sock_event;
	enum sock_transport sock_transport;
	enum sock_event_flags sock_event_flags;
	struct cgroup_name cgroup_name;
	struct jsse_conn jsse_conn;
	struct jsse_verdict_event jsse_verdict_event;
	enum jsse_conn_flags jsse_conn_flags;
	enum jsse_direction jsse_direction;
} abi_types;
#endif

#endif
