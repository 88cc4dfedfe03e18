//! `--pcap FILE`: captured plaintext as a pcapng file of synthetic TCP
//! packets, so that Wireshark and tshark dissect HTTP/1.1 and HTTP/2 from it
//! with no options.
//!
//! Each connection gets a three-way handshake when it opens, one TCP segment
//! (or several, for large payloads) per captured write, and FINs when it
//! closes. Packets are raw IP (LINKTYPE_RAW: IPv4 or IPv6 by the version
//! nibble) with correct IPv4 header and TCP checksums, so tshark's checksum
//! validation passes. Timestamps are nanoseconds: the interface declares
//! `if_tsresol = 9`, which is what pcap-file's Enhanced Packet Block writer
//! needs (it always stores the timestamp as a count of nanoseconds; without
//! the option readers assume microseconds and every time is 1000x off).
//!
//! Every packet of a connection carries the connection's comment (process,
//! pid, server name) as an EPB comment, shown by Wireshark as a packet
//! comment (`frame.comment`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

/// One side of a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

impl From<std::net::SocketAddr> for Endpoint {
    fn from(a: std::net::SocketAddr) -> Endpoint {
        Endpoint {
            addr: a.ip(),
            port: a.port(),
        }
    }
}

/// Port of the synthetic server. Wireshark's HTTP dissector is registered on
/// TCP port 80, and when a stream there starts with the HTTP/2 connection
/// preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`) the HTTP dissector hands the
/// whole stream to the HTTP/2 dissector (checked with tshark 4.0.17: both
/// `http.request` and `http2.header` fields come out with default
/// preferences; on port 443 neither does, as it is taken for TLS).
pub const SYNTHETIC_SERVER_PORT: u16 = 80;

/// Most payload bytes in one synthetic segment. Keeps every packet well below
/// the 65535-byte IPv4 total length / IPv6 payload length limits.
pub const MAX_SEGMENT: usize = 32 * 1024;

/// A gap larger than this is recorded as this many bytes: TCP sequence
/// numbers are compared modulo 2^32 with a signed difference, so a jump of
/// 2^31 or more would look like a retransmission instead of a lost segment.
const MAX_GAP: u64 = 1 << 30;

/// Longest packet comment written (the pcapng option length is 16 bits).
const MAX_COMMENT: usize = 4096;

/// Window scale shift announced in SYN and SYN-ACK: the window field of 65535
/// then means ~1 GiB, so that long one-way transfers (the other side never
/// acknowledges with a packet of its own) are not flagged "window full".
const WSCALE: u8 = 14;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

const PREFIX_CLIENT: [u8; 4] = [0xfd, b'p', b'l', b'c'];
const PREFIX_SERVER: [u8; 4] = [0xfd, b'p', b'l', b's'];

/// Stable synthetic endpoints for a connection whose addresses are unknown.
///
/// The client is an IPv6 unique-local address that embeds the pid and the
/// connection id verbatim, `fd70:6c63:PPPP:PPPP:CCCC:CCCC:CCCC:CCCC`
/// (prefix "plc"), so different (pid, conn) pairs always get different
/// client addresses, never a hash collision; the port (49152..=65535) is
/// derived from both too. The server is `fd70:6c73::1` (prefix "pls") on
/// port [`SYNTHETIC_SERVER_PORT`] (80), where tshark dissects HTTP/1.1 and
/// preface-led HTTP/2 by default.
pub fn synthetic_endpoints(pid: u32, conn: u64) -> (Endpoint, Endpoint) {
    let mut c = [0u8; 16];
    c[..4].copy_from_slice(&PREFIX_CLIENT);
    c[4..8].copy_from_slice(&pid.to_be_bytes());
    c[8..].copy_from_slice(&conn.to_be_bytes());
    let port = 49152 + (mix64(((pid as u64) << 32) ^ mix64(conn)) % 16384) as u16;
    let mut s = [0u8; 16];
    s[..4].copy_from_slice(&PREFIX_SERVER);
    s[15] = 1;
    (
        Endpoint {
            addr: IpAddr::V6(Ipv6Addr::from(c)),
            port,
        },
        Endpoint {
            addr: IpAddr::V6(Ipv6Addr::from(s)),
            port: SYNTHETIC_SERVER_PORT,
        },
    )
}

/// splitmix64 finalizer: a fixed, well-mixing function (std's hashers are not
/// promised to be stable across releases).
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Conn {
    client: Endpoint,
    server: Endpoint,
    /// Next sequence number of the client and of the server.
    client_seq: u32,
    server_seq: u32,
    comment: String,
}

/// Writes synthetic TCP connections to a pcapng file.
pub struct PcapWriter {
    out: PcapNgWriter<BufWriter<File>>,
    conns: HashMap<u64, Conn>,
    ip_id: u16,
}

