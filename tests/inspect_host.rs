//! Inspection of the real TLS libraries and programs of the host (Debian
//! 12's libssl.so.3, libgnutls.so.30, libmbedtls, libwolfssl, Android's
//! BoringSSL, node, python3, curl): the end-to-end tier, where `scripts/install-deps.sh --test` has
//! installed them. The unit tests (`src/inspect`) use fixtures built in the
//! tree instead; these check that the real files still look like them.

use std::path::Path;

use plainsight::inspect::elf::{self, ElfSymbols};
use plainsight::inspect::{
    aead_point, inspect_file, ring_point, Inspection, Linkage, ProbePoint, TlsLibrary,
};

const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
const MBEDTLS: &str = "/usr/lib/x86_64-linux-gnu/libmbedtls.so.14";
const WOLFSSL: &str = "/usr/lib/x86_64-linux-gnu/libwolfssl.so.35";

fn installed(p: &str) -> &Path {
    let path = Path::new(p);
    assert!(
        path.exists(),
        "{p} missing: run scripts/install-deps.sh --test"
    );
    path
}

fn inspect(p: &str, inner: bool) -> Inspection {
    inspect_file(installed(p), 1 << 30, inner).unwrap()
}

/// The names inspection keeps (`plainsight::inspect`'s filter).
fn interesting(name: &str) -> bool {
    name.starts_with("SSL_")
        || name.starts_with("gnutls_")
        || aead_point(name).is_some()
        || ring_point(name).is_some()
}

fn symbols_and_go(p: &Path, want: &dyn Fn(&str) -> bool) -> ElfSymbols {
    let map = elf::read_path(p, 1 << 33).unwrap();
    elf::symbols_and_go(&map[..], p, want).unwrap()
}

#[test]
fn debian_libssl_is_openssl_exported() {
    let i = inspect(LIBSSL, true);
    assert_eq!(i.library, Some(TlsLibrary::OpenSsl));
    assert_eq!(i.linkage, Linkage::Exported);
    let pts: Vec<_> = i.targets.iter().map(|t| t.point).collect();
    // SSL_set_tlsext_host_name is a macro in OpenSSL: not exported;
    // SSL_write_ex2 came with OpenSSL 3.3 (Debian 12 has 3.0). The SSL
    // BIO's functions come from BIO_f_ssl's method table.
    let mut want: Vec<_> = ProbePoint::OPENSSL
        .into_iter()
        .filter(|p| ![ProbePoint::SslSetHostName, ProbePoint::SslWriteEx2].contains(p))
        .collect();
    want.extend([
        ProbePoint::SslBioWrite,
        ProbePoint::SslBioRead,
        ProbePoint::SslBioCtrl,
    ]);
    assert_eq!(pts, want);
}

/// Debian's NSS and NSPR, each classified by its own functions.
#[test]
fn debian_nss_and_nspr() {
    let nss = inspect("/usr/lib/x86_64-linux-gnu/libssl3.so", true);
    assert_eq!(nss.library, Some(TlsLibrary::Nss));
    let pts: Vec<_> = nss.targets.iter().map(|t| t.point).collect();
    assert_eq!(pts, ProbePoint::NSS);
    let nspr = inspect("/usr/lib/x86_64-linux-gnu/libnspr4.so", true);
    assert_eq!(nspr.library, Some(TlsLibrary::Nspr));
    let pts: Vec<_> = nspr.targets.iter().map(|t| t.point).collect();
    assert_eq!(pts, ProbePoint::NSPR);
}

