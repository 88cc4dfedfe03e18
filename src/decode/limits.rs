//! Every bound on what a captured process can make the agent hold or write.
//!
//! Any process on the host may be hostile, and the bytes it hands its TLS
//! library are input to a root process: each limit below turns a way to
//! make the agent grow (memory) or write far more than was captured
//! (output amplification) into a bounded, reported cut. What happens at a
//! limit is said next to it; the output shows each as a `notice`.

/// Decoded header bytes kept per message: the sum of name and value lengths
/// of its header fields (HTTP/2: pseudo-header fields included) and of its
/// trailer fields. 64 KiB is what common servers accept as a whole header
/// section (nginx, Go, Envoy default to 8-64 KiB), so real messages are not
/// cut, while a message can no longer decode to megabytes (an HPACK block
/// that references a large dynamic table entry many times). Fields past the
/// limit are dropped, the one that crosses it is cut to fit exactly, and a
/// notice says so.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Header plus trailer fields kept per message (past it: dropped, notice).
/// Bounds messages of many empty fields, which `MAX_HEADER_BYTES` does not.
pub const MAX_FIELDS: usize = 256;

/// Trailer fields kept per message (past it: dropped, notice). Trailers are
/// a handful in practice (gRPC: 2-3); HTTP/2 lets a peer send any number of
/// header blocks on an open stream, each added to the trailers.
pub const MAX_TRAILERS: usize = 64;

/// Body bytes kept per message; the rest is counted (`body_len`), not kept.
pub const MAX_BODY_KEEP: usize = 1 << 20;

/// Body bytes kept across the open messages of one connection, so that
/// concurrent HTTP/2 streams (or pipelined HTTP/1 requests) cannot hold
/// `MAX_BODY_KEEP` each: past it, body bytes are counted, not kept (the
/// message says `body_truncated`). Half of `CONN_MEMORY`, leaving the rest
/// for headers and buffers.
pub const CONN_BODY_KEEP: usize = CONN_MEMORY / 2;

/// An HTTP/2 header block whose decoded list (RFC 7541 sizes: name and
/// value plus 32 per field) is larger than this is an attack, not a request:
/// no server accepts one (their SETTINGS_MAX_HEADER_LIST_SIZE is 16-64 KiB, Go's
/// 1 MiB). Decoding of the connection stops there and the rest is shown raw.
pub const MAX_HEADER_LIST: usize = 1 << 20;

/// Largest HTTP/2 header block (HEADERS or PUSH_PROMISE and CONTINUATIONs,
/// as sent) buffered; a larger one stops decoding (rest raw).
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Largest HPACK dynamic table an encoder may switch to (per direction).
/// Browsers advertise 64 KiB (SETTINGS_HEADER_TABLE_SIZE), servers 4 KiB; a
/// larger in-band size update stops decoding (rest raw).
pub const MAX_TABLE_SIZE: usize = 64 << 10;

/// HTTP/2 streams decoded at once on one connection. Servers allow 100-250
/// concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS). A new stream past
/// the limit closes the open stream with the lowest id first (it is shown
/// incomplete, as if reset), so new traffic stays visible; a notice says so
/// the first time, and how many at the end.
pub const MAX_STREAMS: usize = 256;

/// HTTP/1 requests waiting for their response on one connection
/// (pipelining). Past it the oldest is shown without a response (the
/// response, when it comes, is shown without its request); a notice says so
/// the first time, and how many at the end.
pub const MAX_PIPELINED: usize = 64;

/// Output amplification budget of a connection: the bytes of decoded
/// exchanges (header and trailer fields, method, path, authority, kept
/// bodies) may be at most `AMPLIFICATION_FACTOR` times the plaintext bytes
/// captured on it, plus `AMPLIFICATION_SLACK`. HPACK legitimately decodes
/// to several times its size (an indexed field is one byte), but a
/// connection of ordinary requests stays well under 16x; the slack covers
/// the first requests, before the table pays off. Past it, the connection is
/// shown raw from there (raw output is the captured bytes), with a notice.
pub const AMPLIFICATION_FACTOR: u64 = 16;
/// See [`AMPLIFICATION_FACTOR`].
pub const AMPLIFICATION_SLACK: u64 = 1 << 20;

