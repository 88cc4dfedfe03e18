//! Capture: turn the chunk records of the data ring buffer back into one
//! record per TLS library call.
//!
//! BPF copies a call's plaintext in `DATA_CHUNK` pieces, in order, from one
//! thread; pieces of other threads may come in between. A missing piece (the
//! ring buffer was full) is never glued over: the call is delivered with the
//! bytes that arrived and `lost_bytes` set.

use std::collections::HashMap;

use crossbeam_channel::Sender;

use crate::abi::{self, DataChunk, Direction, Event, DATA_FLAG_TRUNCATED};
use crate::output::Record;

/// The plaintext of one successful `SSL_write`/`SSL_read`-like call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub direction: Direction,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub conn: u64,
    pub ts_ns: u64,
    /// Bytes the call reported.
    pub len: u32,
    /// The bytes captured (`len` unless truncated or lost).
    pub data: Vec<u8>,
    /// The call reported more than the capture limit.
    pub truncated: bool,
    /// Bytes of the captured range that never arrived (lost records).
    pub lost_bytes: u32,
    /// Server name of the connection, when known.
    pub sni: Option<String>,
    /// The process's container (None: on the host).
    pub container: Option<std::sync::Arc<crate::container::Container>>,
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
                container: None,
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
    /// Server names by (pid, connection).
    names: HashMap<(u32, u64), String>,
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
}

impl Capture {
    /// `out` is bounded in records, and the bytes queued in
    /// `output::MAX_QUEUED_BYTES`: an output slower than the capture loses
    /// records (counted) instead of growing the agent's memory.
    pub fn new(out: Sender<Record>, patterns: Vec<String>) -> Capture {
        Capture {
            reasm: Reassembler::default(),
            names: HashMap::new(),
            containers: Default::default(),
            container_prefixes: Vec::new(),
            cgroup_names: Vec::new(),
            patterns,
            out,
            dropped: 0,
        }
    }

    fn send(&mut self, r: Record) {
        use crate::output::{MAX_QUEUED_BYTES, QUEUED_BYTES};
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
                    call.sni = self.names.get(&(call.pid, call.conn)).cloned();
                    call.container = self.container(c.cgroup, call.pid);
                    if !self.container_wanted(call.container.as_deref()) {
                        continue;
                    }
                    self.send(Record::Call(call));
                }
            }
            Ok(Event::Close(c)) => {
                let sni = self.names.remove(&(c.pid, c.conn));
                self.send(Record::Close {
                    pid: c.pid,
                    tid: c.tid,
                    comm: c.comm,
                    conn: c.conn,
                    ts_ns: c.ts_ns,
                    sni,
                });
            }
            Ok(Event::SniConfigured(e)) | Ok(Event::SniSent(e)) | Ok(Event::SniReceived(e)) => {
                self.names.insert((e.pid, e.conn), e.name.clone());
                self.container(e.cgroup, e.pid);
                let pattern = (e.rule as usize)
                    .checked_sub(1)
                    .and_then(|i| self.patterns.get(i))
                    .cloned();
                self.send(Record::Sni {
                    pid: e.pid,
                    tid: e.tid,
                    comm: e.comm,
                    conn: e.conn,
                    ts_ns: e.ts_ns,
                    name: e.name,
                    pattern,
                });
            }
            Ok(other) => log::warn!("unexpected record on a data ring buffer: {other:?}"),
            Err(e) => log::warn!("bad data record: {e}"),
        }
    }

    /// Looks up containers by the cgroup names the kernel noted.
    pub fn with_cgroup_names(mut self, maps: Vec<libbpf_rs::MapHandle>) -> Capture {
        self.cgroup_names = maps;
        self
    }

    /// The container of a record's cgroup (by the name the kernel kept for
    /// it, so that it is known after the process and its cgroup are gone),
    /// or of its process.
    fn container(
        &mut self,
        cgroup: u64,
        pid: u32,
    ) -> Option<std::sync::Arc<crate::container::Container>> {
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
    fn container_wanted(&self, c: Option<&crate::container::Container>) -> bool {
        self.container_prefixes.is_empty()
            || c.is_none_or(|c| {
                crate::config::Filter::container_matches(&self.container_prefixes, &c.id)
            })
    }

    /// Forgets the server names of processes that exited.
    pub fn forget_exited(&mut self, alive: &mut dyn FnMut(u32) -> bool) {
        self.names.retain(|(pid, _), _| alive(*pid));
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
