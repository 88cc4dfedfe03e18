//! Inspect: read an executable file and decide what TLS code it carries and
//! where to put uprobes (spec: "Parses for known encryption library function
//! symbols").

pub mod elf;
pub mod go;
pub mod place;
pub mod worker;

use std::fmt;
use std::path::Path;

pub use crate::probes::ProbePoint;
pub use elf::{ElfError, ElfSymbols};

/// Which TLS implementation a file carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLibrary {
    /// OpenSSL 1.1 / 3 (also AWS-LC and node's bundled copy: same API).
    OpenSsl,
    /// BoringSSL: no `SSL_ctrl`, a real `SSL_set_tlsext_host_name`.
    BoringSsl,
    /// aws-lc (or a BoringSSL/AWS-LC FIPS module) linked into an executable
    /// without the SSL API: rustls over aws-lc-rs. Captured through the
    /// `EVP_AEAD_CTX_*` functions and the ClientHello path.
    AwsLc,
    /// ring linked into a Rust executable (rustls' ring provider).
    Ring,
    /// GnuTLS (`libgnutls.so.30`).
    GnuTls,
    /// Go's crypto/tls.
    GoTls,
}

impl fmt::Display for TlsLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsLibrary::OpenSsl => "openssl",
            TlsLibrary::BoringSsl => "boringssl",
            TlsLibrary::AwsLc => "aws-lc (static, AEAD path)",
            TlsLibrary::Ring => "ring (static, AEAD path)",
            TlsLibrary::GnuTls => "gnutls",
            TlsLibrary::GoTls => "go crypto/tls",
        })
    }
}

/// How the TLS code sits in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// Exported from `.dynsym` (a shared library, or an executable such as
    /// node that exports its bundled OpenSSL).
    Exported,
    /// Only in `.symtab`: statically linked into the executable.
    Static,
}

/// One place to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub point: ProbePoint,
    /// The symbol as found in the file (aws-lc prefixes it with its version).
    pub symbol: String,
    /// File offset of the function's entry.
    pub offset: u64,
    /// Size of the function in bytes (0: unknown, no placement analysis).
    pub size: u64,
    /// Where the probes go inside the function (`place`); None: entry and
    /// uretprobe.
    pub place: Option<Placement>,
}

impl Target {
    fn new(point: ProbePoint, symbol: String, offset: u64, size: u64) -> Target {
        Target {
            point,
            symbol,
            offset,
            size,
            place: None,
        }
    }

    /// File offset of the entry program.
    pub fn entry_offset(&self) -> u64 {
        self.place
            .as_ref()
            .map(|p| p.entry.offset)
            .unwrap_or(self.offset)
    }

    /// Inner return points replacing the uretprobe, if proven.
    pub fn return_points(&self) -> Option<&[u64]> {
        self.place.as_ref().and_then(|p| p.returns.as_deref().ok())
    }
}

/// The attach points chosen for one function, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub entry: place::EntryChoice,
    /// Return points (file offsets), or why the uretprobe stays.
    pub returns: Result<Vec<u64>, String>,
}

impl Placement {
    /// One line per function for `--explain`.
    pub fn explain(&self, t: &Target) -> String {
        let ret = if !t.point.has_return() {
            String::new()
        } else {
            match &self.returns {
                Ok(v) => format!(
                    "; return at {} instead of a uretprobe",
                    v.iter()
                        .map(|o| format!("+{:#x}", o - t.offset))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Err(why) => format!("; return: uretprobe ({why})"),
            }
        };
        format!("{}: {}{}", t.symbol, self.entry.why, ret)
    }
}

/// What an inspected file carries.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub library: Option<TlsLibrary>,
    pub linkage: Linkage,
    pub targets: Vec<Target>,
    /// Why a file that carries TLS code cannot be instrumented.
    pub unsupported: Option<String>,
}

impl Inspection {
    pub fn is_tls(&self) -> bool {
        self.library.is_some() && !self.targets.is_empty()
    }
}

fn interesting(name: &str) -> bool {
    name.starts_with("SSL_")
        || name.starts_with("gnutls_")
        || aead_point(name).is_some()
        || ring_point(name).is_some()
}

/// `_ZN4ring4aead9algorithm12aes_gcm_seal17h<16 hex>E` and the like -> the
/// probe point (the hash changes with every build).
pub fn ring_point(name: &str) -> Option<ProbePoint> {
    let rest = name.strip_prefix("_ZN4ring4aead9algorithm")?;
    let (func, hash) = rest.split_at(rest.find("17h")?);
    let hex = hash.strip_prefix("17h")?.strip_suffix('E')?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match func {
        "16aes_gcm_init_128" | "16aes_gcm_init_256" | "22chacha20_poly1305_init" => {
            Some(ProbePoint::RingInit)
        }
        "12aes_gcm_seal" | "22chacha20_poly1305_seal" => Some(ProbePoint::RingSeal),
        "12aes_gcm_open" | "22chacha20_poly1305_open" => Some(ProbePoint::RingOpen),
        _ => None,
    }
}