impl PcapWriter {
    /// Writes the section header and one raw-IP interface with nanosecond
    /// timestamps. The caller creates the file (mode 0600) and passes it.
    pub fn new(file: File) -> Result<PcapWriter> {
        let section = SectionHeaderBlock {
            endianness: Endianness::native(),
            options: vec![SectionHeaderOption::UserApplication("plainsight".into())],
            ..Default::default()
        };
        let mut out = PcapNgWriter::with_section_header(BufWriter::new(file), section)
            .map_err(|e| anyhow!("pcap: cannot write section header: {e}"))?;
        let interface = InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 65535,
            options: vec![
                InterfaceDescriptionOption::IfName("plainsight".into()),
                InterfaceDescriptionOption::IfDescription("TLS plaintext as synthetic TCP".into()),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        out.write_pcapng_block(interface)
            .map_err(|e| anyhow!("pcap: cannot write interface description: {e}"))?;
        Ok(PcapWriter {
            out,
            conns: HashMap::new(),
            ip_id: 0,
        })
    }

    /// A connection starts: emits SYN, SYN-ACK, ACK at `ts`. `comment` goes
    /// into every packet of the connection. If the endpoints' address
    /// families differ, both are written as IPv6 (IPv4 as `::ffff:a.b.c.d`).
    /// Opening a key that is already open closes the old connection first.
    pub fn open(
        &mut self,
        key: u64,
        client: Endpoint,
        server: Endpoint,
        ts: SystemTime,
        comment: String,
    ) -> Result<()> {
        let h = mix64(key);
        self.open_with_isn(key, client, server, ts, comment, h as u32, (h >> 32) as u32)
    }

    /// `open` with given initial sequence numbers (tests pin them).
    // `open`'s arguments plus the two ISNs, which tests need to set (to check
    // wrapping): a struct for them would serve only those tests.
    #[allow(clippy::too_many_arguments)]
    fn open_with_isn(
        &mut self,
        key: u64,
        mut client: Endpoint,
        mut server: Endpoint,
        ts: SystemTime,
        comment: String,
        client_isn: u32,
        server_isn: u32,
    ) -> Result<()> {
        if self.conns.contains_key(&key) {
            self.close(key, ts)?;
        }
        if client.addr.is_ipv4() != server.addr.is_ipv4() {
            client.addr = IpAddr::V6(to_v6(client.addr));
            server.addr = IpAddr::V6(to_v6(server.addr));
        }
        let comment = truncate_utf8(comment, MAX_COMMENT);
        let mss = (MAX_SEGMENT as u16).to_be_bytes();
        let syn_opts = [2u8, 4, mss[0], mss[1], 1, 3, 3, WSCALE]; // MSS, NOP, window scale
        let mut c = Conn {
            client,
            server,
            client_seq: client_isn,
            server_seq: server_isn,
            comment,
        };
        let (cs, ss) = (c.client_seq, c.server_seq);
        self.packet(&c, true, ts, cs, 0, TCP_SYN, &syn_opts, &[])?;
        self.packet(
            &c,
            false,
            ts,
            ss,
            cs.wrapping_add(1),
            TCP_SYN | TCP_ACK,
            &syn_opts,
            &[],
        )?;
        c.client_seq = cs.wrapping_add(1);
        c.server_seq = ss.wrapping_add(1);
        self.packet(&c, true, ts, c.client_seq, c.server_seq, TCP_ACK, &[], &[])?;
        self.conns.insert(key, c);
        Ok(())
    }

    /// Payload sent by one side. `gap_before` bytes were lost before it: the
    /// sequence number advances by that much without a packet (at most 1 GiB
    /// is recorded, see `MAX_GAP`). Payloads over [`MAX_SEGMENT`] bytes are
    /// split; an empty payload writes no packet (a gap is still recorded).
    pub fn data(
        &mut self,
        key: u64,
        from_client: bool,
        ts: SystemTime,
        payload: &[u8],
        gap_before: u64,
    ) -> Result<()> {
        let mut c = self
            .conns
            .remove(&key)
            .ok_or_else(|| anyhow!("pcap: data for connection {key:#x} that was not opened"))?;
        let res = self.data_on(&mut c, from_client, ts, payload, gap_before);
        self.conns.insert(key, c);
        res
    }

    fn data_on(
        &mut self,
        c: &mut Conn,
        from_client: bool,
        ts: SystemTime,
        payload: &[u8],
        gap_before: u64,
    ) -> Result<()> {
        let gap = gap_before.min(MAX_GAP) as u32;
        if from_client {
            c.client_seq = c.client_seq.wrapping_add(gap);
        } else {
            c.server_seq = c.server_seq.wrapping_add(gap);
        }
        for chunk in payload.chunks(MAX_SEGMENT) {
            let (seq, ack) = if from_client {
                (c.client_seq, c.server_seq)
            } else {
                (c.server_seq, c.client_seq)
            };
            self.packet(c, from_client, ts, seq, ack, TCP_PSH | TCP_ACK, &[], chunk)?;
            // chunk.len() <= MAX_SEGMENT, so the cast is exact.
            let next = seq.wrapping_add(chunk.len() as u32);
            if from_client {
                c.client_seq = next;
            } else {
                c.server_seq = next;
            }
        }
        Ok(())
    }

    /// FIN from both sides (client FIN, server FIN, client ACK); forgets the
    /// connection. Closing an unknown key is an error.
    pub fn close(&mut self, key: u64, ts: SystemTime) -> Result<()> {
        let mut c = self
            .conns
            .remove(&key)
            .ok_or_else(|| anyhow!("pcap: close of connection {key:#x} that was not opened"))?;
        self.packet(
            &c,
            true,
            ts,
            c.client_seq,
            c.server_seq,
            TCP_FIN | TCP_ACK,
            &[],
            &[],
        )?;
        c.client_seq = c.client_seq.wrapping_add(1);
        self.packet(
            &c,
            false,
            ts,
            c.server_seq,
            c.client_seq,
            TCP_FIN | TCP_ACK,
            &[],
            &[],
        )?;
        c.server_seq = c.server_seq.wrapping_add(1);
        self.packet(&c, true, ts, c.client_seq, c.server_seq, TCP_ACK, &[], &[])?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.get_mut().flush().context("pcap: cannot write")
    }

    /// One packet of connection `c` (from the client or the server), with
    /// the connection's comment, written at `ts`.
    // Besides the connection, direction and time, the arguments are the TCP
    // segment's own fields, passed on to `build_packet` as they are.
    #[allow(clippy::too_many_arguments)]
    fn packet(
        &mut self,
        c: &Conn,
        from_client: bool,
        ts: SystemTime,
        seq: u32,
        ack: u32,
        flags: u8,
        tcp_opts: &[u8],
        payload: &[u8],
    ) -> Result<()> {
        let (src, dst) = if from_client {
            (c.client, c.server)
        } else {
            (c.server, c.client)
        };
        self.ip_id = self.ip_id.wrapping_add(1);
        let data = build_packet(src, dst, self.ip_id, seq, ack, flags, tcp_opts, payload);
        let options = if c.comment.is_empty() {
            vec![]
        } else {
            vec![EnhancedPacketOption::Comment(c.comment.as_str().into())]
        };
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: ts.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO),
            original_len: data.len() as u32,
            data: data.into(),
            options,
        };
        self.out
            .write_pcapng_block(block)
            .map_err(|e| anyhow!("pcap: cannot write packet: {e}"))?;
        Ok(())
    }
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut n = max;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
    s
}

