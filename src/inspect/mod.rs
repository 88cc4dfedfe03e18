//! Inspect: read an executable file and decide what TLS code it carries and
//! where to put uprobes (spec: "Parses for known encryption library function
//! symbols").

pub mod boringssl;
pub mod budget;
pub mod cache;
pub mod elf;
pub mod erlang;
pub mod go;
pub mod image;
pub mod locate;
pub mod place;
pub mod sslbio;
pub mod store;
pub mod sweep;
#[cfg(test)]
mod testfixtures;
pub mod warm;
pub mod worker;

use std::fmt;
use std::path::Path;

use object::ReadRef;

pub use crate::probes::ProbePoint;
pub use elf::{ElfError, ElfSymbols};

/// Which TLS implementation a file carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// NSS's SSL library (`libssl3.so`): which NSPR descriptors are TLS,
    /// and their server names.
    Nss,
    /// NSPR (`libnspr4.so`): the I/O calls NSS programs make on their SSL
    /// descriptors.
    Nspr,
    /// The native library of plainsight's own Java agent
    /// (`libplainsight-jsse.so`, jvm/native): JSSE's plaintext, handed out
    /// by the agent's code inside the JVM.
    Jsse,
    /// A HotSpot JVM (`libjvm.so`): nothing to probe in it; its process
    /// gets the Java agent (src/jvm).
    Jvm,
    /// mbedTLS (`libmbedtls.so`, 2.28 and 3.x), or linked in.
    MbedTls,
    /// wolfSSL (`libwolfssl.so`), also when built with its OpenSSL
    /// compatibility layer exporting `SSL_*` names of its own.
    WolfSsl,
    /// Erlang/OTP's crypto NIF (`crypto.so`): `ssl`'s AEAD records, at the
    /// libcrypto calls inside `aead_cipher_nif` ([`erlang`]).
    Erlang,
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
            TlsLibrary::Nss => "nss",
            TlsLibrary::Nspr => "nspr (nss i/o)",
            TlsLibrary::Jsse => "jsse (plainsight's java agent)",
            TlsLibrary::Jvm => "jvm",
            TlsLibrary::MbedTls => "mbedtls",
            TlsLibrary::WolfSsl => "wolfssl",
            TlsLibrary::Erlang => "erlang (otp crypto nif, aead path)",
        })
    }
}

impl TlsLibrary {
    /// The TLS stack the file carries, as the coverage map names it
    /// (`openssl`, `boringssl`, `rustls`, `go`, `jsse`, ...): what a user
    /// recognises, where [`fmt::Display`] says how it is captured.
    pub fn stack(&self) -> &'static str {
        match self {
            TlsLibrary::OpenSsl => "openssl",
            TlsLibrary::BoringSsl => "boringssl",
            // The AEAD path is rustls's: aws-lc-rs or ring underneath.
            TlsLibrary::AwsLc | TlsLibrary::Ring => "rustls",
            TlsLibrary::GnuTls => "gnutls",
            TlsLibrary::GoTls => "go",
            TlsLibrary::Nss | TlsLibrary::Nspr => "nss",
            TlsLibrary::Jsse | TlsLibrary::Jvm => "jsse",
            TlsLibrary::MbedTls => "mbedtls",
            TlsLibrary::WolfSsl => "wolfssl",
            TlsLibrary::Erlang => "erlang",
        }
    }
}

/// A file that carries TLS code the agent cannot capture: its stack and
/// why (for the log, the coverage records and `--inventory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dark {
    pub stack: &'static str,
    pub why: String,
}

impl Dark {
    pub fn new(stack: &'static str, why: impl Into<String>) -> Dark {
        Dark {
            stack,
            why: why.into(),
        }
    }
}

/// How the TLS code sits in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Linkage {
    /// Exported from `.dynsym` (a shared library, or an executable such as
    /// node that exports its bundled OpenSSL).
    Exported,
    /// Only in `.symtab`: statically linked into the executable.
    Static,
}

/// One place to attach.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// What the entry program reads as its cookie, instead of the file's
    /// inode (ErlangOpenDone: what `rax` holds there when the tag verified).
    #[serde(default)]
    pub cookie: Option<u64>,
}

impl Target {
    fn new(point: ProbePoint, symbol: String, offset: u64, size: u64) -> Target {
        Target {
            point,
            symbol,
            offset,
            size,
            place: None,
            cookie: None,
        }
    }

    /// File offset of the entry program.
    pub fn entry_offset(&self) -> u64 {
        self.place
            .as_ref()
            .map(|p| p.entry.offset)
            .unwrap_or(self.offset)
    }

    /// The entry point in processes that have no uretprobe on this
    /// function: where return probes go per process (filters given), most
    /// have none, and an entry moved to the function's first instruction to
    /// share the uretprobe's hit would make them all single-step it.
    pub fn entry_offset_without_uretprobe(&self) -> u64 {
        self.place
            .as_ref()
            .and_then(|p| p.unshared.as_ref())
            .map_or_else(|| self.entry_offset(), |e| e.offset)
    }

    /// Inner return points replacing the uretprobe, if proven.
    pub fn return_points(&self) -> Option<&[u64]> {
        self.place.as_ref().and_then(|p| p.returns.as_deref().ok())
    }
}

