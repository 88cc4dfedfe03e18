//! Capture: turn the chunk records of the data ring buffer back into one
//! record per TLS library call.
//!
//! BPF copies a call's plaintext in `DATA_CHUNK` pieces, in order, from one
//! thread; pieces of other threads may come in between. A missing piece (the
//! ring buffer was full) is never glued over: the call is delivered with the
//! bytes that arrived and `lost_bytes` set.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::abi::{self, DataChunk, Event, DATA_FLAG_TRUNCATED};
use crate::config::Filter;
use crate::container::Container;
use crate::peer::EndpointFilter;
pub use crate::record::CallRecord;
use crate::record::{ConnFacts, Endpoints, Record};

/// Connections remembered at most (their server name, socket and role);
/// past it the oldest half is forgotten, counted.
pub const MAX_CONNS: usize = 65536;

/// What capture knows of one connection of a process.
#[derive(Debug, Default)]
struct Conn {
    name: Option<String>,
    endpoints: Option<Arc<Endpoints>>,
    /// From its server-name record: set by the process (a client) or
    /// received (a server).
    client: Option<bool>,
    /// It had data records.
    data: bool,
    /// Its server-name record, held while --port / --peer cannot tell yet
    /// (its socket not known): sent when the socket passes, dropped if not.
    held_sni: Option<Box<Record>>,
    /// Its place in the insertion order (for the bound).
    seq: u64,
}

impl Conn {
    /// It had data, and its socket never became known (the exit report
    /// counts such connections as they end).
    fn socket_unknown(&self) -> bool {
        self.data && self.endpoints.is_none()
    }
}

#[derive(Debug)]
struct Partial {
    rec: CallRecord,
    captured: u32,
    /// Offset the next chunk should have.
    next: u32,
}

/// Reassembles chunks per thread.
#[derive(Debug, Default)]
pub struct Reassembler {
    partial: HashMap<u32, Partial>,
}

impl Reassembler {
    /// Feeds one chunk; returns the calls it completes (possibly a previous,
    /// incomplete call of the same thread too).
    pub fn push(&mut self, c: &DataChunk<'_>) -> Vec<CallRecord> {
        let mut out = Vec::new();
        let same_call = |p: &Partial| {
            p.rec.ts_ns == c.ts_ns && p.rec.conn == c.conn && p.rec.direction == c.direction
        };
        if let Some(p) = self.partial.get(&c.tid) {
            if !same_call(p) || c.offset < p.next {
                // A new call started before the previous one was complete.
                let mut p = self.partial.remove(&c.tid).expect("present");
                p.rec.lost_bytes += p.captured - p.next;
                out.push(p.rec);
            }
        }
        let p = self.partial.entry(c.tid).or_insert_with(|| Partial {
            rec: CallRecord {
                direction: c.direction,
                pid: c.pid,
                tid: c.tid,
                comm: c.comm.clone(),
                conn: c.conn,
                ts_ns: c.ts_ns,
                len: c.len,
                data: Vec::with_capacity(c.captured.min(1 << 20) as usize),
                truncated: c.flags & DATA_FLAG_TRUNCATED != 0,
                lost_bytes: 0,
                sni: None,
                facts: ConnFacts::default(),
            },
            captured: c.captured,
            next: 0,
        });
        if c.offset > p.next {
            // Chunks in between were lost.
            p.rec.lost_bytes += c.offset - p.next;
        }
        p.rec.data.extend_from_slice(c.data);
        p.next = c.offset.saturating_add(c.data.len() as u32);
        if p.next >= p.captured {
            let p = self.partial.remove(&c.tid).expect("present");
            out.push(p.rec);
        }
        out
    }

    /// Delivers whatever is still incomplete.
    pub fn flush(&mut self) -> Vec<CallRecord> {
        self.partial
            .drain()
            .map(|(_, mut p)| {
                p.rec.lost_bytes += p.captured.saturating_sub(p.next);
                p.rec
            })
            .collect()
    }
}