/// `EVP_AEAD_CTX_seal`, `aws_lc_0_47_0_EVP_AEAD_CTX_seal`, ... -> the probe point.
pub fn aead_point(name: &str) -> Option<ProbePoint> {
    let i = name.find("EVP_AEAD_CTX_")?;
    let prefix = &name[..i];
    // Either no prefix, or aws-lc-sys's version prefix "aws_lc_<digits>_<digits>_<digits>_".
    if !prefix.is_empty() {
        let v = prefix.strip_prefix("aws_lc_")?.strip_suffix('_')?;
        if v.split('_').count() != 3
            || !v
                .split('_')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
    }
    ProbePoint::AEAD
        .into_iter()
        .find(|p| &name[i..] == p.symbol())
}

/// Classifies parsed symbols.
pub fn classify(syms: &ElfSymbols) -> Inspection {
    let has = |n: &str| syms.get(n).is_some();
    let mut insp = Inspection {
        library: None,
        linkage: Linkage::Exported,
        targets: Vec::new(),
        unsupported: None,
    };
    if has("gnutls_record_send2") && has("gnutls_record_recv") {
        insp.library = Some(TlsLibrary::GnuTls);
        let w = syms.get("gnutls_record_send2").expect("checked above");
        insp.linkage = if w.dynamic {
            Linkage::Exported
        } else {
            Linkage::Static
        };
        for point in ProbePoint::GNUTLS {
            if let Some(loc) = syms.get(point.symbol()) {
                insp.targets.push(Target::new(
                    point,
                    point.symbol().to_string(),
                    loc.file_offset,
                    loc.size,
                ));
            }
        }
        return insp;
    }
    if !(has("SSL_write") && has("SSL_read")) {
        // Static TLS in an executable, without the SSL API: the AEAD path.
        if syms.is_executable {
            let mut found: Vec<Target> = syms
                .functions
                .iter()
                .filter_map(|(name, loc)| {
                    aead_point(name)
                        .map(|point| Target::new(point, name.clone(), loc.file_offset, loc.size))
                })
                .collect();
            found.sort_by_key(|t| ProbePoint::AEAD.iter().position(|p| *p == t.point));
            let pts: Vec<_> = found.iter().map(|t| t.point).collect();
            if pts.contains(&ProbePoint::AeadInit)
                && pts.contains(&ProbePoint::AeadOpen)
                && (pts.contains(&ProbePoint::AeadSeal)
                    || pts.contains(&ProbePoint::AeadSealScatter))
            {
                insp.library = Some(TlsLibrary::AwsLc);
                insp.linkage = Linkage::Static;
                insp.targets = found;
            }
            let mut ring: Vec<Target> = syms
                .functions
                .iter()
                .filter_map(|(name, loc)| {
                    ring_point(name)
                        .map(|point| Target::new(point, name.clone(), loc.file_offset, loc.size))
                })
                .collect();
            ring.sort_by(|a, b| a.symbol.cmp(&b.symbol));
            let rp: Vec<_> = ring.iter().map(|t| t.point).collect();
            if [
                ProbePoint::RingInit,
                ProbePoint::RingSeal,
                ProbePoint::RingOpen,
            ]
            .iter()
            .all(|p| rp.contains(p))
            {
                if insp.library.is_none() {
                    insp.library = Some(TlsLibrary::Ring);
                }
                insp.linkage = Linkage::Static;
                insp.targets.extend(ring);
            }
        }
        match &syms.go {
            Some(Ok(g)) if insp.library.is_none() => {
                insp.library = Some(TlsLibrary::GoTls);
                insp.linkage = Linkage::Static;
                let t = |point: ProbePoint, offset: u64| {
                    Target::new(
                        point,
                        format!("{} ({})", point.symbol(), g.version),
                        offset,
                        0,
                    )
                };
                insp.targets.push(t(ProbePoint::GoWrite, g.write));
                insp.targets
                    .extend(g.write_rets.iter().map(|&o| t(ProbePoint::GoWriteRet, o)));
                insp.targets.push(t(ProbePoint::GoRead, g.read));
                insp.targets
                    .extend(g.read_rets.iter().map(|&o| t(ProbePoint::GoReadRet, o)));
                if let Some(o) = g.handshake {
                    insp.targets.push(t(ProbePoint::GoHandshake, o));
                }
                if let Some(o) = g.close {
                    insp.targets.push(t(ProbePoint::GoClose, o));
                }
                return insp;
            }
            Some(Err(why)) if insp.library.is_none() => {
                insp.unsupported = Some(why.clone());
                return insp;
            }
            _ => {}
        }
        if insp.library.is_none() && syms.stripped_rustls {
            insp.unsupported = Some(
                "a stripped Rust program using rustls: without a symbol table its TLS functions \
                 cannot be found, so its traffic cannot be captured (build it without `strip`)"
                    .into(),
            );
        }
        return insp;
    }
    insp.library = Some(if !has("SSL_ctrl") && has("SSL_set_tlsext_host_name") {
        TlsLibrary::BoringSsl
    } else {
        TlsLibrary::OpenSsl
    });
    let write = syms.get("SSL_write").expect("checked above");
    insp.linkage = if write.dynamic {
        Linkage::Exported
    } else {
        Linkage::Static
    };
    for point in ProbePoint::OPENSSL {
        if let Some(loc) = syms.get(point.symbol()) {
            insp.targets.push(Target::new(
                point,
                point.symbol().to_string(),
                loc.file_offset,
                loc.size,
            ));
        }
    }
    insp
}

