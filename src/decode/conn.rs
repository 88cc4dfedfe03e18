//! One connection: its two directions rebuilt as ordered byte streams,
//! classified by their first bytes (HTTP/2 preface, HTTP/1 request or status
//! line; anything else stays raw) and decoded.
//!
//! Lost bytes are never glued over: an HTTP/1 direction restarts its parser
//! at the next call (and stays raw until one parses), HTTP/2 loses its HPACK
//! state and the rest of the connection is shown raw. The `segments` carry
//! the bytes as they should appear on the wire (redacted), with the size of
//! every hole, for the pcapng writer.

use super::http1::{Http1Conn, Http1Error};
use super::http2::{self, Http2Conn};
use super::{Exchange, Peer, Redact};

/// Bytes undecided after this many are raw.
const CLASSIFY_LIMIT: usize = 4096;

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// What a connection's bytes turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Exchange(Box<Exchange>),
    /// Bytes that are not (or could not be decoded as) HTTP.
    Raw {
        /// The captured process sent them (write) or received them (read).
        outgoing: bool,
        ts_ns: u64,
        data: Vec<u8>,
    },
    /// Decoding problem (lost bytes, a protocol error); what follows says
    /// how the connection is shown from here.
    Notice {
        ts_ns: u64,
        text: String,
    },
}

/// Bytes for the wire view (pcapng).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub from_client: bool,
    pub ts_ns: u64,
    /// Bytes lost before these.
    pub gap_before: u64,
    pub data: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Decoded {
    pub items: Vec<Item>,
    pub segments: Vec<Segment>,
}

#[derive(Debug)]
enum State {
    /// Held (outgoing, bytes, ts) until the first bytes tell the protocol.
    Unknown(Vec<(bool, Vec<u8>, u64)>),
    Http1 {
        conn: Box<Http1Conn>,
        failed: [bool; 2],
    },
    Http2(Box<Http2Conn>),
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Wait,
    Raw,
    Http1 { client_outgoing: bool },
    Http2 { client_outgoing: bool },
}

fn could_become(data: &[u8], word: &[u8]) -> bool {
    let n = data.len().min(word.len());
    data[..n] == word[..n]
}

/// What the first bytes of one direction say about the connection.
fn classify(outgoing: bool, data: &[u8]) -> Verdict {
    if data.starts_with(http2::PREFACE) {
        return Verdict::Http2 {
            client_outgoing: outgoing,
        };
    }
    // A server's first SETTINGS frame: length a multiple of 6, type 4,
    // no flags, stream 0.
    if data.len() >= 9 && data[3] == 4 && data[4] == 0 && data[5..9] == [0, 0, 0, 0] {
        let len = u32::from_be_bytes([0, data[0], data[1], data[2]]);
        if len % 6 == 0 && len <= 16384 {
            return Verdict::Http2 {
                client_outgoing: !outgoing,
            };
        }
    }
    for m in METHODS {
        let word = format!("{m} ");
        if data.starts_with(word.as_bytes()) {
            return Verdict::Http1 {
                client_outgoing: outgoing,
            };
        }
    }
    if data.starts_with(b"HTTP/1.") {
        return Verdict::Http1 {
            client_outgoing: !outgoing,
        };
    }
    let maybe = http2::maybe_preface(data)
        || could_become(data, b"HTTP/1.")
        || METHODS
            .iter()
            .any(|m| could_become(data, format!("{m} ").as_bytes()));
    if maybe && data.len() < CLASSIFY_LIMIT {
        Verdict::Wait
    } else {
        Verdict::Raw
    }
}

/// Decoder of one connection.
#[derive(Debug)]
pub struct ConnDecoder {
    state: State,
    redact: Redact,
    /// Whether the captured process is the client (known once classified;
    /// raw connections count the process as the client).
    client_outgoing: Option<bool>,
    /// Bytes lost per direction (outgoing, incoming) not yet shown as a gap.
    gaps: [u64; 2],
}

impl ConnDecoder {
    pub fn new(redact: Redact) -> ConnDecoder {
        ConnDecoder {
            state: State::Unknown(Vec::new()),
            redact,
            client_outgoing: None,
            gaps: [0, 0],
        }
    }

    /// Whether the captured process is the client (None: not known yet).
    #[cfg(test)]
    pub fn process_is_client(&self) -> Option<bool> {
        self.client_outgoing
    }