/// The attach points chosen for one function, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    pub entry: place::EntryChoice,
    /// Return points (file offsets), or why the uretprobe stays.
    pub returns: Result<Vec<u64>, String>,
    /// The entry point chosen inside the function when `entry` was moved
    /// to its first instruction to share the uretprobe's hit: the entry
    /// where that uretprobe goes per process
    /// ([`Target::entry_offset_without_uretprobe`]).
    #[serde(default)]
    pub unshared: Option<place::EntryChoice>,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inspection {
    pub library: Option<TlsLibrary>,
    pub linkage: Linkage,
    pub targets: Vec<Target>,
    /// Why a file that carries TLS code cannot be instrumented (never
    /// cached: only whole TLS results are).
    #[serde(skip)]
    pub unsupported: Option<Dark>,
}

impl Inspection {
    pub fn is_tls(&self) -> bool {
        self.library.is_some() && !self.targets.is_empty()
    }

    /// A JVM's own library: its processes get the Java agent.
    pub fn is_jvm(&self) -> bool {
        self.library == Some(TlsLibrary::Jvm)
    }
}

/// The symbol names inspection keeps (the rest of a file's are skipped).
pub fn interesting(name: &str) -> bool {
    name.starts_with("SSL_")
        || name == "BIO_f_ssl"
        || name.starts_with("plainsight_jsse_")
        || JVM_SYMBOLS.contains(&name)
        || ProbePoint::NSPR.iter().any(|p| p.symbol() == name)
        || name.starts_with("gnutls_")
        || embedded_point(name)
        || aead_point(name).is_some()
        || ring_point(name).is_some()
        || name == "nif_init"
        || name == erlang::NIF
}