/// Chooses the attach points of every target with a known size.
pub fn place_targets(map: &[u8], syms: &ElfSymbols, targets: &mut [Target]) {
    let noreturn = |t: u64| {
        if syms.noreturn.binary_search(&t).is_ok() {
            return true;
        }
        // A call of a no-return function.
        let Some(code) = map.get(t as usize..(t as usize + 16).min(map.len())) else {
            return false;
        };
        let mut d = iced_x86::Decoder::with_ip(64, code, t, iced_x86::DecoderOptions::NONE);
        let i = d.decode();
        i.code() == iced_x86::Code::Call_rel32_64
            && syms.noreturn.binary_search(&i.near_branch_target()).is_ok()
    };
    for t in targets.iter_mut() {
        if t.size == 0 {
            continue;
        }
        let Some(code) =
            map.get(t.offset as usize..(t.offset.saturating_add(t.size) as usize).min(map.len()))
        else {
            continue;
        };
        let mut entry = place::choose_entry(code, t.offset, place::arg_use(t.point), &noreturn);
        let returns = if t.point.has_return() {
            place::choose_returns(code, t.offset, &noreturn)
        } else {
            Err("no return program".into())
        };
        if t.point.has_return() && returns.is_err() && entry.offset != t.offset {
            // The uretprobe hits the entry anyway: one trap there serves both.
            entry = place::EntryChoice {
                offset: t.offset,
                why: format!(
                    "entry, shared with the uretprobe's hit there (+{:#x} inside would be a second hit)",
                    entry.offset - t.offset
                ),
            };
        }
        t.place = Some(Placement { entry, returns });
    }
}