    /// One call's bytes. `lost` bytes of the call were never captured (lost
    /// records, or cut at the capture limit): they follow `data`.
    pub fn push(&mut self, outgoing: bool, data: &[u8], ts_ns: u64, lost: u64) -> Decoded {
        let mut out = Decoded::default();
        if let State::Unknown(held) = &mut self.state {
            held.push((outgoing, data.to_vec(), ts_ns));
            let first: Vec<u8> = held
                .iter()
                .filter(|h| h.0 == outgoing)
                .flat_map(|h| h.1.clone())
                .collect();
            let verdict = match classify(outgoing, &first) {
                Verdict::Wait if lost > 0 => Verdict::Raw,
                v => v,
            };
            let state = match verdict {
                Verdict::Wait => return out,
                Verdict::Raw => {
                    self.client_outgoing = Some(true);
                    State::Raw
                }
                Verdict::Http1 { client_outgoing } => {
                    self.client_outgoing = Some(client_outgoing);
                    State::Http1 {
                        conn: Box::new(Http1Conn::new(self.redact.clone())),
                        failed: [false; 2],
                    }
                }
                Verdict::Http2 { client_outgoing } => {
                    self.client_outgoing = Some(client_outgoing);
                    State::Http2(Box::new(Http2Conn::new(self.redact.clone())))
                }
            };
            let State::Unknown(held) = std::mem::replace(&mut self.state, state) else {
                unreachable!()
            };
            let n = held.len();
            for (i, (o, d, t)) in held.into_iter().enumerate() {
                let l = if i + 1 == n { lost } else { 0 };
                self.decode(o, &d, t, l, &mut out);
            }
            return out;
        }
        self.decode(outgoing, data, ts_ns, lost, &mut out);
        out
    }

    fn peer(&self, outgoing: bool) -> Peer {
        if Some(outgoing) == self.client_outgoing {
            Peer::Client
        } else {
            Peer::Server
        }
    }

    fn segment(&mut self, out: &mut Decoded, outgoing: bool, ts_ns: u64, data: Vec<u8>) {
        segment(
            &mut self.gaps,
            self.client_outgoing,
            out,
            outgoing,
            ts_ns,
            data,
        );
    }

    fn decode(&mut self, outgoing: bool, data: &[u8], ts_ns: u64, lost: u64, out: &mut Decoded) {
        let peer = self.peer(outgoing);
        let ConnDecoder {
            state,
            gaps,
            client_outgoing,
            ..
        } = self;
        let client_outgoing = *client_outgoing;
        let mut seg = |out: &mut Decoded, data: Vec<u8>| {
            segment(gaps, client_outgoing, out, outgoing, ts_ns, data)
        };
        match state {
            State::Unknown(_) => unreachable!("classified before decoding"),
            State::Raw => {
                out.items.push(Item::Raw {
                    outgoing,
                    ts_ns,
                    data: data.to_vec(),
                });
                seg(out, data.to_vec());
            }
            State::Http1 { conn, failed } => {
                let side = usize::from(peer == Peer::Server);
                if failed[side] {
                    // Try to pick up again at this call.
                    conn.restart(peer);
                }
                let o = conn.push(peer, data, ts_ns);
                out.items
                    .extend(o.exchanges.into_iter().map(|e| Item::Exchange(Box::new(e))));
                let mut wire = o.wire;
                match o.error {
                    None => {
                        if failed[side] {
                            out.items.push(Item::Notice {
                                ts_ns,
                                text: format!("HTTP/1 {} stream decodable again", peer_name(peer)),
                            });
                            failed[side] = false;
                        }
                    }
                    Some(e) => {
                        let rest = conn.take_unparsed(peer);
                        if !failed[side] {
                            out.items.push(Item::Notice {
                                ts_ns,
                                text: http1_failure(peer, &e),
                            });
                        }
                        failed[side] = true;
                        out.items.push(Item::Raw {
                            outgoing,
                            ts_ns,
                            data: rest.clone(),
                        });
                        wire.extend(rest);
                    }
                }
                let upgraded = conn.upgraded;
                if lost > 0 {
                    conn.restart(peer);
                    failed[side] = true;
                    out.items.push(Item::Notice {
                        ts_ns,
                        text: format!(
                            "{lost} bytes of the {} stream were not captured",
                            peer_name(peer)
                        ),
                    });
                }
                seg(out, wire);
                if upgraded {
                    out.items.push(Item::Notice {
                        ts_ns,
                        text: "the connection switched protocols (101): shown raw from here".into(),
                    });
                    *state = State::Raw;
                }
            }
            State::Http2(conn) => match conn.push(peer, data, ts_ns) {
                Ok(o) => {
                    out.items
                        .extend(o.exchanges.into_iter().map(|e| Item::Exchange(Box::new(e))));
                    seg(out, o.wire);
                    if lost > 0 {
                        out.items.push(Item::Notice {
                            ts_ns,
                            text: format!(
                                "{lost} bytes of the HTTP/2 {} stream were not captured: \
                                 the rest of the connection is shown raw",
                                peer_name(peer)
                            ),
                        });
                        let open = conn.finish();
                        out.items
                            .extend(open.into_iter().map(|e| Item::Exchange(Box::new(e))));
                        *state = State::Raw;
                    }
                }
                Err(e) => {
                    out.items.push(Item::Notice {
                        ts_ns,
                        text: format!("HTTP/2: {e}: the rest of the connection is shown raw"),
                    });
                    let open = conn.finish();
                    out.items
                        .extend(open.into_iter().map(|e| Item::Exchange(Box::new(e))));
                    *state = State::Raw;
                    out.items.push(Item::Raw {
                        outgoing,
                        ts_ns,
                        data: data.to_vec(),
                    });
                    seg(out, data.to_vec());
                }
            },
        }
        if lost > 0 {
            self.gaps[usize::from(!outgoing)] += lost;
        }
    }