/// Sums 16-bit big-endian words (odd trailing byte padded with zero) into a
/// 32-bit accumulator, the first step of the Internet checksum.
fn sum16(mut acc: u64, data: &[u8]) -> u64 {
    let mut it = data.chunks_exact(2);
    for w in &mut it {
        acc += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [b] = it.remainder() {
        acc += (*b as u64) << 8;
    }
    acc
}

/// Folds a sum into the ones'-complement 16-bit Internet checksum (RFC 1071).
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// IPv4 header checksum of a 20-byte header whose checksum field is zero.
fn ipv4_checksum(header: &[u8]) -> u16 {
    fold(sum16(0, header))
}

/// TCP checksum over the pseudo header and the segment (checksum field zero).
fn tcp_checksum(src: IpAddr, dst: IpAddr, segment: &[u8]) -> u16 {
    let len = segment.len() as u64;
    let mut acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum16(sum16(0, &s.octets()), &d.octets()) + 6 + len,
        _ => {
            sum16(sum16(0, &to_v6(src).octets()), &to_v6(dst).octets())
                + 6
                + (len & 0xffff)
                + (len >> 16)
        }
    };
    acc = sum16(acc, segment);
    fold(acc)
}

/// One raw IP packet carrying a TCP segment. IPv4 if both addresses are IPv4,
/// else IPv6 (an IPv4 address mapped). `payload` is at most [`MAX_SEGMENT`].
// One argument per header field that varies (addresses and ports, IP id, TCP
// sequence, acknowledgement, flags, options) plus the payload: the packet's
// layout, laid out flat on purpose.
#[allow(clippy::too_many_arguments)]
fn build_packet(
    src: Endpoint,
    dst: Endpoint,
    ip_id: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    tcp_opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_SEGMENT)];
    let opts_len = (tcp_opts.len().min(40) + 3) & !3;
    let tcp_len = 20 + opts_len + payload.len();
    let mut tcp = Vec::with_capacity(tcp_len);
    tcp.extend_from_slice(&src.port.to_be_bytes());
    tcp.extend_from_slice(&dst.port.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push((((20 + opts_len) / 4) as u8) << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&65535u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0]); // checksum
    tcp.extend_from_slice(&[0, 0]); // urgent pointer
    tcp.extend_from_slice(&tcp_opts[..tcp_opts.len().min(40)]);
    tcp.resize(20 + opts_len, 0); // pad options with EOL
    tcp.extend_from_slice(payload);
    let csum = tcp_checksum(src.addr, dst.addr, &tcp);
    tcp[16..18].copy_from_slice(&csum.to_be_bytes());

    let mut pkt;
    match (src.addr, dst.addr) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pkt = Vec::with_capacity(20 + tcp_len);
            pkt.extend_from_slice(&[0x45, 0]);
            pkt.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            pkt.extend_from_slice(&ip_id.to_be_bytes());
            pkt.extend_from_slice(&[0x40, 0]); // don't fragment
            pkt.extend_from_slice(&[64, 6, 0, 0]); // TTL, TCP, checksum
            pkt.extend_from_slice(&s.octets());
            pkt.extend_from_slice(&d.octets());
            let csum = ipv4_checksum(&pkt);
            pkt[10..12].copy_from_slice(&csum.to_be_bytes());
        }
        _ => {
            pkt = Vec::with_capacity(40 + tcp_len);
            pkt.extend_from_slice(&[0x60, 0, 0, 0]);
            pkt.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            pkt.extend_from_slice(&[6, 64]); // next header TCP, hop limit
            pkt.extend_from_slice(&to_v6(src.addr).octets());
            pkt.extend_from_slice(&to_v6(dst.addr).octets());
        }
    }
    pkt.extend_from_slice(&tcp);
    pkt
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::process::Command;

    fn v4(a: [u8; 4], port: u16) -> Endpoint {
        Endpoint {
            addr: IpAddr::V4(Ipv4Addr::from(a)),
            port,
        }
    }

    fn v6(s: &str, port: u16) -> Endpoint {
        Endpoint {
            addr: s.parse().unwrap(),
            port,
        }
    }

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    /// A packet read back from the file.
    #[derive(Debug)]
    struct Pkt {
        ts: Duration,
        comment: Option<String>,
        v6: bool,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: Vec<u8>,
    }

    fn parse(ts: Duration, comment: Option<String>, d: &[u8]) -> Pkt {
        let (v6, src, dst, tcp) = match d[0] >> 4 {
            4 => {
                let ihl = (d[0] & 15) as usize * 4;
                let total = u16::from_be_bytes([d[2], d[3]]) as usize;
                assert_eq!(total, d.len(), "IPv4 total length");
                let s: [u8; 4] = d[12..16].try_into().unwrap();
                let t: [u8; 4] = d[16..20].try_into().unwrap();
                (false, IpAddr::from(s), IpAddr::from(t), &d[ihl..])
            }
            6 => {
                let plen = u16::from_be_bytes([d[4], d[5]]) as usize;
                assert_eq!(plen + 40, d.len(), "IPv6 payload length");
                let s: [u8; 16] = d[8..24].try_into().unwrap();
                let t: [u8; 16] = d[24..40].try_into().unwrap();
                (true, IpAddr::from(s), IpAddr::from(t), &d[40..])
            }
            v => panic!("IP version {v}"),
        };
        let off = (tcp[12] >> 4) as usize * 4;
        Pkt {
            ts,
            comment,
            v6,
            src,
            dst,
            sport: u16::from_be_bytes([tcp[0], tcp[1]]),
            dport: u16::from_be_bytes([tcp[2], tcp[3]]),
            seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
            ack: u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
            flags: tcp[13],
            payload: tcp[off..].to_vec(),
        }
    }

    fn read_back(path: &Path) -> Vec<Pkt> {
        let mut r = PcapNgReader::new(File::open(path).unwrap()).unwrap();
        let mut out = vec![];
        let mut tsresol = None;
        while let Some(b) = r.next_block() {
            match b.unwrap() {
                Block::InterfaceDescription(idb) => {
                    assert_eq!(idb.linktype, DataLink::RAW);
                    for o in &idb.options {
                        if let InterfaceDescriptionOption::IfTsResol(t) = o {
                            tsresol = Some(*t);
                        }
                    }
                }
                Block::EnhancedPacket(p) => {
                    assert_eq!(p.original_len as usize, p.data.len());
                    let comment = p.options.iter().find_map(|o| match o {
                        EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                        _ => None,
                    });
                    out.push(parse(p.timestamp, comment, &p.data));
                }
                _ => {}
            }
        }
        assert_eq!(tsresol, Some(9), "nanosecond resolution declared");
        out
    }

    fn new_file() -> (tempfile::TempDir, std::path::PathBuf, PcapWriter) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.pcapng");
        let w = PcapWriter::new(File::create(&path).unwrap()).unwrap();
        (dir, path, w)
    }

    /// Internet checksum over `data` as a whole; 0 when a checksum inside is right.
    fn verify(data: &[u8]) -> u16 {
        fold(sum16(0, data))
    }

    #[test]
    fn ipv4_header_checksum_known() {
        // The classic example header (Wikipedia, "IPv4 header checksum").
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(verify(&h), 0);
    }

    #[test]
    fn checksums_of_known_packets() {
        // Expected values computed independently (Python, RFC 1071 sum).
        let p = build_packet(
            v4([192, 168, 0, 1], 12345),
            v4([192, 168, 0, 199], 80),
            1,
            0x01020304,
            0x0a0b0c0d,
            TCP_PSH | TCP_ACK,
            &[],
            b"hello",
        );
        assert_eq!(p.len(), 45);
        assert_eq!(
            &p[..12],
            &[0x45, 0, 0, 45, 0, 1, 0x40, 0, 64, 6, 0xb8, 0xb1]
        );
        assert_eq!(&p[20 + 16..20 + 18], &[0x9f, 0x35], "TCP checksum, IPv4");
        assert_eq!(verify(&p[..20]), 0);

        let p = build_packet(
            v6("2001:db8::1", 12345),
            v6("2001:db8::2", 80),
            1,
            0x01020304,
            0x0a0b0c0d,
            TCP_PSH | TCP_ACK,
            &[],
            b"hello",
        );
        assert_eq!(p.len(), 65);
        assert_eq!(&p[40 + 16..40 + 18], &[0xc5, 0xd9], "TCP checksum, IPv6");
        assert_eq!(&p[4..8], &[0, 25, 6, 64]);
    }

    #[test]
    fn tcp_checksum_verifies_odd_and_large() {
        for len in [0usize, 1, 2, 3, 1499, MAX_SEGMENT] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            for (s, d) in [
                (v4([10, 0, 0, 1], 1), v4([10, 0, 0, 2], 2)),
                (v6("fd00::1", 1), v6("fd00::2", 2)),
            ] {
                let p = build_packet(s, d, 9, 1, 2, TCP_ACK, &[2, 4, 0x80, 0], &payload);
                let ip_len = if s.addr.is_ipv4() { 20 } else { 40 };
                assert_eq!(tcp_checksum(s.addr, d.addr, &p[ip_len..]), 0, "len {len}");
            }
        }
    }

    #[test]
    fn seq_ack_progression() {
        let (_d, path, mut w) = new_file();
        let (c, s) = (v4([10, 0, 0, 1], 40000), v4([10, 0, 0, 2], 80));
        let t = at(1_700_000_000, 5);
        w.open_with_isn(7, c, s, t, "curl[1] sni=x".into(), 1000, 5000)
            .unwrap();
        w.data(7, true, t, b"abc", 0).unwrap();
        w.data(7, false, t, b"hello", 0).unwrap();
        w.data(7, true, t, b"de", 0).unwrap();
        w.close(7, t).unwrap();
        w.flush().unwrap();
        let p = read_back(&path);
        let got: Vec<(bool, u32, u32, u8, usize)> = p
            .iter()
            .map(|p| (p.sport == 40000, p.seq, p.ack, p.flags, p.payload.len()))
            .collect();
        let pa = TCP_PSH | TCP_ACK;
        let fa = TCP_FIN | TCP_ACK;
        assert_eq!(
            got,
            vec![
                (true, 1000, 0, TCP_SYN, 0),
                (false, 5000, 1001, TCP_SYN | TCP_ACK, 0),
                (true, 1001, 5001, TCP_ACK, 0),
                (true, 1001, 5001, pa, 3),
                (false, 5001, 1004, pa, 5),
                (true, 1004, 5006, pa, 2),
                (true, 1006, 5006, fa, 0),
                (false, 5006, 1007, fa, 0),
                (true, 1007, 5007, TCP_ACK, 0),
            ]
        );
        assert!(p
            .iter()
            .all(|p| p.comment.as_deref() == Some("curl[1] sni=x")));
        assert!(p
            .iter()
            .all(|p| !p.v6
                && ((p.src, p.dst) == (c.addr, s.addr) || (p.src, p.dst) == (s.addr, c.addr))));
        assert_eq!(p[0].dport, 80);
        assert_eq!(p[3].payload, b"abc");
        // The connection is forgotten after close.
        assert!(w.data(7, true, t, b"x", 0).is_err());
    }

    #[test]
    fn gap_advances_seq_without_packet() {
        let (_d, path, mut w) = new_file();
        let t = at(1, 0);
        w.open_with_isn(
            1,
            v4([1, 1, 1, 1], 1),
            v4([2, 2, 2, 2], 80),
            t,
            String::new(),
            0,
            0,
        )
        .unwrap();
        w.data(1, false, t, b"first", 0).unwrap();
        w.data(1, false, t, b"after-gap", 100).unwrap();
        w.data(1, false, t, b"", 10).unwrap(); // gap only: no packet
        w.data(1, true, t, b"req", 0).unwrap();
        w.data(1, true, t, b"huge", u64::MAX).unwrap(); // clamped to MAX_GAP
        w.flush().unwrap();
        let p = read_back(&path);
        assert_eq!(p.len(), 3 + 4);
        assert_eq!((p[3].seq, p[3].payload.as_slice()), (1, &b"first"[..]));
        assert_eq!(
            (p[4].seq, p[4].payload.as_slice()),
            (1 + 5 + 100, &b"after-gap"[..])
        );
        // The empty write's gap shows in the client's ACK.
        assert_eq!((p[5].seq, p[5].ack), (1, 1 + 5 + 100 + 9 + 10));
        assert_eq!(p[6].seq, 1 + 3 + MAX_GAP as u32);
        assert!(p.iter().all(|p| p.comment.is_none()));
    }

    #[test]
    fn big_payload_is_split_and_empty_writes_nothing() {
        let (_d, path, mut w) = new_file();
        let t = at(2, 0);
        w.open_with_isn(
            3,
            v6("fd00::1", 5),
            v6("fd00::2", 80),
            t,
            "big".into(),
            10,
            u32::MAX - 100_000,
        )
        .unwrap();
        let big: Vec<u8> = (0..5 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
        w.data(3, false, t, &big, 0).unwrap();
        w.data(3, true, t, &[], 0).unwrap();
        w.data(3, false, t, b"z", 0).unwrap();
        w.flush().unwrap();
        let p = read_back(&path);
        let data = &p[3..];
        assert_eq!(data.len(), 5 * 32 + 1 + 1);
        assert!(data
            .iter()
            .all(|p| p.v6 && p.payload.len() <= MAX_SEGMENT && p.ack == 11));
        // Contiguous sequence numbers, wrapping past 2^32.
        let mut seq = u32::MAX - 100_000 + 1;
        let mut joined = vec![];
        for p in &data[..data.len() - 1] {
            assert_eq!(p.seq, seq);
            seq = seq.wrapping_add(p.payload.len() as u32);
            joined.extend_from_slice(&p.payload);
        }
        assert!(seq < 10_000_000, "wrapped");
        assert_eq!(joined, big);
        assert_eq!(
            (
                data[data.len() - 1].seq,
                data[data.len() - 1].payload.as_slice()
            ),
            (seq, &b"z"[..])
        );
    }

    #[test]
    fn seq_wraps_in_handshake_and_close() {
        let (_d, path, mut w) = new_file();
        let t = at(3, 0);
        w.open_with_isn(
            1,
            v4([1, 1, 1, 1], 1),
            v4([2, 2, 2, 2], 80),
            t,
            String::new(),
            u32::MAX,
            u32::MAX - 1,
        )
        .unwrap();
        w.data(1, false, t, b"ab", 0).unwrap();
        w.close(1, t).unwrap();
        w.flush().unwrap();
        let p = read_back(&path);
        assert_eq!((p[1].seq, p[1].ack), (u32::MAX - 1, 0));
        assert_eq!((p[2].seq, p[2].ack), (0, u32::MAX));
        assert_eq!((p[3].seq, p[3].ack), (u32::MAX, 0));
        assert_eq!((p[4].seq, p[4].ack), (0, 1)); // client FIN
        assert_eq!((p[5].seq, p[5].ack), (1, 1)); // server FIN
        assert_eq!((p[6].seq, p[6].ack), (1, 2));
    }

    #[test]
    fn synthetic_endpoints_stable_and_distinct() {
        let (c, s) = synthetic_endpoints(1234, 0xdead_beef);
        assert_eq!((c, s), synthetic_endpoints(1234, 0xdead_beef));
        assert_eq!(s.port, SYNTHETIC_SERVER_PORT);
        assert!(c.port >= 49152);
        let mut seen = std::collections::HashSet::new();
        for pid in [0u32, 1, 2, 1234, u32::MAX] {
            for conn in [0u64, 1, 2, 0xdead_beef, 1 << 32, u64::MAX] {
                let (c, s2) = synthetic_endpoints(pid, conn);
                assert_eq!(s2, s, "one synthetic server");
                assert_ne!(c.addr, s.addr);
                assert!(seen.insert((c.addr, c.port)), "{pid} {conn}");
            }
        }
    }

    #[test]
    fn errors_and_odd_inputs() {
        let (_d, path, mut w) = new_file();
        let t = at(4, 0);
        assert!(w.data(9, true, t, b"x", 0).is_err());
        assert!(w.close(9, t).is_err());
        // Mixed families: both become IPv6. A long comment is cut on a char boundary.
        let long = "é".repeat(MAX_COMMENT);
        w.open(
            9,
            v4([127, 0, 0, 1], 1),
            v6("::1", 80),
            UNIX_EPOCH - Duration::from_secs(5),
            long,
        )
        .unwrap();
        // Re-opening a key closes the old connection first.
        let (c, s) = synthetic_endpoints(1, 2);
        w.open(9, c, s, t, "second".into()).unwrap();
        w.data(9, true, t, b"x", 0).unwrap();
        w.flush().unwrap();
        let p = read_back(&path);
        assert_eq!(p.len(), 3 + 3 + 3 + 1);
        assert!(p[..6].iter().all(|p| p.v6));
        assert_eq!(p[0].src, IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()));
        assert_eq!(p[0].ts, Duration::ZERO);
        let cm = p[0].comment.as_deref().unwrap();
        assert!(
            cm.len() <= MAX_COMMENT && cm.len() >= MAX_COMMENT - 1 && cm.chars().all(|c| c == 'é')
        );
        assert_eq!(p[3].flags, TCP_FIN | TCP_ACK);
        assert_eq!(p[6].flags, TCP_SYN);
        assert_eq!(p[9].comment.as_deref(), Some("second"));
        assert_eq!((p[9].src, p[9].dport), (c.addr, 80));
    }

    #[test]
    fn nanosecond_timestamps_stored() {
        let (_d, path, mut w) = new_file();
        let t = at(1_700_000_000, 123_456_789);
        w.open(
            1,
            v4([1, 1, 1, 1], 1),
            v4([2, 2, 2, 2], 80),
            t,
            String::new(),
        )
        .unwrap();
        w.data(1, true, at(1_700_000_001, 1), b"x", 0).unwrap();
        drop(w); // BufWriter flushes on drop
        let p = read_back(&path);
        assert_eq!(p[0].ts, Duration::new(1_700_000_000, 123_456_789));
        assert_eq!(p[3].ts, Duration::new(1_700_000_001, 1));
    }

    // ---- tshark ----

    fn tshark(file: &Path, args: &[&str]) -> Result<String, String> {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(file)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An HTTP/1.1 connection over IPv4, given endpoints: a request, a
    /// response big enough to be split, a lost chunk before a second
    /// request. Returns the response's length.
    fn write_http1_sample(w: &mut PcapWriter, t0: SystemTime, t1: SystemTime) -> usize {
        let (c, s) = (v4([10, 1, 2, 3], 40000), v4([10, 9, 8, 7], 80));
        w.open(1, c, s, t0, "curl[1234] sni=api.acme.com".into())
            .unwrap();
        w.data(
            1,
            true,
            t0,
            b"GET /v1/items?id=7 HTTP/1.1\r\nHost: api.acme.com\r\n\r\n",
            0,
        )
        .unwrap();
        let body = vec![b'a'; 100_000];
        let mut resp =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        resp.extend_from_slice(&body);
        w.data(1, false, t1, &resp, 0).unwrap();
        // A lost chunk before a second request.
        w.data(
            1,
            true,
            t1,
            b"POST /lost HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            500,
        )
        .unwrap();
        w.close(1, t1).unwrap();
        resp.len()
    }

    /// An HTTP/2 connection with the preface over synthetic (IPv6)
    /// endpoints: one GET and its 200 response with a DATA frame.
    fn write_http2_sample(w: &mut PcapWriter, t0: SystemTime, t1: SystemTime) {
        let (c, s) = synthetic_endpoints(4321, 0x5555);
        w.open(2, c, s, t0, "node[4321] sni=h2.acme.com".into())
            .unwrap();
        let mut cl = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        cl.extend(h2_frame(4, 0, 0, &[]));
        let mut hb = vec![0x82, 0x84, 0x87, 0x41, 11]; // GET, /, https, literal :authority
        hb.extend_from_slice(b"h2.acme.com");
        cl.extend(h2_frame(1, 0x5, 1, &hb)); // END_STREAM | END_HEADERS
        w.data(2, true, t0, &cl, 0).unwrap();
        let mut sv = h2_frame(4, 0, 0, &[]);
        sv.extend(h2_frame(4, 1, 0, &[]));
        sv.extend(h2_frame(1, 0x4, 1, &[0x88])); // :status 200
        sv.extend(h2_frame(0, 0x1, 1, b"hello h2"));
        w.data(2, false, t1, &sv, 0).unwrap();
        w.close(2, t1).unwrap();
    }

    /// tshark finds both HTTP/1.1 requests and the response, reassembled
    /// from its segments.
    fn check_tshark_http1(path: &Path, resp_len: usize) {
        let out = tshark(
            path,
            &[
                "-Y",
                "http.request",
                "-T",
                "fields",
                "-e",
                "http.request.method",
                "-e",
                "http.request.uri",
            ],
        )
        .unwrap();
        assert_eq!(
            out, "GET\t/v1/items?id=7\nPOST\t/lost\n",
            "HTTP/1.1 requests"
        );
        let out = tshark(
            path,
            &[
                "-Y",
                "http.response",
                "-T",
                "fields",
                "-e",
                "http.response.code",
                "-e",
                "tcp.reassembled.length",
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            format!("200\t{resp_len}\n"),
            "HTTP/1.1 response, reassembled"
        );
    }

    /// tshark decodes the HTTP/2 headers (through HPACK) and data.
    fn check_tshark_http2(path: &Path) {
        let out = tshark(
            path,
            &[
                "-Y",
                "http2.type == 1",
                "-T",
                "fields",
                "-E",
                "separator=|",
                "-e",
                "http2.header.name",
                "-e",
                "http2.header.value",
            ],
        )
        .unwrap();
        assert_eq!(
            out, ":method,:path,:scheme,:authority|GET,/,https,h2.acme.com\n:status|200\n",
            "HTTP/2 headers"
        );
        let out = tshark(
            path,
            &[
                "-Y",
                "http2.type == 0",
                "-T",
                "fields",
                "-e",
                "http2.data.data",
            ],
        )
        .unwrap();
        assert_eq!(out.trim(), "68656c6c6f206832");
    }

    /// Checksums are right, the gap is reported as a lost segment. Returns
    /// the number of packets.
    fn check_tshark_checksums_and_gap(path: &Path) -> usize {
        let out = tshark(
            path,
            &[
                "-o",
                "tcp.check_checksum:TRUE",
                "-o",
                "ip.check_checksum:TRUE",
                "-T",
                "fields",
                "-e",
                "tcp.checksum.status",
                "-e",
                "ip.checksum.status",
            ],
        )
        .unwrap();
        let n = out.lines().count();
        assert!(n > 10);
        // 1 = good; IPv6 packets have no IP checksum (empty field).
        assert!(
            out.lines().all(|l| l == "1\t1" || l == "1\t"),
            "checksums:\n{out}"
        );
        let out = tshark(
            path,
            &[
                "-Y",
                "tcp.analysis.lost_segment",
                "-T",
                "fields",
                "-e",
                "http.request.method",
            ],
        )
        .unwrap();
        assert_eq!(out, "POST\n");
        n
    }

    /// Every one of the `n` packets has its connection's comment, and times
    /// keep their nanoseconds.
    fn check_tshark_comments_and_times(path: &Path, n: usize) {
        // Comments: field name differs between tshark versions.
        let comments = tshark(path, &["-T", "fields", "-e", "frame.comment"])
            .or_else(|_| tshark(path, &["-T", "fields", "-e", "pkt_comment"]))
            .unwrap();
        let lines: Vec<&str> = comments.lines().collect();
        assert_eq!(lines.len(), n);
        assert_eq!(lines[0], "curl[1234] sni=api.acme.com");
        assert_eq!(lines[n - 1], "node[4321] sni=h2.acme.com");

        // Nanosecond times.
        let out = tshark(path, &["-T", "fields", "-e", "frame.time_epoch"]).unwrap();
        let times: Vec<&str> = out.lines().collect();
        assert_eq!(times[0], "1700000000.123456789");
        assert!(times.contains(&"1700000000.223456001"), "{times:?}");
    }

    #[test]
    fn tshark_dissects_http1_and_http2() {
        if Command::new("tshark").arg("--version").output().is_err() {
            eprintln!(
                "NOTE: tshark not on PATH, skipping (scripts/install-deps.sh --test installs it)"
            );
            return;
        }
        let (_d, path, mut w) = new_file();
        let t0 = at(1_700_000_000, 123_456_789);
        let t1 = at(1_700_000_000, 223_456_001);
        let resp_len = write_http1_sample(&mut w, t0, t1);
        write_http2_sample(&mut w, t0, t1);
        w.flush().unwrap();

        check_tshark_http1(&path, resp_len);
        check_tshark_http2(&path);
        let n = check_tshark_checksums_and_gap(&path);
        check_tshark_comments_and_times(&path, n);
    }
}
