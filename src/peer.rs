//! `--port` and `--peer`: which connections pass, by their socket's
//! endpoints. The kernel checks them first (sock.bpf.h, with the keys made
//! here); user space checks records again.

use std::net::IpAddr;

/// `--peer ADDR[/PREFIX]`: an IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPrefix {
    pub addr: IpAddr,
    /// Leading bits that must match (32 or 128 when no prefix is given).
    pub len: u8,
}

impl std::str::FromStr for PeerPrefix {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<PeerPrefix, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address (with /PREFIX)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(PeerPrefix { addr, len })
    }
}

impl std::fmt::Display for PeerPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl PeerPrefix {
    /// As IPv6 bits: an IPv4 network as its v4-mapped one (::ffff:a.b.c.d).
    fn v6(&self) -> (u128, u32) {
        match self.addr {
            IpAddr::V4(a) => (u128::from(a.to_ipv6_mapped()), 96 + u32::from(self.len)),
            IpAddr::V6(a) => (u128::from(a), u32::from(self.len)),
        }
    }

    /// The key of `target_peers` (sock.bpf.h, struct peer_key): the prefix
    /// length, then the IPv6 address.
    pub fn trie_key(&self) -> [u8; 20] {
        let (bits, len) = self.v6();
        let mut k = [0u8; 20];
        k[..4].copy_from_slice(&len.to_ne_bytes());
        k[4..].copy_from_slice(&bits.to_be_bytes());
        k
    }

    /// Whether `a` is in this network (a v4-mapped address as IPv4).
    pub fn contains(&self, a: IpAddr) -> bool {
        let (net, len) = self.v6();
        let bits = match a {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        bits & mask == net & mask
    }
}

/// `--port` and `--peer`, as user space checks them on records.
#[derive(Debug, Clone, Default)]
pub struct EndpointFilter {
    pub ports: Vec<u16>,
    pub peers: Vec<PeerPrefix>,
}

impl EndpointFilter {
    /// Whether no endpoint filter was given.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.peers.is_empty()
    }

    /// Whether a connection over this socket (None: not known) passes.
    pub fn passes(&self, e: Option<&crate::record::Endpoints>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(e) = e else { return false };
        let port_ok = self.ports.is_empty()
            || [e.local, e.peer]
                .iter()
                .flatten()
                .any(|a| self.ports.contains(&a.port()));
        let peer_ok = self.peers.is_empty()
            || e.peer
                .is_some_and(|a| self.peers.iter().any(|p| p.contains(a.ip())));
        port_ok && peer_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_prefixes() {
        let p: PeerPrefix = "10.0.0.0/8".parse().unwrap();
        assert!(p.contains("10.200.1.2".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let k = p.trie_key();
        assert_eq!(u32::from_ne_bytes(k[..4].try_into().unwrap()), 104);
        assert_eq!(
            &k[4..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 0]
        );
        let one: PeerPrefix = "::1".parse().unwrap();
        assert_eq!(one.len, 128);
        assert!(one.contains("::1".parse().unwrap()));
        let all: PeerPrefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.168.1.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x", "::/129", "10.0.0.0/"] {
            assert!(bad.parse::<PeerPrefix>().is_err(), "{bad}");
        }
        assert_eq!(p.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn endpoint_filter() {
        use crate::record::{Endpoints, Transport};
        let e = Endpoints::new(
            Transport::Tcp,
            1,
            Some(3),
            (
                Some("127.0.0.1:40000".parse().unwrap()),
                Some("10.1.2.3:5432".parse().unwrap()),
            ),
            false,
        );
        let f = |ports: &[u16], peers: &[&str]| EndpointFilter {
            ports: ports.to_vec(),
            peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
        };
        assert!(f(&[], &[]).passes(None));
        assert!(f(&[5432], &[]).passes(Some(&e)));
        assert!(f(&[40000], &[]).passes(Some(&e)));
        assert!(!f(&[443], &[]).passes(Some(&e)));
        assert!(!f(&[5432], &[]).passes(None));
        assert!(f(&[], &["10.0.0.0/8"]).passes(Some(&e)));
        assert!(!f(&[5432], &["192.168.0.0/16"]).passes(Some(&e)));
    }
}