    /// The connection closed: what was still open.
    pub fn finish(&mut self, ts_ns: u64) -> Decoded {
        let mut out = Decoded::default();
        match std::mem::replace(&mut self.state, State::Raw) {
            State::Unknown(held) => {
                self.client_outgoing = Some(true);
                for (o, d, t) in held {
                    out.items.push(Item::Raw {
                        outgoing: o,
                        ts_ns: t,
                        data: d.clone(),
                    });
                    self.segment(&mut out, o, t, d);
                }
            }
            State::Http1 { mut conn, .. } => {
                out.items.extend(
                    conn.finish()
                        .into_iter()
                        .map(|e| Item::Exchange(Box::new(e))),
                );
            }
            State::Http2(mut conn) => out.items.extend(
                conn.finish()
                    .into_iter()
                    .map(|e| Item::Exchange(Box::new(e))),
            ),
            State::Raw => {}
        }
        let _ = ts_ns;
        out
    }
}

/// Wire bytes of one direction, after the hole lost before them.
fn segment(
    gaps: &mut [u64; 2],
    client_outgoing: Option<bool>,
    out: &mut Decoded,
    outgoing: bool,
    ts_ns: u64,
    data: Vec<u8>,
) {
    let from_client = client_outgoing == Some(outgoing);
    let gap = std::mem::take(&mut gaps[usize::from(!outgoing)]);
    if !data.is_empty() || gap > 0 {
        out.segments.push(Segment {
            from_client,
            ts_ns,
            gap_before: gap,
            data,
        });
    }
}

fn peer_name(p: Peer) -> &'static str {
    match p {
        Peer::Client => "request",
        Peer::Server => "response",
    }
}