/// The capture side of the data ring buffers: parses each record, rebuilds
/// calls, remembers connections' server names, and queues records for the
/// output thread.
pub struct Capture {
    reasm: Reassembler,
    /// What is known of each connection, by (pid, connection).
    conns: HashMap<(u32, u64), Conn>,
    next_seq: u64,
    /// Connections forgotten for the bound before their close.
    conns_evicted: u64,
    /// Connections that ended with data but no known socket.
    sockets_unknown: u64,
    /// `--port` / `--peer`, checked again here (the kernel checks first).
    endpoint_filter: EndpointFilter,
    /// Containers of the processes records come from.
    containers: crate::container::Containers,
    /// `--container` prefixes, checked whole here (the kernel checks their
    /// first 12 digits).
    container_prefixes: Vec<String>,
    /// The kernel's names of the cgroups records come from (`cgroup_names`).
    cgroup_names: Vec<libbpf_rs::MapHandle>,
    /// The `--sni` patterns, by rule id - 1.
    patterns: Vec<String>,
    out: Sender<Record>,
    /// Records the output queue had no room for.
    dropped: u64,
    /// Where JSSE verdicts go (the JVM manager).
    jvm_verdicts: Option<crate::jvm::VerdictSink>,
}

impl Capture {
    /// `out` is bounded in records, and the bytes queued in
    /// `output::MAX_QUEUED_BYTES`: an output slower than the capture loses
    /// records (counted) instead of growing the agent's memory.
    pub fn new(out: Sender<Record>, patterns: Vec<String>) -> Capture {
        Capture {
            reasm: Reassembler::default(),
            conns: HashMap::new(),
            next_seq: 0,
            conns_evicted: 0,
            sockets_unknown: 0,
            endpoint_filter: EndpointFilter::default(),
            containers: Default::default(),
            container_prefixes: Vec::new(),
            cgroup_names: Vec::new(),
            patterns,
            out,
            dropped: 0,
            jvm_verdicts: None,
        }
    }

    /// Hands JSSE verdicts to the JVM manager.
    pub fn with_jvm_verdicts(mut self, sink: crate::jvm::VerdictSink) -> Capture {
        self.jvm_verdicts = Some(sink);
        self
    }

    /// A coverage record (a file carrying TLS code was classified), in the
    /// same record flow as the captures.
    pub fn coverage(&mut self, c: crate::record::Coverage) {
        self.send(Record::Coverage(c));
    }

    fn send(&mut self, r: Record) {
        use crate::record::{MAX_QUEUED_BYTES, QUEUED_BYTES};
        use std::sync::atomic::Ordering::Relaxed;
        let n = r.queued_bytes();
        if QUEUED_BYTES.load(Relaxed) + n > MAX_QUEUED_BYTES {
            self.dropped += 1;
            return;
        }
        QUEUED_BYTES.fetch_add(n, Relaxed);
        if self.out.try_send(r).is_err() {
            QUEUED_BYTES.fetch_sub(n, Relaxed);
            self.dropped += 1;
        }
    }

    /// Handles one ring-buffer record.
    pub fn on_record(&mut self, rec: &[u8]) {
        match abi::parse(rec) {
            Ok(Event::Data(c)) => {
                for mut call in self.reasm.push(&c) {
                    let key = (call.pid, call.conn);
                    call.facts = self.facts(key, c.cgroup);
                    if !self.wanted(&call.facts) {
                        continue;
                    }
                    let k = self.conn(key);
                    k.data = true;
                    call.sni = k.name.clone();
                    self.send(Record::Call(call));
                }
            }
            Ok(Event::Close(c)) => {
                let key = (c.pid, c.conn);
                let facts = self.facts(key, c.cgroup);
                let known = self.conns.remove(&key);
                if known.as_ref().is_some_and(Conn::socket_unknown) {
                    self.sockets_unknown += 1;
                }
                if !self.wanted(&facts) {
                    return;
                }
                self.send(Record::Close {
                    pid: c.pid,
                    tid: c.tid,
                    comm: c.comm,
                    conn: c.conn,
                    ts_ns: c.ts_ns,
                    sni: known.and_then(|k| k.name),
                    facts,
                });
            }
            Ok(Event::SniConfigured(e)) | Ok(Event::SniSent(e)) => self.on_sni(e, true),
            Ok(Event::SniReceived(e)) => self.on_sni(e, false),
            Ok(Event::SockInfo(s)) => {
                let e = Arc::new(Endpoints::of(&s));
                let k = self.conn((s.pid, s.conn));
                k.endpoints = Some(e.clone());
                if let Some(mut r) = k.held_sni.take() {
                    if self.endpoint_filter.passes(Some(&e)) {
                        if let Record::Sni { facts, .. } = &mut *r {
                            facts.endpoints = Some(e);
                        }
                        self.send(*r);
                    }
                }
            }
            Ok(Event::JsseVerdict(pid, conn, wanted)) => {
                if let Some(v) = &self.jvm_verdicts {
                    v.send(pid, conn, wanted);
                }
            }
            Ok(other) => log::warn!("unexpected record on a data ring buffer: {other:?}"),
            Err(e) => log::warn!("bad data record: {e}"),
        }
    }