/// Placement on the real libssl: inside SSL_write, shared entry for
/// SSL_write_ex whose return stays a uretprobe.
#[test]
fn debian_libssl_placement() {
    let i = inspect(LIBSSL, true);
    let t = |p: ProbePoint| i.targets.iter().find(|t| t.point == p).unwrap();
    let w = t(ProbePoint::SslWrite);
    assert_eq!(w.entry_offset(), w.offset + 0x16);
    assert_eq!(w.return_points(), Some(&[w.offset + 0x38][..]));
    let x = t(ProbePoint::SslWriteEx);
    assert_eq!(x.entry_offset(), x.offset);
    assert_eq!(x.return_points(), None);
    let off = inspect(LIBSSL, false);
    assert!(off
        .targets
        .iter()
        .all(|t| t.place.is_none() && t.entry_offset() == t.offset));
}

#[test]
fn debian_libssl_symbols_are_found_with_offsets() {
    let path = installed(LIBSSL);
    let map = elf::read_path(path, 1 << 30).unwrap();
    let syms = elf::parse_symbols(&map[..], LIBSSL, &|n| n.starts_with("SSL_")).unwrap();
    let w = syms.get("SSL_write").expect("SSL_write exported");
    assert!(w.dynamic);
    // The bytes at the file offset are the function's code: compare with
    // the section data found through the section table.
    use object::{Object, ObjectSection};
    let elf = object::File::parse(&*map).unwrap();
    let text = elf.section_by_name(".text").unwrap();
    let (toff, _) = text.file_range().unwrap();
    assert_eq!(w.file_offset - toff, w.vaddr - text.address());
    for f in [
        "SSL_read",
        "SSL_write_ex",
        "SSL_read_ex",
        "SSL_free",
        "SSL_ctrl",
    ] {
        assert!(syms.get(f).is_some(), "{f}");
    }
}

#[test]
fn gnutls_is_recognised() {
    let i = inspect("/usr/lib/x86_64-linux-gnu/libgnutls.so.30", true);
    assert_eq!(i.library, Some(TlsLibrary::GnuTls));
    let pts: Vec<_> = i.targets.iter().map(|t| t.point).collect();
    assert_eq!(
        pts,
        [
            ProbePoint::GnutlsSend,
            ProbePoint::GnutlsRecv,
            ProbePoint::GnutlsServerName,
            ProbePoint::GnutlsDeinit,
            ProbePoint::GnutlsHandshake,
            ProbePoint::GnutlsSetInt
        ]
    );
}

/// Debian's mbedTLS 2.28: every probed function of 2.28 exported by libmbedtls
/// (not by libmbedcrypto or libmbedx509, which it calls).
#[test]
fn mbedtls_is_recognised() {
    let i = inspect(MBEDTLS, true);
    assert_eq!(i.library, Some(TlsLibrary::MbedTls));
    assert_eq!(i.linkage, Linkage::Exported);
    let pts: Vec<_> = i.targets.iter().map(|t| t.point).collect();
    // 2.28 has no TLS 1.3 early data (3.x's calls).
    let want: Vec<_> = ProbePoint::MBEDTLS
        .into_iter()
        .filter(|p| {
            ![
                ProbePoint::MbedtlsWriteEarlyData,
                ProbePoint::MbedtlsReadEarlyData,
            ]
            .contains(p)
        })
        .collect();
    assert_eq!(pts, want);
    for other in ["libmbedcrypto.so.7", "libmbedx509.so.1"] {
        let i = inspect(&format!("/usr/lib/x86_64-linux-gnu/{other}"), true);
        assert!(!i.is_tls(), "{other}");
    }
}

/// Debian's wolfSSL 5.5: its own names (no _ex forms in this version); the
/// OpenSSL compatibility names are macros there, none is exported.
#[test]
fn wolfssl_is_recognised() {
    let i = inspect(WOLFSSL, true);
    assert_eq!(i.library, Some(TlsLibrary::WolfSsl));
    assert_eq!(i.linkage, Linkage::Exported);
    let pts: Vec<_> = i.targets.iter().map(|t| t.point).collect();
    let want: Vec<_> = ProbePoint::WOLFSSL
        .into_iter()
        .filter(|p| ![ProbePoint::WolfsslWriteEx, ProbePoint::WolfsslReadEx].contains(p))
        .collect();
    assert_eq!(pts, want);
}