fn http1_failure(peer: Peer, e: &Http1Error) -> String {
    format!(
        "HTTP/1 {} stream: {e}: shown raw until a call starts a message",
        peer_name(peer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchanges(d: &Decoded) -> Vec<&Exchange> {
        d.items
            .iter()
            .filter_map(|i| match i {
                Item::Exchange(e) => Some(&**e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn classifies_by_first_bytes() {
        assert_eq!(
            classify(true, b"GET / HTTP/1.1\r\n"),
            Verdict::Http1 {
                client_outgoing: true
            }
        );
        assert_eq!(
            classify(false, b"GET / HTTP/1.1\r\n"),
            Verdict::Http1 {
                client_outgoing: false
            }
        );
        assert_eq!(
            classify(false, b"HTTP/1.1 200 OK\r\n"),
            Verdict::Http1 {
                client_outgoing: true
            }
        );
        assert_eq!(classify(true, b"PO"), Verdict::Wait);
        assert_eq!(classify(true, b"PRI * HTTP/2.0\r\n"), Verdict::Wait);
        assert_eq!(
            classify(true, http2::PREFACE),
            Verdict::Http2 {
                client_outgoing: true
            }
        );
        assert_eq!(
            classify(false, &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]),
            Verdict::Http2 {
                client_outgoing: true
            }
        );
        assert_eq!(classify(true, b"\x00\x01binary"), Verdict::Raw);
        assert_eq!(classify(true, b"SSH-2.0-OpenSSH"), Verdict::Raw);
    }

    #[test]
    fn server_side_capture_and_split_first_line() {
        // The captured process is the server: requests are incoming.
        let mut c = ConnDecoder::new(Redact::new(&[]));
        assert!(c.push(false, b"GE", 1, 0).items.is_empty());
        assert!(c
            .push(
                false,
                b"T /x HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\n\r\n",
                2,
                0
            )
            .items
            .is_empty());
        assert_eq!(c.process_is_client(), Some(false));
        let d = c.push(
            true,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            5,
            0,
        );
        let e = exchanges(&d);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path.as_deref(), Some("/x"));
        assert_eq!(e[0].status, Some(200));
        assert_eq!(e[0].request.as_ref().unwrap().ts_first_ns, 1);
        assert_eq!(e[0].latency_ns(), Some(4));
        assert_eq!(
            e[0].request.as_ref().unwrap().header("cookie"),
            Some(&b"[redacted]"[..])
        );
        assert_eq!(e[0].response.as_ref().unwrap().body, b"hi");
    }

    #[test]
    fn a_gap_restarts_the_parser_at_a_later_call() {
        let mut c = ConnDecoder::new(Redact::none());
        c.push(
            true,
            b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345",
            1,
            5,
        );
        // The rest of the body was lost; the next call is a new request.
        let d = c.push(true, b"GET /b HTTP/1.1\r\n\r\n", 2, 0);
        assert!(d.items.iter().any(|i| matches!(i, Item::Notice { .. })));
        assert_eq!(d.segments[0].gap_before, 5);
        let d = c.push(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 3, 0);
        let e = exchanges(&d);
        assert_eq!(e[0].path.as_deref(), Some("/b"));
    }

    #[test]
    fn not_http_is_raw_and_wire_is_unchanged() {
        let mut c = ConnDecoder::new(Redact::new(&[]));
        let d = c.push(true, b"\x16hello", 1, 0);
        assert_eq!(
            d.items,
            vec![Item::Raw {
                outgoing: true,
                ts_ns: 1,
                data: b"\x16hello".to_vec()
            }]
        );
        assert_eq!(d.segments[0].data, b"\x16hello");
        assert!(d.segments[0].from_client);
    }

    #[test]
    fn redacted_wire_for_http1() {
        let mut c = ConnDecoder::new(Redact::new(&[]));
        let d = c.push(
            true,
            b"GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\nHost: h\r\n\r\n",
            1,
            0,
        );
        assert_eq!(
            d.segments[0].data,
            b"GET / HTTP/1.1\r\nAuthorization: [redacted]\r\nHost: h\r\n\r\n"
        );
        let mut c = ConnDecoder::new(Redact::none());
        let d = c.push(
            true,
            b"GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n",
            1,
            0,
        );
        assert_eq!(
            d.segments[0].data,
            b"GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n"
        );
    }

    #[test]
    fn upgrade_switches_to_raw() {
        let mut c = ConnDecoder::new(Redact::none());
        c.push(
            true,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            1,
            0,
        );
        let d = c.push(false, b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 2, 0);
        assert_eq!(exchanges(&d)[0].status, Some(101));
        let d = c.push(true, b"\x81\x05hello", 3, 0);
        assert!(matches!(d.items[0], Item::Raw { .. }));
    }

    #[test]
    fn close_reports_open_requests_and_until_close_bodies() {
        let mut c = ConnDecoder::new(Redact::none());
        c.push(true, b"GET /a HTTP/1.1\r\n\r\n", 1, 0);
        c.push(false, b"HTTP/1.0 200 OK\r\n\r\nbody until close", 2, 0);
        let d = c.finish(3);
        let e = exchanges(&d);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].response.as_ref().unwrap().body, b"body until close");
        assert!(e[0].response.as_ref().unwrap().complete);
    }
}