/// Decoding state one connection may hold (buffered bytes, open messages'
/// headers and bodies, HPACK tables). Past it, what the connection has is
/// flushed (open exchanges shown incomplete) and the rest is shown raw, with
/// a notice. 4 MiB is several times what ordinary traffic needs (bodies are
/// kept up to `CONN_BODY_KEEP` anyway).
pub const CONN_MEMORY: usize = 4 << 20;

/// Decoding state all connections together may hold. Past it, the least
/// recently active connections are flushed (open exchanges shown
/// incomplete, a notice) and forgotten until the total is under
/// `TOTAL_MEMORY_LOW`. 128 MiB keeps the agent small on any host while
/// allowing 32 connections at `CONN_MEMORY` at once (thousands of ordinary
/// ones).
pub const TOTAL_MEMORY: usize = 128 << 20;
/// Where eviction stops (so that it does not run again at the next record).
pub const TOTAL_MEMORY_LOW: usize = TOTAL_MEMORY / 4 * 3;

/// What a connection costs besides what it buffers and decodes (its entry,
/// metadata, decoder structures), counted in the totals so that many small
/// connections are bounded too.
pub const CONN_OVERHEAD: usize = 1024;

/// A connection without data for this long is flushed (open exchanges shown
/// incomplete, a notice) and forgotten. Some capture paths never see a close
/// (AEAD and ring key contexts, Go connections that are not closed), and a
/// process can open connections it never uses: without it, their state
/// would stay until the process exits. 5 minutes is longer than the idle
/// timeouts of common clients and servers (60-120 s keep-alive). Data that
/// comes later starts a new decoder.
pub const IDLE_TIMEOUT_NS: u64 = 300 * 1_000_000_000;

/// Payload bytes of one database protocol message kept while it is read
/// (PostgreSQL and MySQL messages, MySQL's multi-packet payloads joined);
/// the rest is counted and passed on, not held. A query longer than this
/// is shown cut (`query_truncated`); rows are counted from their headers.
pub const DB_MESSAGE_KEEP: usize = 64 << 10;

/// Query text kept per database record (after sanitizing).
pub const DB_QUERY_KEEP: usize = 64 << 10;

/// Redis reply text kept per record (`response`, like a body: the rest is
/// cut, `response_truncated` says so). Aggregates are summarised within it.
pub const DB_RESPONSE_KEEP: usize = 64 << 10;

/// Prepared statements remembered per connection (PostgreSQL named
/// statements, MySQL statement ids), and the bytes of their texts. Past
/// either, the oldest is forgotten (a later execution of it shows no text);
/// a notice says so the first time. Applications prepare tens to hundreds
/// of statements per connection (drivers cache 100-256).
pub const DB_STATEMENTS: usize = 256;
/// See [`DB_STATEMENTS`].
pub const DB_STATEMENT_BYTES: usize = 1 << 20;

/// Database commands waiting for their answer on one connection (pipelined
/// commands, Redis pipelines, PostgreSQL extended-protocol batches). Past
/// it the oldest is shown unanswered; a notice says so the first time.
pub const DB_PENDING: usize = 1024;

/// Longest RESP line (a type byte to CRLF: simple strings, errors, numbers,
/// lengths) and inline command. Past it the stream is not RESP: the rest of
/// the connection is shown raw.
pub const RESP_LINE: usize = 64 << 10;

/// Deepest nesting of RESP aggregates decoded (replies are 1-3 deep in
/// practice); deeper is a protocol error (rest raw).
pub const RESP_DEPTH: usize = 32;

/// Arguments of one Redis command kept (a command may have millions: MSET,
/// pipelines of RPUSH); the rest are counted and shown as `...`.
pub const RESP_ARGS: usize = 64;