/// A probed function of mbedTLS or wolfSSL (looked up by exact name: a
/// static wolfSSL has thousands of `wolfSSL_` functions).
fn embedded_point(name: &str) -> bool {
    (name.starts_with("mbedtls_ssl_") || name.starts_with("wolfSSL_"))
        && ProbePoint::MBEDTLS
            .iter()
            .chain(&ProbePoint::WOLFSSL)
            .any(|p| p.symbol() == name)
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

/// Targets for the listed points found by their exact symbol names.
fn exact_targets(syms: &ElfSymbols, points: &[ProbePoint]) -> Vec<Target> {
    points
        .iter()
        .filter_map(|&point| {
            let loc = syms.get(point.symbol())?;
            Some(Target::new(
                point,
                point.symbol().to_string(),
                loc.file_offset,
                loc.size,
            ))
        })
        .collect()
}

/// Exported from `.dynsym`, or only in `.symtab`.
fn linkage_of(syms: &ElfSymbols, symbol: &str) -> Linkage {
    match syms.get(symbol) {
        Some(s) if s.dynamic => Linkage::Exported,
        _ => Linkage::Static,
    }
}

/// Targets whose names `point_of` recognises among all functions.
fn matching_targets(syms: &ElfSymbols, point_of: fn(&str) -> Option<ProbePoint>) -> Vec<Target> {
    syms.functions
        .iter()
        .filter_map(|(name, loc)| {
            point_of(name).map(|point| Target::new(point, name.clone(), loc.file_offset, loc.size))
        })
        .collect()
}

/// aws-lc's `EVP_AEAD_CTX_*` in an executable, if init, open and a seal
/// are all there.
fn aead_targets(syms: &ElfSymbols) -> Option<Vec<Target>> {
    let mut found = matching_targets(syms, aead_point);
    found.sort_by_key(|t| ProbePoint::AEAD.iter().position(|p| *p == t.point));
    let has = |p: ProbePoint| found.iter().any(|t| t.point == p);
    let complete = has(ProbePoint::AeadInit)
        && has(ProbePoint::AeadOpen)
        && (has(ProbePoint::AeadSeal) || has(ProbePoint::AeadSealScatter));
    complete.then_some(found)
}

/// ring's `aead::algorithm` functions, if init, seal and open are all there.
fn ring_targets(syms: &ElfSymbols) -> Option<Vec<Target>> {
    let mut ring = matching_targets(syms, ring_point);
    ring.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    let has = |p: ProbePoint| ring.iter().any(|t| t.point == p);
    let complete =
        has(ProbePoint::RingInit) && has(ProbePoint::RingSeal) && has(ProbePoint::RingOpen);
    complete.then_some(ring)
}

/// Go's crypto/tls: the entries, every RET of Write and Read, the
/// handshake and Close.
fn go_targets(g: &go::GoTls) -> Vec<Target> {
    let t = |point: ProbePoint, offset: u64| {
        Target::new(
            point,
            format!("{} ({})", point.symbol(), g.version),
            offset,
            0,
        )
    };
    let mut v = vec![t(ProbePoint::GoWrite, g.write)];
    v.extend(g.write_rets.iter().map(|&o| t(ProbePoint::GoWriteRet, o)));
    v.push(t(ProbePoint::GoRead, g.read));
    v.extend(g.read_rets.iter().map(|&o| t(ProbePoint::GoReadRet, o)));
    v.extend(g.handshake.map(|o| t(ProbePoint::GoHandshake, o)));
    v.extend(
        g.server_handshake
            .map(|o| t(ProbePoint::GoServerHandshake, o)),
    );
    v.extend(g.close.map(|o| t(ProbePoint::GoClose, o)));
    v
}

/// Static TLS without the SSL API: aws-lc and ring in executables (both
/// may be present), else Go, else a stripped rustls program is reported.
fn classify_static(syms: &ElfSymbols) -> Inspection {
    let mut insp = Inspection {
        library: None,
        linkage: Linkage::Exported,
        targets: Vec::new(),
        unsupported: None,
    };
    // An executable links its crypto for itself. A shared object may too
    // (a Python module written in Rust carries rustls and its provider):
    // there the functions are local, hidden by the module's export list.
    // One that exports them (AWS-LC's libcrypto.so, under its libssl) is
    // a library for others, whose SSL layer is probed instead: never the
    // same bytes twice.
    let private = |ts: &[Target]| {
        syms.is_executable
            || ts
                .iter()
                .all(|t| syms.get(&t.symbol).is_some_and(|l| !l.dynamic))
    };
    if let Some(aead) = aead_targets(syms).filter(|t| private(t)) {
        insp.library = Some(TlsLibrary::AwsLc);
        insp.targets = aead;
    }
    if let Some(ring) = ring_targets(syms).filter(|t| private(t)) {
        insp.library.get_or_insert(TlsLibrary::Ring);
        insp.targets.extend(ring);
    }
    if insp.library.is_some() {
        insp.linkage = Linkage::Static;
        return insp;
    }
    match &syms.go {
        Some(Ok(g)) => {
            insp.library = Some(TlsLibrary::GoTls);
            insp.linkage = Linkage::Static;
            insp.targets = go_targets(g);
        }
        Some(Err(why)) => insp.unsupported = Some(Dark::new("go", why.clone())),
        None if syms.stripped_rustls => {
            insp.unsupported = Some(Dark::new(
                "rustls",
                "a stripped Rust program using rustls: without a symbol table its TLS functions \
                 cannot be found, so its traffic cannot be captured (build it without `strip`)",
            ))
        }
        None => {}
    }
    insp
}

/// What tells HotSpot's `libjvm.so` (17 and 25 checked): the JNI entry and
/// a `JVM_` function of its class loading, both exported.
const JVM_SYMBOLS: [&str; 2] = ["JNI_CreateJavaVM", "JVM_FindClassFromBootLoader"];

/// Classifies parsed symbols: GnuTLS, mbedTLS, wolfSSL, the OpenSSL
/// family, NSS, our Java agent's library, a JVM, or static TLS.
pub fn classify(syms: &ElfSymbols) -> Inspection {
    let has = |n: &str| syms.get(n).is_some();
    if ProbePoint::JSSE.iter().all(|p| has(p.symbol())) {
        return exported(
            syms,
            TlsLibrary::Jsse,
            "plainsight_jsse_data",
            &ProbePoint::JSSE,
        );
    }
    if JVM_SYMBOLS.iter().all(|n| has(n)) && !syms.is_executable {
        return Inspection {
            library: Some(TlsLibrary::Jvm),
            linkage: Linkage::Exported,
            targets: Vec::new(),
            unsupported: None,
        };
    }
    if has("nif_init") && has(erlang::NIF) {
        // OTP's crypto NIF: Erlang's `ssl` builds its records in Erlang and
        // encrypts them here (docs/erlang.md). Its probes are call
        // instructions inside the NIF, found by decoding it (inspect_with).
        return Inspection {
            library: Some(TlsLibrary::Erlang),
            linkage: Linkage::Exported,
            targets: Vec::new(),
            unsupported: None,
        };
    }
    if has("gnutls_record_send2") && has("gnutls_record_recv") {
        return Inspection {
            library: Some(TlsLibrary::GnuTls),
            linkage: linkage_of(syms, "gnutls_record_send2"),
            targets: exact_targets(syms, &ProbePoint::GNUTLS),
            unsupported: None,
        };
    }
    if has("mbedtls_ssl_write") && has("mbedtls_ssl_read") {
        return exported(
            syms,
            TlsLibrary::MbedTls,
            "mbedtls_ssl_write",
            &ProbePoint::MBEDTLS,
        );
    }
    // Before the OpenSSL family: wolfSSL's compatibility layer may export
    // SSL_write & co. of its own, which call the same code as wolfSSL_*;
    // probing both would see each call twice.
    if has("wolfSSL_write") && has("wolfSSL_read") {
        return exported(
            syms,
            TlsLibrary::WolfSsl,
            "wolfSSL_write",
            &ProbePoint::WOLFSSL,
        );
    }
    if has("SSL_ImportFD") && has("SSL_SetURL") {
        return exported(syms, TlsLibrary::Nss, "SSL_ImportFD", &ProbePoint::NSS);
    }
    if ProbePoint::NSPR.iter().all(|p| has(p.symbol())) {
        return exported(syms, TlsLibrary::Nspr, "PR_Send", &ProbePoint::NSPR);
    }
    // The OpenSSL family by what is there: a linker that keeps only what
    // the program calls leaves a trimmed library (hf_transfer's module has
    // SSL_write_ex and SSL_read, no SSL_write). The forms present are
    // probed; each call goes through one of them only.
    let Some(write) = ["SSL_write", "SSL_write_ex", "SSL_write_ex2"]
        .into_iter()
        .find(|n| has(n))
    else {
        return classify_static(syms);
    };
    if !has("SSL_read") && !has("SSL_read_ex") {
        return classify_static(syms);
    }
    let library = if !has("SSL_ctrl") && has("SSL_set_tlsext_host_name") {
        TlsLibrary::BoringSsl
    } else {
        TlsLibrary::OpenSsl
    };
    Inspection {
        library: Some(library),
        linkage: linkage_of(syms, write),
        targets: exact_targets(syms, &ProbePoint::OPENSSL),
        unsupported: None,
    }
}

/// A library found by the exported functions `points`.
fn exported(
    syms: &ElfSymbols,
    library: TlsLibrary,
    key: &str,
    points: &[ProbePoint],
) -> Inspection {
    Inspection {
        library: Some(library),
        linkage: linkage_of(syms, key),
        targets: exact_targets(syms, points),
        unsupported: None,
    }
}

/// Chooses the attach points of every target with a known size.
pub fn place_targets<'d, R: ReadRef<'d>>(map: R, syms: &ElfSymbols, targets: &mut [Target]) {
    let bytes = |at: u64, len: u64| elf::bytes_at(map, at, len);
    let noreturn = |t: u64| {
        if syms.noreturn.binary_search(&t).is_ok() {
            return true;
        }
        // A call of a no-return function.
        let Some(code) = bytes(t, 16) else {
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
        let Some(code) = bytes(t.offset, t.size) else {
            continue;
        };
        let mut unshared = None;
        let (mut entry, returns) = place::choose(
            code,
            t.offset,
            place::arg_use(t.point),
            t.point.has_return(),
            &noreturn,
        );
        if t.point.has_return() && returns.is_err() && entry.offset != t.offset {
            // The uretprobe hits the entry anyway: one trap there serves
            // both, where it is attached.
            let off = entry.offset - t.offset;
            let why = format!(
                "entry, shared with the uretprobe's hit there (+{off:#x} inside would be a second hit); \
                 where return probes go per process: {}",
                entry.why
            );
            let inner = std::mem::replace(
                &mut entry,
                place::EntryChoice {
                    offset: t.offset,
                    why,
                },
            );
            unshared = Some(inner);
        }
        t.place = Some(Placement {
            entry,
            returns,
            unshared,
        });
    }
}

/// Refuses a file with more probe targets than are instrumented per file.
pub fn check_targets(insp: &Inspection, shown: &Path) -> Result<(), ElfError> {
    if insp.targets.len() <= budget::MAX_TARGETS {
        return Ok(());
    }
    Err(ElfError::TooMuchWork {
        path: shown.display().to_string(),
        what: format!(
            "{} probe points, more than the {} instrumented per file",
            insp.targets.len(),
            budget::MAX_TARGETS
        ),
    })
}

/// The exact names of the functions a file that exports its TLS library
/// is classified and probed by (looked up, not scanned for).
pub fn exported_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = [
        &ProbePoint::OPENSSL[..],
        &ProbePoint::GNUTLS,
        &ProbePoint::NSS,
        &ProbePoint::NSPR,
        &ProbePoint::JSSE,
        &ProbePoint::MBEDTLS,
        &ProbePoint::WOLFSSL,
    ]
    .concat()
    .iter()
    .map(|p| p.symbol())
    .chain([
        "SSL_ctrl",
        "SSL_set_tlsext_host_name",
        "SSL_ImportFD",
        "SSL_SetURL",
        "BIO_f_ssl",
    ])
    .chain(JVM_SYMBOLS)
    .chain(["nif_init", "aead_cipher_nif"])
    .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The symbols of the ELF bytes `data`: by lookups in its `.gnu.hash` when
/// that settles what the file is (it exports a TLS library; or it is a
/// stripped library exporting none), else by a scan of its symbol tables
/// (static TLS, Go, files without `.gnu.hash`).
fn symbols<'d, R: ReadRef<'d>>(
    data: R,
    shown: &Path,
    lookups: bool,
) -> Result<ElfSymbols, ElfError> {
    let settled = |syms: &ElfSymbols| {
        let insp = classify(syms);
        // OTP's crypto NIF is settled by its exports (its probes come from
        // its code, found after).
        if insp.is_tls() || insp.library == Some(TlsLibrary::Erlang) {
            insp.linkage == Linkage::Exported
        } else {
            // Only executables and `.symtab` hold static TLS.
            !syms.is_executable && !syms.has_symtab
        }
    };
    if lookups {
        let text = shown.display().to_string();
        if let Some(syms) = elf::exported_symbols(data, &text, &exported_names(), &settled)? {
            return Ok(syms);
        }
    }
    elf::symbols_and_go(data, shown, &interesting)
}

/// Classifies the ELF bytes `data` (`shown`: the path for messages);
/// `inner`: choose attach points inside the functions (`place`).
pub fn inspect_bytes<'d, R: locate::FileData<'d>>(
    data: R,
    shown: &Path,
    inner: bool,
) -> Result<Inspection, ElfError> {
    inspect_with(data, shown, inner, true)
}

/// [`inspect_bytes`] with every symbol scanned, no `.gnu.hash` lookups:
/// what the lookups must agree with (tests, fuzzing).
pub fn inspect_scanning<'d, R: locate::FileData<'d>>(
    data: R,
    shown: &Path,
    inner: bool,
) -> Result<Inspection, ElfError> {
    inspect_with(data, shown, inner, false)
}

fn inspect_with<'d, R: locate::FileData<'d>>(
    data: R,
    shown: &Path,
    inner: bool,
    lookups: bool,
) -> Result<Inspection, ElfError> {
    // A parser bug must not take the agent down: contain panics too.
    let run = || -> Result<Inspection, ElfError> {
        let syms = symbols(data, shown, lookups)?;
        let mut insp = classify(&syms);
        if insp.library.is_none() {
            locate_stripped(data, &mut insp);
        }
        if insp.library == Some(TlsLibrary::Erlang) {
            match erlang::targets(data, &syms) {
                Ok(t) => insp.targets = t,
                Err(why) => {
                    insp.library = None;
                    insp.unsupported = Some(Dark::new(
                        "erlang",
                        format!(
                            "OTP's crypto NIF, whose record calls cannot be found exactly: {why}"
                        ),
                    ));
                }
            }
        }
        if insp.library == Some(TlsLibrary::OpenSsl) {
            match sslbio::targets(data, &syms) {
                Some(Ok(t)) => insp.targets.extend(t),
                Some(Err(why)) => log::debug!("{}: SSL BIO not probed: {why}", shown.display()),
                None => {}
            }
        }
        check_targets(&insp, shown)?;
        if inner && insp.is_tls() {
            place_targets(data, &syms, &mut insp.targets);
        }
        Ok(insp)
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(_) => Err(ElfError::Malformed {
            path: shown.display().to_string(),
            reason: "parser panicked".into(),
        }),
    }
}

/// A file whose symbols name no TLS library: BoringSSL's SSL functions
/// ([`boringssl`]) or aws-lc's AEAD functions ([`locate`]) found without
/// symbols, exact or nothing. A file carrying neither stays as it was (it
/// paid a search of its read-only data for two paths); one that carries
/// them but cannot be settled is reported with why.
fn locate_stripped<'d, R: locate::FileData<'d>>(data: R, insp: &mut Inspection) {
    let located = |insp: &mut Inspection, library, found: Vec<locate::Located>| {
        insp.library = Some(library);
        insp.linkage = Linkage::Static;
        insp.unsupported = None;
        insp.targets = found
            .into_iter()
            .map(|l| {
                let name = format!("{} (located)", l.point.symbol());
                Target::new(l.point, name, l.offset, l.size)
            })
            .collect();
    };
    match boringssl::locate_boringssl(data) {
        Ok(report) => {
            for (point, why) in &report.omitted {
                log::debug!("stripped BoringSSL: {} not located: {why}", point.symbol());
            }
            return located(insp, TlsLibrary::BoringSsl, report.found);
        }
        Err(why) if why.starts_with("no BoringSSL") => {}
        Err(why) => {
            insp.unsupported = Some(Dark::new(
                "boringssl",
                format!("stripped BoringSSL whose functions cannot be located exactly: {why}"),
            ))
        }
    }
    match locate::locate_awslc(data) {
        Ok(found) => located(insp, TlsLibrary::AwsLc, found),
        Err(why) if why.starts_with("no aws-lc") => {}
        Err(why) => {
            insp.unsupported = Some(Dark::new(
                "rustls",
                format!("stripped aws-lc whose functions cannot be located exactly: {why}"),
            ))
        }
    }
}

/// Reads what it needs of the file at `path` (at most `limit` bytes) and
/// classifies it.
pub fn inspect_file(path: &Path, limit: u64, inner: bool) -> Result<Inspection, ElfError> {
    let img = elf::open_image(path, limit)?;
    inspect_bytes(&img, path, inner)
}
#[cfg(test)]
mod tests {
    use super::testfixtures::{fixture, nm, section_offset};
    use super::*;
    use std::path::PathBuf;

    /// aws-lc's AEAD functions in a shared object: probed when the object
    /// keeps them to itself (a Rust module), not when it exports them to
    /// others (AWS-LC's libcrypto.so: its callers' SSL layer is probed).
    #[test]
    fn aead_in_shared_objects_only_when_private() {
        let module = inspect_file(&fixture("awslc_module"), 1 << 30, false).unwrap();
        assert_eq!(module.library, Some(TlsLibrary::AwsLc));
        assert_eq!(module.linkage, Linkage::Static);
        let points: Vec<ProbePoint> = module.targets.iter().map(|t| t.point).collect();
        assert!(points.contains(&ProbePoint::AeadSeal), "{points:?}");
        let exported = inspect_file(&fixture("awslc_exported"), 1 << 30, false).unwrap();
        assert_eq!(exported.library, None, "{exported:?}");
        assert!(exported.targets.is_empty());
    }

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

    /// The functions of `openssl_like.c`, in the order of `ProbePoint::OPENSSL`.
    const OPENSSL_LIKE: [&str; 6] = [
        "SSL_write",
        "SSL_read",
        "SSL_write_ex",
        "SSL_read_ex",
        "SSL_free",
        "SSL_ctrl",
    ];

    /// Inspects a fixture with placement.
    fn inspect(name: &str) -> (PathBuf, Inspection) {
        let p = fixture(name);
        let i = inspect_file(&p, 1 << 30, true).unwrap();
        (p, i)
    }

    fn points(i: &Inspection) -> Vec<ProbePoint> {
        i.targets.iter().map(|t| t.point).collect()
    }

    fn symbols(i: &Inspection) -> Vec<&str> {
        i.targets.iter().map(|t| t.symbol.as_str()).collect()
    }

    fn target(i: &Inspection, p: ProbePoint) -> &Target {
        i.targets
            .iter()
            .find(|t| t.point == p)
            .unwrap_or_else(|| panic!("no {p:?} in {:?}", points(i)))
    }

    /// Every target's offset and size are the symbol's as `nm` lists it in
    /// `.dynsym` (`dynamic`) or `.symtab`, its offset found through the
    /// section table.
    fn assert_offsets_match_nm(path: &Path, i: &Inspection, dynamic: bool) {
        let table = nm(path, dynamic);
        for t in &i.targets {
            let s = table
                .get(&t.symbol)
                .unwrap_or_else(|| panic!("{} not in nm (dynamic: {dynamic})", t.symbol));
            assert_eq!(t.offset, section_offset(path, s.vaddr), "{}", t.symbol);
            assert_eq!(t.size, s.size, "{}", t.symbol);
            assert!(t.size > 0, "{}", t.symbol);
        }
    }

    /// Whatever placement chose: entry and return points are instructions
    /// of the function, the kernel emulates the ones inside it, only points
    /// with a return program have return points, and a kept uretprobe keeps
    /// the entry program at the entry.
    fn assert_placement_sane(path: &Path, i: &Inspection) {
        let data = std::fs::read(path).unwrap();
        for t in &i.targets {
            let pl = t
                .place
                .as_ref()
                .unwrap_or_else(|| panic!("{} not placed", t.symbol));
            let code = &data[t.offset as usize..(t.offset + t.size) as usize];
            let insns: Vec<_> =
                iced_x86::Decoder::with_ip(64, code, t.offset, iced_x86::DecoderOptions::NONE)
                    .into_iter()
                    .collect();
            let emulated_at = |o: u64| {
                let ins = insns
                    .iter()
                    .find(|ins| ins.ip() == o)
                    .unwrap_or_else(|| panic!("{}: {o:#x} is not an instruction", t.symbol));
                let at = (o - t.offset) as usize;
                place::emulated(ins, &code[at..at + ins.len()])
            };
            let e = t.entry_offset();
            assert_eq!(e, pl.entry.offset);
            if e != t.offset {
                assert!(emulated_at(e).is_some(), "{}: {}", t.symbol, pl.entry.why);
            }
            match &pl.returns {
                Ok(r) => {
                    assert!(t.point.has_return() && !r.is_empty(), "{}", t.symbol);
                    for &o in r {
                        assert!(emulated_at(o).is_some(), "{}: return at {o:#x}", t.symbol);
                    }
                }
                Err(why) if !t.point.has_return() => assert_eq!(why, "no return program"),
                // The uretprobe stays: its hit at the entry serves the
                // entry program too.
                Err(why) => assert_eq!(e, t.offset, "{}: {why}", t.symbol),
            }
        }
    }

    #[test]
    fn openssl_like_is_openssl_exported() {
        let (p, i) = inspect("openssl_like");
        assert_eq!(i.library, Some(TlsLibrary::OpenSsl));
        assert_eq!(i.linkage, Linkage::Exported);
        assert!(i.is_tls() && i.unsupported.is_none());
        // The fixture defines six of the OpenSSL family's functions
        // (SSL_set_tlsext_host_name is a macro in OpenSSL: never exported).
        let want: Vec<_> = ProbePoint::OPENSSL
            .into_iter()
            .filter(|p| OPENSSL_LIKE.contains(&p.symbol()))
            .collect();
        assert_eq!(points(&i), want);
        assert_eq!(symbols(&i), OPENSSL_LIKE);
        assert_offsets_match_nm(&p, &i, true);
        assert_placement_sane(&p, &i);
    }

    /// Placement on a libssl-shaped SSL_write (gcc -O2
    /// -fstack-protector-strong makes the code of Debian's libssl.so.3 of
    /// it, at the same offsets): the entry goes on `js` at +0x16, the
    /// return on the canary check's `jne __stack_chk_fail` at +0x38;
    /// SSL_write_ex shares its entry with the uretprobe, which stays.
    #[test]
    fn openssl_like_placement() {
        let (p, i) = inspect("openssl_like");
        let data = std::fs::read(&p).unwrap();
        for point in [ProbePoint::SslWrite, ProbePoint::SslRead] {
            let w = target(&i, point);
            assert_eq!(w.entry_offset(), w.offset + 0x16, "{}", w.symbol);
            assert_eq!(
                w.return_points(),
                Some(&[w.offset + 0x38][..]),
                "{}",
                w.symbol
            );
            // js rel8 and jne rel8 there.
            assert_eq!(data[w.offset as usize + 0x16], 0x78, "{}", w.symbol);
            assert_eq!(data[w.offset as usize + 0x38], 0x75, "{}", w.symbol);
            assert_eq!(
                w.place.as_ref().unwrap().explain(w),
                format!(
                    "{}: +0x16 (jcc): first emulated instruction, arguments untouched; \
                     return at +0x38 instead of a uretprobe",
                    w.symbol
                )
            );
        }
        for point in [ProbePoint::SslWriteEx, ProbePoint::SslReadEx] {
            let x = target(&i, point);
            assert_eq!(x.entry_offset(), x.offset, "{}", x.symbol);
            assert_eq!(x.return_points(), None, "{}", x.symbol);
            let why = x.place.as_ref().unwrap().returns.as_ref().unwrap_err();
            assert!(why.contains("return register is written at +0xd"), "{why}");
        }
        // No return program: the uretprobe question does not arise.
        let f = target(&i, ProbePoint::SslFree);
        assert_eq!(f.entry_offset(), f.offset + 0x6);
        assert_eq!(f.return_points(), None);
        assert_placement_sane(&p, &i);
        let off = inspect_file(&p, 1 << 30, false).unwrap();
        assert_eq!(points(&off), points(&i));
        assert!(off
            .targets
            .iter()
            .all(|t| t.place.is_none() && t.entry_offset() == t.offset));
    }

    /// The same code linked into executables: in `.symtab` only (static),
    /// or exported from the executable as node exports its OpenSSL.
    #[test]
    fn openssl_in_executables() {
        for (name, linkage) in [
            ("openssl_static", Linkage::Static),
            ("openssl_exported", Linkage::Exported),
        ] {
            let (p, i) = inspect(name);
            assert_eq!(i.library, Some(TlsLibrary::OpenSsl), "{name}");
            assert_eq!(i.linkage, linkage, "{name}");
            assert_eq!(symbols(&i), OPENSSL_LIKE, "{name}");
            assert_offsets_match_nm(&p, &i, linkage == Linkage::Exported);
            if linkage == Linkage::Static {
                assert!(nm(&p, true).keys().all(|n| !n.starts_with("SSL_")));
            }
            let w = target(&i, ProbePoint::SslWrite);
            assert_eq!(w.entry_offset(), w.offset + 0x16, "{name}");
            assert_eq!(w.return_points(), Some(&[w.offset + 0x38][..]), "{name}");
            assert_placement_sane(&p, &i);
        }
    }

    #[test]
    fn boringssl_is_recognised() {
        let (p, i) = inspect("boringssl_like");
        assert_eq!(i.library, Some(TlsLibrary::BoringSsl));
        assert_eq!(i.linkage, Linkage::Exported);
        let pts = points(&i);
        assert!(pts.contains(&ProbePoint::SslWrite) && pts.contains(&ProbePoint::SslRead));
        assert!(!pts.contains(&ProbePoint::SslWriteEx));
        assert!(pts.contains(&ProbePoint::SslSetHostName) && !pts.contains(&ProbePoint::SslCtrl));
        assert_eq!(
            pts,
            [
                ProbePoint::SslWrite,
                ProbePoint::SslRead,
                ProbePoint::SslFree,
                ProbePoint::SslSetHostName
            ]
        );
        assert_eq!(
            symbols(&i),
            [
                "SSL_write",
                "SSL_read",
                "SSL_free",
                "SSL_set_tlsext_host_name"
            ]
        );
        assert_offsets_match_nm(&p, &i, true);
        assert_placement_sane(&p, &i);
        // SSL_write ends in a tail call (jmp ssl_write_impl): the return
        // stays a uretprobe, sharing its entry hit.
        let w = target(&i, ProbePoint::SslWrite);
        assert_eq!(w.entry_offset(), w.offset);
        let why = w.place.as_ref().unwrap().returns.as_ref().unwrap_err();
        assert!(why.contains("a jump leaves the function"), "{why}");
    }

    #[test]
    fn gnutls_is_recognised() {
        let (p, i) = inspect("gnutls_like");
        assert_eq!(i.library, Some(TlsLibrary::GnuTls));
        assert_eq!(i.linkage, Linkage::Exported);
        assert_eq!(
            points(&i),
            [
                ProbePoint::GnutlsSend,
                ProbePoint::GnutlsRecv,
                ProbePoint::GnutlsServerName,
                ProbePoint::GnutlsDeinit
            ]
        );
        assert_eq!(
            symbols(&i),
            [
                "gnutls_record_send2",
                "gnutls_record_recv",
                "gnutls_server_name_set",
                "gnutls_deinit"
            ]
        );
        assert_offsets_match_nm(&p, &i, true);
        assert_placement_sane(&p, &i);
    }

    /// mbedTLS (2.28 and 3.x's early data): its probed functions, in the order of
    /// `ProbePoint::MBEDTLS`; mbedtls_ssl_close_notify is not one.
    #[test]
    fn mbedtls_is_recognised() {
        let (p, i) = inspect("mbedtls_like");
        assert_eq!(i.library, Some(TlsLibrary::MbedTls));
        assert_eq!(i.linkage, Linkage::Exported);
        assert_eq!(points(&i), ProbePoint::MBEDTLS);
        assert!(symbols(&i).iter().all(|s| s.starts_with("mbedtls_ssl_")));
        assert!(!symbols(&i).contains(&"mbedtls_ssl_close_notify"));
        assert_offsets_match_nm(&p, &i, true);
        assert_placement_sane(&p, &i);
        // Linked into an executable: the same functions, from .symtab.
        let (p, i) = inspect("mbedtls_static");
        assert_eq!(i.library, Some(TlsLibrary::MbedTls));
        assert_eq!(i.linkage, Linkage::Static);
        assert_eq!(points(&i), ProbePoint::MBEDTLS);
        assert!(nm(&p, true).keys().all(|n| !n.starts_with("mbedtls_")));
        assert_offsets_match_nm(&p, &i, false);
        assert_placement_sane(&p, &i);
    }

    /// wolfSSL with its compatibility layer's SSL_write & co.: wolfSSL,
    /// probed by its own names only (each call once), never as OpenSSL.
    #[test]
    fn wolfssl_is_not_openssl() {
        let (p, i) = inspect("wolfssl_like");
        assert!(nm(&p, true).contains_key("SSL_write") && nm(&p, true).contains_key("SSL_ctrl"));
        assert_eq!(i.library, Some(TlsLibrary::WolfSsl));
        assert_eq!(i.linkage, Linkage::Exported);
        assert_eq!(
            points(&i),
            [
                ProbePoint::WolfsslWrite,
                ProbePoint::WolfsslRead,
                ProbePoint::WolfsslWriteEx,
                ProbePoint::WolfsslReadEx,
                ProbePoint::WolfsslUseSni,
                ProbePoint::WolfsslAccept,
                ProbePoint::WolfsslConnect,
                ProbePoint::WolfsslFree
            ]
        );
        assert!(symbols(&i).iter().all(|s| s.starts_with("wolfSSL_")));
        assert_offsets_match_nm(&p, &i, true);
        assert_placement_sane(&p, &i);
        // The same answer from every symbol scanned as from the lookups.
        let data = std::fs::read(&p).unwrap();
        let scanned = inspect_scanning(&data[..], &p, true).unwrap();
        assert_eq!(points(&scanned), points(&i));
    }

    /// rustls over aws-lc-rs: the versioned EVP_AEAD_CTX_* functions from
    /// `.symtab`, in the order of `ProbePoint::AEAD`; the gather variant and
    /// the foreign prefixes are left out.
    #[test]
    fn awslc_static_takes_the_aead_path() {
        let (p, i) = inspect("awslc_static");
        assert_eq!(i.library, Some(TlsLibrary::AwsLc));
        assert_eq!(i.linkage, Linkage::Static);
        assert!(i.is_tls() && i.unsupported.is_none());
        assert_eq!(
            points(&i),
            [
                ProbePoint::AeadInit,
                ProbePoint::AeadCleanup,
                ProbePoint::AeadSeal,
                ProbePoint::AeadOpen
            ]
        );
        assert_eq!(
            symbols(&i),
            [
                "aws_lc_0_47_0_EVP_AEAD_CTX_init_with_direction",
                "aws_lc_0_47_0_EVP_AEAD_CTX_cleanup",
                "aws_lc_0_47_0_EVP_AEAD_CTX_seal",
                "aws_lc_0_47_0_EVP_AEAD_CTX_open"
            ]
        );
        assert_offsets_match_nm(&p, &i, false);
        assert!(nm(&p, true).keys().all(|n| !n.contains("EVP_AEAD")));
        assert_placement_sane(&p, &i);
    }

    /// libjvm.so: a JVM, nothing to probe (its processes get the Java
    /// agent); the same exports in an executable are no JVM.
    #[test]
    fn libjvm_is_a_jvm() {
        let (_, i) = inspect("jvm_like");
        assert!(i.is_jvm() && !i.is_tls(), "{i:?}");
        assert!(i.targets.is_empty() && i.unsupported.is_none());
        let (_, i) = inspect("notls");
        assert!(!i.is_jvm());
    }

    /// The Java agent's own native library (built by make, jvm/native):
    /// its three functions, exported, probed at their entry.
    #[test]
    fn the_java_agents_library_is_jsse() {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/jvm/libplainsight-jsse.so");
        let i = inspect_file(&p, 1 << 30, true).unwrap();
        assert_eq!(i.library, Some(TlsLibrary::Jsse));
        assert_eq!(i.linkage, Linkage::Exported);
        assert_eq!(
            points(&i),
            [
                ProbePoint::JsseOpen,
                ProbePoint::JsseData,
                ProbePoint::JsseClose
            ]
        );
        assert_offsets_match_nm(&p, &i, true);
    }

    /// rustls over ring: the mangled `ring::aead::algorithm` functions,
    /// sorted by symbol; a malformed hash and another module are left out.
    #[test]
    fn ring_static_takes_the_ring_path() {
        let (p, i) = inspect("ring_static");
        assert_eq!(i.library, Some(TlsLibrary::Ring));
        assert_eq!(i.linkage, Linkage::Static);
        assert!(i.is_tls() && i.unsupported.is_none());
        assert_eq!(
            points(&i),
            [
                ProbePoint::RingOpen,
                ProbePoint::RingSeal,
                ProbePoint::RingInit,
                ProbePoint::RingSeal
            ]
        );
        assert_eq!(
            symbols(&i),
            [
                "_ZN4ring4aead9algorithm12aes_gcm_open17h34f654bc491d2889E",
                "_ZN4ring4aead9algorithm12aes_gcm_seal17hf8f8ecdc1e0be8ddE",
                "_ZN4ring4aead9algorithm16aes_gcm_init_12817h0123456789abcdefE",
                "_ZN4ring4aead9algorithm22chacha20_poly1305_seal17h38c4ee39eb0b39c3E"
            ]
        );
        assert_offsets_match_nm(&p, &i, false);
        // The decoys are in the file, only not chosen.
        let all = nm(&p, false);
        assert!(all.contains_key("_ZN4ring4aead9algorithm12aes_gcm_seal17hXYZE"));
        assert!(all.contains_key("_ZN4ring4aead7aes_gcm4seal17h34f654bc491d2889E"));
        assert_placement_sane(&p, &i);
    }

    /// A library without the TLS API (near-miss names: SSL_write without
    /// SSL_read, gnutls_record_send2 without gnutls_record_recv).
    #[test]
    fn non_tls_library_is_not_tls() {
        let (p, i) = inspect("notls");
        assert!(nm(&p, true).contains_key("SSL_write"));
        assert!(!i.is_tls());
        assert_eq!(i.library, None);
        assert!(i.targets.is_empty());
        assert_eq!(i.unsupported, None);
    }

    /// Stripped executables: nothing found, and one that mentions rustls is
    /// reported as such.
    #[test]
    fn stripped_executables() {
        let (_, i) = inspect("stripped");
        assert!(!i.is_tls());
        assert_eq!(i.library, None);
        assert_eq!(i.unsupported, None);
        let (_, i) = inspect("stripped_rustls");
        assert!(!i.is_tls());
        assert_eq!(i.library, None);
        let dark = i.unsupported.unwrap();
        assert_eq!(dark.stack, "rustls");
        assert!(dark.why.starts_with("a stripped Rust program using rustls"));
    }
}

#[cfg(test)]
mod non_go {
    use super::testfixtures::fixture;

    /// Executables without Go build info are not parsed as Go at all (the
    /// full parse is slow on large non-Go files; `make bench` shows pauses).
    /// Executables without SSL_write are the ones looked at for Go.
    #[test]
    fn non_go_executables_have_no_go_part() {
        for name in ["awslc_static", "ring_static", "stripped", "stripped_rustls"] {
            let p = fixture(name);
            let syms = super::elf::read_symbols_and_go(&p, 1 << 33, &super::interesting).unwrap();
            assert!(
                syms.is_executable && syms.get("SSL_write").is_none(),
                "{name}"
            );
            assert!(syms.go.is_none(), "{name}");
        }
    }
}