    /// A connection's server name: set by the process (`client`) or sent
    /// by its client.
    fn on_sni(&mut self, e: abi::SniConfigured, client: bool) {
        let key = (e.pid, e.conn);
        let k = self.conn(key);
        k.name = Some(e.name.clone());
        k.client = Some(client);
        let facts = self.facts(key, e.cgroup);
        let pattern = (e.rule as usize)
            .checked_sub(1)
            .and_then(|i| self.patterns.get(i))
            .cloned();
        let unknown = facts.endpoints.is_none();
        let r = Record::Sni {
            pid: e.pid,
            tid: e.tid,
            comm: e.comm,
            conn: e.conn,
            ts_ns: e.ts_ns,
            name: e.name,
            pattern,
            facts,
        };
        if unknown && !self.endpoint_filter.is_empty() {
            // A client names its connection before its first I/O: the
            // endpoint filters decide when its socket is known.
            if self.container_wanted(r.facts().container.as_deref()) {
                self.conn(key).held_sni = Some(Box::new(r));
            }
            return;
        }
        if self.wanted(r.facts()) {
            self.send(r);
        }
    }

    /// The state of a connection, made on first sight (within the bound).
    fn conn(&mut self, key: (u32, u64)) -> &mut Conn {
        if !self.conns.contains_key(&key) && self.conns.len() >= MAX_CONNS {
            self.evict_oldest_half();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.conns.entry(key).or_insert_with(|| Conn {
            seq,
            ..Default::default()
        })
    }

    /// Forgets the oldest half of the connections (a process that never
    /// closes what it opens must not grow the agent).
    fn evict_oldest_half(&mut self) {
        let mut seqs: Vec<u64> = self.conns.values().map(|c| c.seq).collect();
        let mid = seqs.len() / 2;
        let (_, &mut cut, _) = seqs.select_nth_unstable(mid);
        let before = self.conns.len();
        self.conns.retain(|_, c| c.seq >= cut);
        self.conns_evicted += (before - self.conns.len()) as u64;
    }

    /// What is known of a connection now: its container (from the
    /// record's cgroup), its socket and the process's role.
    fn facts(&mut self, key: (u32, u64), cgroup: u64) -> ConnFacts {
        let container = self.container(cgroup, key.0);
        let known = self.conns.get(&key);
        ConnFacts {
            container,
            endpoints: known.and_then(|k| k.endpoints.clone()),
            client: known.and_then(|k| k.client),
        }
    }

    /// Whether a record passes the container and endpoint filters (the
    /// kernel applied them first).
    fn wanted(&self, f: &ConnFacts) -> bool {
        self.container_wanted(f.container.as_deref())
            && self.endpoint_filter.passes(f.endpoints.as_deref())
    }

    /// Connections ended with data but no socket known, and connections
    /// forgotten for the bound, so far.
    pub fn socket_stats(&self) -> (u64, u64) {
        (self.sockets_unknown, self.conns_evicted)
    }

    /// Checks `--port` / `--peer` on records too.
    pub fn with_endpoint_filter(mut self, f: EndpointFilter) -> Capture {
        self.endpoint_filter = f;
        self
    }

    /// Looks up containers by the cgroup names the kernel noted.
    pub fn with_cgroup_names(mut self, maps: Vec<libbpf_rs::MapHandle>) -> Capture {
        self.cgroup_names = maps;
        self
    }

    /// The container of a record's cgroup (by the name the kernel kept for
    /// it, so that it is known after the process and its cgroup are gone),
    /// or of its process.
    fn container(&mut self, cgroup: u64, pid: u32) -> Option<Arc<Container>> {
        use libbpf_rs::MapCore;
        let maps = &self.cgroup_names;
        let name = |cg: u64| {
            maps.iter().find_map(|m| {
                let v = m
                    .lookup(&cg.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
                    .ok()??;
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                Some(String::from_utf8_lossy(&v[..end]).into_owned())
            })
        };
        self.containers.of_cgroup(cgroup, pid, &name)
    }

    /// Keeps only calls of containers whose id starts with one of
    /// `prefixes` (`--container`).
    pub fn with_container_filter(mut self, prefixes: Vec<String>) -> Capture {
        self.container_prefixes = prefixes;
        self
    }

    /// The kernel let only the wanted containers' calls through (by their
    /// first 12 digits); a container known here must match a whole prefix.
    /// One not known (its process already gone) is kept.
    fn container_wanted(&self, c: Option<&Container>) -> bool {
        self.container_prefixes.is_empty()
            || c.is_none_or(|c| Filter::container_matches(&self.container_prefixes, &c.id))
    }

    /// Forgets the connections of processes that exited (counting those
    /// that had data and no known socket).
    pub fn forget_exited(&mut self, alive: &mut dyn FnMut(u32) -> bool) {
        let mut unknown = 0;
        self.conns.retain(|(pid, _), c| {
            let keep = alive(*pid);
            if !keep && c.socket_unknown() {
                unknown += 1;
            }
            keep
        });
        self.sockets_unknown += unknown;
        self.containers.forget(alive);
    }

    /// Records dropped because the output queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// At exit: calls whose last chunks never came are delivered as they
    /// are (within the queue's byte bound).
    pub fn flush(&mut self) {
        for call in self.reasm.flush() {
            self.send(Record::Call(call));
        }
        let unknown = self.conns.values().filter(|c| c.socket_unknown()).count();
        self.sockets_unknown += unknown as u64;
        self.conns.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Direction;
    use proptest::prelude::*;

    fn chunk<'a>(tid: u32, ts: u64, captured: u32, offset: u32, data: &'a [u8]) -> DataChunk<'a> {
        DataChunk {
            direction: Direction::Write,
            pid: 1,
            tid,
            flags: 0,
            ts_ns: ts,
            conn: 7,
            cgroup: 0,
            len: captured,
            captured,
            offset,
            comm: "t".into(),
            data,
        }
    }

    #[test]
    fn single_chunk_call() {
        let mut r = Reassembler::default();
        let out = r.push(&chunk(1, 10, 5, 0, b"hello"));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, b"hello");
        assert_eq!(out[0].lost_bytes, 0);
    }