/// Reads and classifies the file at `path` (at most `limit` bytes);
/// `inner`: choose attach points inside the functions (`place`).
pub fn inspect_file(path: &Path, limit: u64, inner: bool) -> Result<Inspection, ElfError> {
    // A parser bug must not take the agent down: contain panics too.
    let p = path.to_path_buf();
    let run = move || -> Result<Inspection, ElfError> {
        let map = elf::map_file(&p, limit)?;
        let syms = elf::symbols_and_go(&map, &p, &interesting)?;
        let mut insp = classify(&syms);
        if inner && insp.is_tls() {
            place_targets(&map, &syms, &mut insp.targets);
        }
        Ok(insp)
    };
    match std::panic::catch_unwind(run) {
        Ok(r) => r,
        Err(_) => Err(ElfError::Malformed {
            path: path.display().to_string(),
            reason: "parser panicked".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_symbols_by_pattern() {
        assert_eq!(
            ring_point("_ZN4ring4aead9algorithm12aes_gcm_seal17hf8f8ecdc1e0be8ddE"),
            Some(ProbePoint::RingSeal)
        );
        assert_eq!(
            ring_point("_ZN4ring4aead9algorithm22chacha20_poly1305_init17h38c4ee39eb0b39c3E"),
            Some(ProbePoint::RingInit)
        );
        assert_eq!(
            ring_point("_ZN4ring4aead9algorithm12aes_gcm_seal17hXYZE"),
            None
        );
        assert_eq!(
            ring_point("_ZN4ring4aead7aes_gcm4seal17h34f654bc491d2889E"),
            None
        );
    }

    #[test]
    fn aead_symbols_by_pattern() {
        assert_eq!(
            aead_point("aws_lc_0_47_0_EVP_AEAD_CTX_seal"),
            Some(ProbePoint::AeadSeal)
        );
        assert_eq!(
            aead_point("aws_lc_1_2_33_EVP_AEAD_CTX_open"),
            Some(ProbePoint::AeadOpen)
        );
        assert_eq!(
            aead_point("EVP_AEAD_CTX_seal_scatter"),
            Some(ProbePoint::AeadSealScatter)
        );
        assert_eq!(
            aead_point("aws_lc_0_47_0_EVP_AEAD_CTX_init_with_direction"),
            Some(ProbePoint::AeadInit)
        );
        assert_eq!(aead_point("aws_lc_0_47_0_EVP_AEAD_CTX_open_gather"), None);
        assert_eq!(aead_point("aws_lc_x_47_0_EVP_AEAD_CTX_seal"), None);
        assert_eq!(aead_point("my_EVP_AEAD_CTX_seal"), None);
    }

    #[test]
    fn debian_libssl_is_openssl_exported() {
        let i = inspect_file(
            Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
            1 << 30,
            true,
        )
        .unwrap();
        assert_eq!(i.library, Some(TlsLibrary::OpenSsl));
        assert_eq!(i.linkage, Linkage::Exported);
        let pts: Vec<_> = i.targets.iter().map(|t| t.point).collect();
        // SSL_set_tlsext_host_name is a macro in OpenSSL: not exported.
        let want: Vec<_> = ProbePoint::OPENSSL
            .into_iter()
            .filter(|p| *p != ProbePoint::SslSetHostName)
            .collect();
        assert_eq!(pts, want);
    }

    /// Placement on the real libssl: inside SSL_write, shared entry for
    /// SSL_write_ex whose return stays a uretprobe.
    #[test]
    fn debian_libssl_placement() {
        let i = inspect_file(
            Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
            1 << 30,
            true,
        )
        .unwrap();
        let t = |p: ProbePoint| i.targets.iter().find(|t| t.point == p).unwrap();
        let w = t(ProbePoint::SslWrite);
        assert_eq!(w.entry_offset(), w.offset + 0x16);
        assert_eq!(w.return_points(), Some(&[w.offset + 0x38][..]));
        let x = t(ProbePoint::SslWriteEx);
        assert_eq!(x.entry_offset(), x.offset);
        assert_eq!(x.return_points(), None);
        let off = inspect_file(
            Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
            1 << 30,
            false,
        )
        .unwrap();
        assert!(off
            .targets
            .iter()
            .all(|t| t.place.is_none() && t.entry_offset() == t.offset));
    }

    #[test]
    fn gnutls_is_recognised() {
        let p = Path::new("/usr/lib/x86_64-linux-gnu/libgnutls.so.30");
        let i = inspect_file(p, 1 << 30, true).unwrap();
        assert_eq!(i.library, Some(TlsLibrary::GnuTls));
        let pts: Vec<_> = i.targets.iter().map(|t| t.point).collect();
        assert_eq!(
            pts,
            [
                ProbePoint::GnutlsSend,
                ProbePoint::GnutlsRecv,
                ProbePoint::GnutlsServerName,
                ProbePoint::GnutlsDeinit
            ]
        );
    }

    #[test]
    fn libc_is_not_tls() {
        let i = inspect_file(
            Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            1 << 30,
            true,
        )
        .unwrap();
        assert!(!i.is_tls());
    }

    #[test]
    fn boringssl_is_recognised() {
        let p = Path::new("/usr/lib/x86_64-linux-gnu/android/libssl.so.0");
        let i = inspect_file(p, 1 << 30, true).expect("android-libboringssl installed");
        assert_eq!(i.library, Some(TlsLibrary::BoringSsl));
        let pts: Vec<_> = i.targets.iter().map(|t| t.point).collect();
        assert!(pts.contains(&ProbePoint::SslWrite) && pts.contains(&ProbePoint::SslRead));
        assert!(!pts.contains(&ProbePoint::SslWriteEx));
        assert!(pts.contains(&ProbePoint::SslSetHostName) && !pts.contains(&ProbePoint::SslCtrl));
    }

    #[test]
    fn node_exports_openssl_from_the_executable() {
        let node = std::fs::canonicalize("/usr/bin/node").unwrap();
        let i = inspect_file(&node, 1 << 31, true).unwrap();
        assert_eq!(i.library, Some(TlsLibrary::OpenSsl));
        assert_eq!(i.linkage, Linkage::Exported);
    }
}

#[cfg(test)]
mod non_go {
    /// Executables without Go build info are not parsed as Go at all (the
    /// full parse is slow on large non-Go files; `make bench` shows pauses).
    #[test]
    fn non_go_executables_have_no_go_part() {
        for p in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/bin/python3.11",
            "/usr/bin/curl",
        ] {
            let syms = super::elf::read_symbols_and_go(
                std::path::Path::new(p),
                1 << 33,
                &super::interesting,
            )
            .unwrap();
            assert!(syms.go.is_none(), "{p}");
        }
    }
}
