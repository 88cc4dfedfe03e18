//! Inspect: read an executable file and decide what TLS code it carries and
//! where to put uprobes (spec: "Parses for known encryption library function
//! symbols").

pub mod elf;

use std::fmt;
use std::path::Path;

pub use elf::{ElfError, ElfSymbols};

/// The probe points this agent knows, each handled by one BPF program pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbePoint {
    /// `SSL_write(ssl, buf, num)`: entry + return.
    SslWrite,
    /// `SSL_read(ssl, buf, num)`: entry + return.
    SslRead,
    /// `SSL_write_ex(ssl, buf, num, *written)`: entry + return.
    SslWriteEx,
    /// `SSL_read_ex(ssl, buf, num, *readbytes)`: entry + return.
    SslReadEx,
    /// `SSL_free(ssl)`: entry only.
    SslFree,
    /// `SSL_ctrl(ssl, cmd, larg, parg)`: the server name (cmd 55).
    SslCtrl,
    /// `SSL_set_tlsext_host_name(ssl, name)`: BoringSSL's real function.
    SslSetHostName,
}

impl ProbePoint {
    pub const OPENSSL: [ProbePoint; 7] = [
        ProbePoint::SslWrite,
        ProbePoint::SslRead,
        ProbePoint::SslWriteEx,
        ProbePoint::SslReadEx,
        ProbePoint::SslFree,
        ProbePoint::SslCtrl,
        ProbePoint::SslSetHostName,
    ];

    /// The symbol the probe point is attached to.
    pub fn symbol(self) -> &'static str {
        match self {
            ProbePoint::SslWrite => "SSL_write",
            ProbePoint::SslRead => "SSL_read",
            ProbePoint::SslWriteEx => "SSL_write_ex",
            ProbePoint::SslReadEx => "SSL_read_ex",
            ProbePoint::SslFree => "SSL_free",
            ProbePoint::SslCtrl => "SSL_ctrl",
            ProbePoint::SslSetHostName => "SSL_set_tlsext_host_name",
        }
    }

}

/// Which TLS implementation a file carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLibrary {
    /// OpenSSL 1.1 / 3 (also AWS-LC and node's bundled copy: same API).
    OpenSsl,
    /// BoringSSL: no `SSL_ctrl`, a real `SSL_set_tlsext_host_name`.
    BoringSsl,
}

impl fmt::Display for TlsLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsLibrary::OpenSsl => "openssl",
            TlsLibrary::BoringSsl => "boringssl",
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
    /// File offset of the function's entry.
    pub offset: u64,
}

/// What an inspected file carries.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub library: Option<TlsLibrary>,
    pub linkage: Linkage,
    pub targets: Vec<Target>,
}

impl Inspection {
    pub fn is_tls(&self) -> bool {
        self.library.is_some() && !self.targets.is_empty()
    }
}

fn interesting(name: &str) -> bool {
    name.starts_with("SSL_")
}

/// Classifies parsed symbols.
pub fn classify(syms: &ElfSymbols) -> Inspection {
    let has = |n: &str| syms.get(n).is_some();
    let mut insp = Inspection { library: None, linkage: Linkage::Exported, targets: Vec::new() };
    if !(has("SSL_write") && has("SSL_read")) {
        return insp;
    }
    insp.library = Some(if !has("SSL_ctrl") && has("SSL_set_tlsext_host_name") {
        TlsLibrary::BoringSsl
    } else {
        TlsLibrary::OpenSsl
    });
    let write = syms.get("SSL_write").expect("checked above");
    insp.linkage = if write.dynamic { Linkage::Exported } else { Linkage::Static };
    for point in ProbePoint::OPENSSL {
        if let Some(loc) = syms.get(point.symbol()) {
            insp.targets.push(Target { point, offset: loc.file_offset });
        }
    }
    insp
}

/// Reads and classifies the file at `path` (at most `limit` bytes).
pub fn inspect_file(path: &Path, limit: u64) -> Result<Inspection, ElfError> {
    // A parser bug must not take the agent down: contain panics too.
    let p = path.to_path_buf();
    match std::panic::catch_unwind(move || elf::read_symbols(&p, limit, &interesting)) {
        Ok(r) => r.map(|s| classify(&s)),
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
    fn debian_libssl_is_openssl_exported() {
        let i = inspect_file(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3"), 1 << 30).unwrap();
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

    #[test]
    fn libc_is_not_tls() {
        let i = inspect_file(Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"), 1 << 30).unwrap();
        assert!(!i.is_tls());
    }

    #[test]
    fn boringssl_is_recognised() {
        let p = Path::new("/usr/lib/x86_64-linux-gnu/android/libssl.so.0");
        let i = inspect_file(p, 1 << 30).expect("android-libboringssl installed");
        assert_eq!(i.library, Some(TlsLibrary::BoringSsl));
        let pts: Vec<_> = i.targets.iter().map(|t| t.point).collect();
        assert!(pts.contains(&ProbePoint::SslWrite) && pts.contains(&ProbePoint::SslRead));
        assert!(!pts.contains(&ProbePoint::SslWriteEx));
        assert!(pts.contains(&ProbePoint::SslSetHostName) && !pts.contains(&ProbePoint::SslCtrl));
    }

    #[test]
    fn node_exports_openssl_from_the_executable() {
        let node = std::fs::canonicalize("/usr/bin/node").unwrap();
        let i = inspect_file(&node, 1 << 31).unwrap();
        assert_eq!(i.library, Some(TlsLibrary::OpenSsl));
        assert_eq!(i.linkage, Linkage::Exported);
    }
}