    #[test]
    fn interleaved_threads_and_lost_chunk() {
        let mut r = Reassembler::default();
        assert!(r.push(&chunk(1, 10, 6, 0, b"abc")).is_empty());
        assert!(r.push(&chunk(2, 11, 4, 0, b"wx")).is_empty());
        let a = r.push(&chunk(1, 10, 6, 3, b"def"));
        assert_eq!(a[0].data, b"abcdef");
        // thread 2 loses its second chunk; its next call flushes it
        let b = r.push(&chunk(2, 12, 1, 0, b"z"));
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].data, b"wx");
        assert_eq!(b[0].lost_bytes, 2);
        assert_eq!(b[1].data, b"z");
    }

    #[test]
    fn first_chunk_lost_is_marked() {
        let mut r = Reassembler::default();
        let out = r.push(&chunk(1, 10, 6, 3, b"def"));
        assert_eq!(out[0].lost_bytes, 3);
        assert_eq!(out[0].data, b"def");
    }

    /// A SOCK_INFO record of (pid 1, `conn`), from 127.0.0.1:40000 to
    /// 127.0.0.1:8443.
    fn sock_record(conn: u64) -> Vec<u8> {
        use std::mem::{offset_of, size_of};
        type E = crate::bpf::openssl::types::sock_event;
        let mut b = vec![0u8; size_of::<E>()];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(0, &abi::SOCK_INFO.to_le_bytes());
        put(offset_of!(E, pid), &1u32.to_le_bytes());
        put(offset_of!(E, fd), &3i32.to_le_bytes());
        put(offset_of!(E, conn), &conn.to_le_bytes());
        put(offset_of!(E, family), &abi::AF_INET.to_le_bytes());
        put(offset_of!(E, transport), &[abi::TRANSPORT_TCP as u8]);
        put(offset_of!(E, local_port), &40000u16.to_le_bytes());
        put(offset_of!(E, peer_port), &8443u16.to_le_bytes());
        put(offset_of!(E, local_addr), &[127, 0, 0, 1]);
        put(offset_of!(E, peer_addr), &[127, 0, 0, 1]);
        b
    }

    fn close_record(conn: u64) -> Vec<u8> {
        use std::mem::{offset_of, size_of};
        type E = crate::bpf::openssl::types::ssl_close_event;
        let mut b = vec![0u8; size_of::<E>()];
        b[..4].copy_from_slice(&abi::SSL_EVENT_TYPE_CLOSE.to_le_bytes());
        b[offset_of!(E, pid)..][..4].copy_from_slice(&1u32.to_le_bytes());
        b[offset_of!(E, conn)..][..8].copy_from_slice(&conn.to_le_bytes());
        b
    }

    /// The connections capture remembers are bounded: past MAX_CONNS the
    /// oldest half goes, counted; a close frees its entry; the close
    /// record names the socket.
    #[test]
    fn connections_are_bounded_and_freed_at_close() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut c = Capture::new(tx, Vec::new());
        for conn in 0..MAX_CONNS as u64 {
            c.on_record(&sock_record(conn));
        }
        assert_eq!(c.conns.len(), MAX_CONNS);
        assert_eq!(c.socket_stats(), (0, 0));
        c.on_record(&sock_record(MAX_CONNS as u64));
        assert_eq!(c.socket_stats().1, (MAX_CONNS / 2) as u64);
        assert_eq!(c.conns.len(), MAX_CONNS / 2 + 1);
        // The newest are kept: its close names its socket, and frees it.
        c.on_record(&close_record(MAX_CONNS as u64));
        assert_eq!(c.conns.len(), MAX_CONNS / 2);
        let Ok(Record::Close { facts, .. }) = rx.try_recv() else {
            panic!("a close record")
        };
        let (client, server) = facts.client_server();
        assert_eq!(client, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(server, Some("127.0.0.1:8443".parse().unwrap()));
        // An evicted one's close has nothing to name.
        c.on_record(&close_record(0));
        let Ok(Record::Close { facts, .. }) = rx.try_recv() else {
            panic!("a close record")
        };
        assert_eq!(facts.endpoints, None);
    }

    fn sni_record(conn: u64) -> Vec<u8> {
        use std::mem::{offset_of, size_of};
        type E = crate::bpf::openssl::types::sni_event;
        let mut b = vec![0u8; size_of::<E>()];
        b[..4].copy_from_slice(&abi::SNI_CONFIGURED.to_le_bytes());
        b[offset_of!(E, pid)..][..4].copy_from_slice(&1u32.to_le_bytes());
        b[offset_of!(E, conn)..][..8].copy_from_slice(&conn.to_le_bytes());
        b[offset_of!(E, name)..][..12].copy_from_slice(b"api.acme.com");
        b
    }

    /// With --port, a server-name record that comes before its socket is
    /// known waits for it: shown (with the endpoints) if the socket passes,
    /// never if not.
    #[test]
    fn a_server_name_waits_for_its_socket_under_endpoint_filters() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let filter = EndpointFilter {
            ports: vec![8443],
            peers: Vec::new(),
        };
        let mut c = Capture::new(tx, Vec::new()).with_endpoint_filter(filter);
        c.on_record(&sni_record(1));
        assert!(rx.try_recv().is_err(), "held");
        c.on_record(&sock_record(1));
        let Ok(Record::Sni { name, facts, .. }) = rx.try_recv() else {
            panic!("the held record")
        };
        assert_eq!(name, "api.acme.com");
        assert_eq!(
            facts.client_server().1,
            Some("127.0.0.1:8443".parse().unwrap())
        );
        // Another port: dropped when its socket says so.
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut c = Capture::new(tx, Vec::new()).with_endpoint_filter(EndpointFilter {
            ports: vec![5432],
            peers: Vec::new(),
        });
        c.on_record(&sni_record(2));
        c.on_record(&sock_record(2));
        c.on_record(&close_record(2));
        assert!(
            rx.try_recv().is_err(),
            "nothing of a filtered-out connection"
        );
    }

    proptest! {
        // Any split of a call into ordered chunks, interleaved with another
        // thread's call, gives back both calls byte for byte.
        #[test]
        fn any_chunking_reassembles(data in proptest::collection::vec(any::<u8>(), 1..2000),
                                    cuts in proptest::collection::vec(1usize..300, 1..20)) {
            let mut r = Reassembler::default();
            let n = data.len() as u32;
            let mut off = 0usize;
            let mut got = Vec::new();
            for c in cuts.iter().cycle() {
                if off >= data.len() { break; }
                let end = (off + c).min(data.len());
                got.extend(r.push(&chunk(1, 5, n, off as u32, &data[off..end])));
                got.extend(r.push(&chunk(9, 6, 1, 0, b"x")));
                off = end;
            }
            let mine: Vec<_> = got.iter().filter(|c| c.tid == 1).collect();
            prop_assert_eq!(mine.len(), 1);
            prop_assert_eq!(&mine[0].data, &data);
            prop_assert_eq!(mine[0].lost_bytes, 0);
        }
    }
}