#[test]
fn libc_is_not_tls() {
    let i = inspect("/usr/lib/x86_64-linux-gnu/libc.so.6", true);
    assert!(!i.is_tls());
}

#[test]
fn boringssl_is_recognised() {
    let i = inspect("/usr/lib/x86_64-linux-gnu/android/libssl.so.0", true);
    assert_eq!(i.library, Some(TlsLibrary::BoringSsl));
    let pts: Vec<_> = i.targets.iter().map(|t| t.point).collect();
    assert!(pts.contains(&ProbePoint::SslWrite) && pts.contains(&ProbePoint::SslRead));
    assert!(!pts.contains(&ProbePoint::SslWriteEx));
    assert!(pts.contains(&ProbePoint::SslSetHostName) && !pts.contains(&ProbePoint::SslCtrl));
}

#[test]
fn node_exports_openssl_from_the_executable() {
    let node = std::fs::canonicalize(installed("/usr/bin/node")).unwrap();
    let i = inspect_file(&node, 1 << 31, true).unwrap();
    assert_eq!(i.library, Some(TlsLibrary::OpenSsl));
    assert_eq!(i.linkage, Linkage::Exported);
}

/// Executables without Go build info are not parsed as Go at all (the
/// full parse is slow on large non-Go files; `make bench` shows pauses).
#[test]
fn non_go_executables_have_no_go_part() {
    for p in [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/bin/python3.11",
        "/usr/bin/curl",
    ] {
        let syms = symbols_and_go(installed(p), &interesting);
        assert!(syms.go.is_none(), "{p}");
    }
}

/// The `.gnu.hash` lookups find exactly what a scan of every symbol finds,
/// placement included, on the host's TLS libraries, programs and others.
#[test]
fn lookups_agree_with_a_full_scan() {
    use plainsight::inspect::{inspect_bytes, inspect_scanning};
    let mut files: Vec<std::path::PathBuf> = [
        LIBSSL,
        "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
        "/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
        "/usr/lib/x86_64-linux-gnu/libssl3.so",
        "/usr/lib/x86_64-linux-gnu/libnspr4.so",
        "/usr/lib/x86_64-linux-gnu/libnss3.so",
        "/usr/lib/x86_64-linux-gnu/android/libssl.so.0",
        MBEDTLS,
        "/usr/lib/x86_64-linux-gnu/libmbedcrypto.so.7",
        WOLFSSL,
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/bin/python3.11",
        "/usr/bin/curl",
    ]
    .iter()
    .map(|p| installed(p).to_path_buf())
    .collect();
    files.push(std::fs::canonicalize(installed("/usr/bin/node")).unwrap());
    let mut tls = 0;
    for p in &files {
        let data = std::fs::read(p).unwrap();
        let looked_up = inspect_bytes(&data[..], p, true).unwrap();
        let scanned = inspect_scanning(&data[..], p, true).unwrap();
        assert_eq!(looked_up, scanned, "{}", p.display());
        tls += usize::from(looked_up.is_tls());
    }
    // libssl, GnuTLS, NSS, NSPR, BoringSSL, mbedTLS, wolfSSL and node; not
    // libcrypto, libnss3, libmbedcrypto, libc, python or curl (they call the
    // libraries).
    assert_eq!(tls, 8);
}

/// node (99 MB) is classified and placed from a few percent of its bytes.
#[test]
fn node_is_inspected_from_a_small_part_of_its_file() {
    let node = std::fs::canonicalize(installed("/usr/bin/node")).unwrap();
    let img = elf::open_image(&node, 1 << 31).unwrap();
    let i = plainsight::inspect::inspect_bytes(&img, &node, true).unwrap();
    assert_eq!(i.library, Some(TlsLibrary::OpenSsl));
    assert!(
        img.bytes_read() * 10 < img.len() as u64,
        "{} of {} bytes read",
        img.bytes_read(),
        img.len()
    );
}
