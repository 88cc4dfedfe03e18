//! The probe table: everything one user-space probe point needs, in one
//! place. Inspection finds its symbols, placement reads which registers and
//! stack slots its BPF programs read, attach finds its programs by name in
//! its BPF object, and `--hooks` prints its text. A unit test checks that
//! every program named here exists in its object, and that the registers
//! and stack slots listed are exactly the ones the compiled programs read.

use std::fmt;

use iced_x86::Register::{self, R14, R8, R9, RAX, RBX, RCX, RDI, RDX, RSI};

/// The probe points this agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ProbePoint {
    SslWrite,
    SslRead,
    SslWriteEx,
    SslWriteEx2,
    SslReadEx,
    SslFree,
    SslCtrl,
    SslSetHostName,
    SslGetServername,
    SslDoHandshake,
    SslAccept,
    SslSetFd,
    SslSetWfd,
    SslBioWrite,
    SslBioRead,
    SslBioCtrl,
    AeadInit,
    AeadCleanup,
    AeadSeal,
    AeadSealScatter,
    AeadOpen,
    RingInit,
    RingSeal,
    RingOpen,
    GnutlsSend,
    GnutlsRecv,
    GnutlsServerName,
    GnutlsDeinit,
    GnutlsHandshake,
    GnutlsSetInt,
    NssImportFd,
    NssSetUrl,
    PrSend,
    PrWrite,
    PrRecv,
    PrRead,
    PrClose,
    GoWrite,
    GoWriteRet,
    GoRead,
    GoReadRet,
    GoHandshake,
    GoServerHandshake,
    GoClose,
    JsseOpen,
    JsseData,
    JsseClose,
    MbedtlsWrite,
    MbedtlsRead,
    MbedtlsSetHostname,
    MbedtlsHandshake,
    MbedtlsHandshakeStep,
    MbedtlsSessionReset,
    MbedtlsFree,
    MbedtlsWriteEarlyData,
    MbedtlsReadEarlyData,
    WolfsslWrite,
    WolfsslRead,
    WolfsslWriteEx,
    WolfsslReadEx,
    WolfsslUseSni,
    WolfsslGetServername,
    WolfsslAccept,
    WolfsslAcceptTls13,
    WolfsslNegotiate,
    WolfsslDoHandshake,
    WolfsslSetFd,
    WolfsslFree,
    WolfsslConnect,
    WolfsslConnectTls13,
    ErlangCipherInit,
    ErlangCipherUpdate,
    ErlangSealFinal,
    ErlangOpenDone,
}

/// The BPF object whose programs serve a probe point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// `bpf/openssl.bpf.c`: libraries with a C API (OpenSSL family, GnuTLS,
    /// NSS, mbedTLS, wolfSSL).
    Openssl,
    /// `bpf/statictls.bpf.c`: static TLS (aws-lc AEAD, ring, Go).
    Statictls,
}

/// What one probe point needs.
#[derive(Debug)]
pub struct Probe {
    pub point: ProbePoint,
    /// The symbol probed (a pattern for ring's hashed names and aws-lc's
    /// version prefix; Go's RET points are instructions of a function).
    pub symbol: &'static str,
    pub object: Object,
    /// The program run where the function is entered (or, for Go's RET
    /// points, at the instruction).
    pub entry: &'static str,
    /// The program run when the function returns (at an inner return point
    /// or as a uretprobe); of the registers it reads at most the return
    /// register.
    pub ret: Option<&'static str>,
    /// Registers the entry program reads (64-bit names).
    pub regs: &'static [Register],
    /// Stack arguments the entry program reads, as 1-based argument numbers
    /// (7 is the first argument passed on the stack, at `rsp + 8` on entry).
    pub stack: &'static [u8],
    /// What the probe does, for `--hooks`.
    pub about: &'static str,
    /// Its return program captures, for connections its entry program
    /// found wanted (`on_entry`): with filters given, it is attached per
    /// process, when the process asks (`want_returns`).
    pub per_process_return: bool,
}

impl Probe {
    /// Marks a row whose return program may be attached per process.
    const fn per_process_return(mut self) -> Probe {
        self.per_process_return = true;
        self
    }
}

/// Helper for the table rows.
#[allow(clippy::too_many_arguments)]
const fn probe(
    point: ProbePoint,
    symbol: &'static str,
    object: Object,
    entry: &'static str,
    ret: Option<&'static str>,
    regs: &'static [Register],
    stack: &'static [u8],
    about: &'static str,
) -> Probe {
    Probe {
        point,
        symbol,
        object,
        entry,
        ret,
        regs,
        stack,
        about,
        per_process_return: false,
    }
}

use Object::{Openssl as O, Statictls as S};
use ProbePoint as P;

/// Every probe point, in the order inspection lists them.
#[rustfmt::skip]
pub const PROBES: &[Probe] = &[
    probe(P::SslWrite, "SSL_write", O, "ssl_write_entry", Some("ssl_write_return"),
        &[RDI, RSI], &[], "plaintext handed to SSL_write").per_process_return(),
    probe(P::SslRead, "SSL_read", O, "ssl_read_entry", Some("ssl_read_return"),
        &[RDI, RSI], &[], "plaintext returned by SSL_read").per_process_return(),
    probe(P::SslWriteEx, "SSL_write_ex", O, "ssl_write_ex_entry", Some("ssl_write_ex_return"),
        &[RDI, RSI, RCX], &[], "plaintext handed to SSL_write_ex").per_process_return(),
    probe(P::SslReadEx, "SSL_read_ex", O, "ssl_read_ex_entry", Some("ssl_read_ex_return"),
        &[RDI, RSI, RCX], &[], "plaintext returned by SSL_read_ex").per_process_return(),
    probe(P::SslWriteEx2, "SSL_write_ex2", O, "ssl_write_ex2_entry", Some("ssl_write_ex_return"),
        &[RDI, RSI, R8], &[], "plaintext handed to SSL_write_ex2 (OpenSSL 3.3+)").per_process_return(),
    probe(P::SslFree, "SSL_free", O, "ssl_free_entry", None,
        &[RDI], &[], "the connection's end"),
    probe(P::SslCtrl, "SSL_ctrl", O, "ssl_ctrl_entry", None,
        &[RDI, RSI, RDX, RCX], &[], "the server name (SSL_CTRL_SET_TLSEXT_HOSTNAME)"),
    probe(P::SslSetHostName, "SSL_set_tlsext_host_name", O, "ssl_set_host_name_entry", None,
        &[RDI, RSI], &[], "the server name (BoringSSL)"),
    probe(P::SslGetServername, "SSL_get_servername", O, "ssl_get_servername_entry",
        Some("ssl_get_servername_return"),
        &[RDI, RSI], &[], "a server's client's server name, when it asks"),
    probe(P::SslDoHandshake, "SSL_do_handshake", O, "tls_handshake_entry", None,
        &[RDI], &[], "a handshake: its thread's next ClientHello read is the connection's"),
    probe(P::SslAccept, "SSL_accept", O, "tls_handshake_entry", None,
        &[RDI], &[], "a server's handshake (as SSL_do_handshake)"),
    probe(P::SslSetFd, "SSL_set_fd", O, "ssl_set_fd_entry", None,
        &[RDI, RSI], &[], "the descriptor a program gives its connection: its socket"),
    probe(P::SslSetWfd, "SSL_set_wfd", O, "ssl_set_fd_entry", None,
        &[RDI, RSI], &[], "the descriptor records are written to (as SSL_set_fd)"),
    probe(P::SslBioWrite, "BIO_f_ssl: write", O, "ssl_bio_write_entry", Some("ssl_write_ex_return"),
        &[RDI, RSI, RCX], &[], "plaintext written through an SSL BIO").per_process_return(),
    probe(P::SslBioRead, "BIO_f_ssl: read", O, "ssl_bio_read_entry", Some("ssl_read_ex_return"),
        &[RDI, RSI, RCX], &[], "plaintext read through an SSL BIO").per_process_return(),
    probe(P::SslBioCtrl, "BIO_f_ssl: ctrl", O, "ssl_bio_ctrl_entry", None,
        &[RDI, RSI, RCX], &[], "an SSL BIO's SSL * (BIO_set_ssl)"),
    probe(P::AeadInit, "EVP_AEAD_CTX_init_with_direction", S, "aead_init_entry", None,
        &[RDI], &[], "a new key context after a ServerHello"),
    probe(P::AeadCleanup, "EVP_AEAD_CTX_cleanup", S, "aead_cleanup_entry", None,
        &[RDI], &[], "a key context's end"),
    probe(P::AeadSeal, "EVP_AEAD_CTX_seal", S, "aead_seal_entry", None,
        &[RDI], &[7, 8, 9, 10], "plaintext sealed"),
    probe(P::AeadSealScatter, "EVP_AEAD_CTX_seal_scatter", S, "aead_seal_scatter_entry", None,
        &[RDI], &[8, 9, 12, 13], "plaintext sealed (TLS 1.2 AES-GCM)"),
    probe(P::AeadOpen, "EVP_AEAD_CTX_open", S, "aead_open_entry", Some("aead_open_return"),
        &[RDI, RSI, RDX], &[9, 10], "plaintext opened"),
    probe(P::RingInit, "ring::aead::algorithm::*_init", S, "ring_init_entry", Some("ring_init_return"),
        &[RDI], &[], "a new ring key after a ServerHello"),
    probe(P::RingSeal, "ring::aead::algorithm::*_seal", S, "ring_seal_entry", None,
        &[RSI, RCX, R8, R9], &[7], "plaintext sealed by ring"),
    probe(P::RingOpen, "ring::aead::algorithm::*_open", S, "ring_open_entry", Some("ring_open_return"),
        &[RSI, RCX, R8, R9], &[7, 8], "plaintext opened by ring"),
    probe(P::GnutlsSend, "gnutls_record_send2", O, "gnutls_send_entry", Some("gnutls_send_return"),
        &[RDI, RSI], &[], "plaintext handed to GnuTLS").per_process_return(),
    probe(P::GnutlsRecv, "gnutls_record_recv", O, "gnutls_recv_entry", Some("gnutls_recv_return"),
        &[RDI, RSI], &[], "plaintext returned by GnuTLS").per_process_return(),
    probe(P::GnutlsServerName, "gnutls_server_name_set", O, "gnutls_server_name_entry", None,
        &[RDI, RSI, RDX, RCX], &[], "the server name (GnuTLS)"),
    probe(P::GnutlsDeinit, "gnutls_deinit", O, "gnutls_deinit_entry", None,
        &[RDI], &[], "the session's end"),
    probe(P::GnutlsHandshake, "gnutls_handshake", O, "tls_handshake_entry", None,
        &[RDI], &[], "a handshake (as SSL_do_handshake)"),
    probe(P::GnutlsSetInt, "gnutls_transport_set_int2", O, "gnutls_set_int_entry", None,
        &[RDI, RDX], &[], "the descriptors a program gives its session: its socket"),
    probe(P::NssImportFd, "SSL_ImportFD", O, "nss_import_entry", Some("nss_import_return"),
        &[RSI], &[], "an NSPR descriptor gets NSS's SSL layer"),
    probe(P::NssSetUrl, "SSL_SetURL", O, "nss_set_url_entry", None,
        &[RDI, RSI], &[], "the server name (NSS)"),
    probe(P::PrSend, "PR_Send", O, "pr_write_entry", Some("pr_write_return"),
        &[RDI, RSI], &[], "plaintext sent on an NSS SSL descriptor").per_process_return(),
    probe(P::PrWrite, "PR_Write", O, "pr_write_entry", Some("pr_write_return"),
        &[RDI, RSI], &[], "plaintext written to an NSS SSL descriptor").per_process_return(),
    probe(P::PrRecv, "PR_Recv", O, "pr_read_entry", Some("pr_read_return"),
        &[RDI, RSI], &[], "plaintext received on an NSS SSL descriptor").per_process_return(),
    probe(P::PrRead, "PR_Read", O, "pr_read_entry", Some("pr_read_return"),
        &[RDI, RSI], &[], "plaintext read from an NSS SSL descriptor").per_process_return(),
    probe(P::PrClose, "PR_Close", O, "pr_close_entry", None,
        &[RDI], &[], "an NSS SSL descriptor's end"),
    probe(P::GoWrite, "crypto/tls.(*Conn).Write", S, "go_write_entry", None,
        &[RAX, RBX, R14], &[], "plaintext handed to Go's (*Conn).Write"),
    probe(P::GoWriteRet, "crypto/tls.(*Conn).Write RET", S, "go_write_ret", None,
        &[RAX, R14], &[], "its return (each RET: no uretprobes on Go)"),
    probe(P::GoRead, "crypto/tls.(*Conn).Read", S, "go_read_entry", None,
        &[RAX, RBX, R14], &[], "a read into a buffer"),
    probe(P::GoReadRet, "crypto/tls.(*Conn).Read RET", S, "go_read_ret", None,
        &[RAX, R14], &[], "plaintext read (each RET)"),
    probe(P::GoHandshake, "crypto/tls.(*Conn).clientHandshake", S, "go_handshake_entry", None,
        &[RAX, R14], &[], "ties the ClientHello sent to its *Conn"),
    probe(P::GoServerHandshake, "crypto/tls.(*Conn).serverHandshake", S, "go_handshake_entry", None,
        &[RAX, R14], &[], "ties the ClientHello received to its *Conn"),
    probe(P::GoClose, "crypto/tls.(*Conn).Close", S, "go_close_entry", None,
        &[RAX], &[], "the connection's end"),
    probe(P::JsseOpen, "plainsight_jsse_open", O, "jsse_open_entry", None,
        &[RDI], &[], "a JVM connection's name and ends (our Java agent): decided here"),
    probe(P::JsseData, "plainsight_jsse_data", O, "jsse_data_entry", None,
        &[RDI, RSI, RDX, RCX], &[], "plaintext JSSE sent or received (our Java agent)"),
    probe(P::JsseClose, "plainsight_jsse_close", O, "jsse_close_entry", None,
        &[RDI], &[], "a JVM connection's end"),
    // mbedTLS (2.28, 3.x: the same entry points): OpenSSL's shapes, so
    // OpenSSL's programs; the connection is the mbedtls_ssl_context *, whose
    // reuse after a reset bpf/mbedtls.bpf.h follows.
    probe(P::MbedtlsWrite, "mbedtls_ssl_write", O, "ssl_write_entry", Some("ssl_write_return"),
        &[RDI, RSI], &[], "plaintext handed to mbedTLS").per_process_return(),
    probe(P::MbedtlsRead, "mbedtls_ssl_read", O, "ssl_read_entry", Some("ssl_read_return"),
        &[RDI, RSI], &[], "plaintext returned by mbedTLS").per_process_return(),
    probe(P::MbedtlsSetHostname, "mbedtls_ssl_set_hostname", O, "mbedtls_set_hostname_entry", None,
        &[RDI, RSI], &[], "the server name (mbedTLS), kept for the context's next connections"),
    probe(P::MbedtlsHandshake, "mbedtls_ssl_handshake", O, "tls_handshake_entry", None,
        &[RDI], &[], "a handshake (as SSL_do_handshake)"),
    probe(P::MbedtlsHandshakeStep, "mbedtls_ssl_handshake_step", O, "tls_handshake_entry", None,
        &[RDI], &[], "a handshake driven step by step (lighttpd)"),
    probe(P::MbedtlsSessionReset, "mbedtls_ssl_session_reset", O, "mbedtls_reset_entry", None,
        &[RDI], &[], "the connection ends; the next one on the context keeps its set name"),
    probe(P::MbedtlsFree, "mbedtls_ssl_free", O, "mbedtls_free_entry", None,
        &[RDI], &[], "the connection's end"),
    // mbedTLS 3.x, TLS 1.3 early data: the same shapes; each has its own
    // record path (ssl_write_real, ssl_read_application_data), not a call
    // of mbedtls_ssl_write/read, so nothing is seen twice.
    probe(P::MbedtlsWriteEarlyData, "mbedtls_ssl_write_early_data", O, "ssl_write_entry",
        Some("ssl_write_return"),
        &[RDI, RSI], &[], "early data handed to mbedTLS 3.x (client)").per_process_return(),
    probe(P::MbedtlsReadEarlyData, "mbedtls_ssl_read_early_data", O, "ssl_read_entry",
        Some("ssl_read_return"),
        &[RDI, RSI], &[], "early data returned by mbedTLS 3.x (server)").per_process_return(),
    // wolfSSL: its own names (a build with the OpenSSL compatibility layer
    // may export SSL_* too: only these are probed).
    probe(P::WolfsslWrite, "wolfSSL_write", O, "ssl_write_entry", Some("ssl_write_return"),
        &[RDI, RSI], &[], "plaintext handed to wolfSSL").per_process_return(),
    probe(P::WolfsslRead, "wolfSSL_read", O, "ssl_read_entry", Some("ssl_read_return"),
        &[RDI, RSI], &[], "plaintext returned by wolfSSL").per_process_return(),
    probe(P::WolfsslWriteEx, "wolfSSL_write_ex", O, "ssl_write_ex_entry", Some("ssl_write_ex_return"),
        &[RDI, RSI, RCX], &[], "plaintext handed to wolfSSL_write_ex").per_process_return(),
    probe(P::WolfsslReadEx, "wolfSSL_read_ex", O, "ssl_read_ex_entry", Some("ssl_read_ex_return"),
        &[RDI, RSI, RCX], &[], "plaintext returned by wolfSSL_read_ex").per_process_return(),
    probe(P::WolfsslUseSni, "wolfSSL_UseSNI", O, "wolfssl_use_sni_entry", None,
        &[RDI, RSI, RDX, RCX], &[], "a server name (wolfSSL), kept until the handshake tells the side"),
    probe(P::WolfsslGetServername, "wolfSSL_get_servername", O, "ssl_get_servername_entry",
        Some("ssl_get_servername_return"),
        &[RDI, RSI], &[], "a server's client's server name, when it asks (wolfSSL)"),
    probe(P::WolfsslAccept, "wolfSSL_accept", O, "wolfssl_accept_entry", None,
        &[RDI], &[], "a server's handshake (as SSL_accept): a name it was given is not its client's"),
    probe(P::WolfsslAcceptTls13, "wolfSSL_accept_TLSv13", O, "wolfssl_accept_entry", None,
        &[RDI], &[], "a TLS 1.3 server's handshake (as wolfSSL_accept)"),
    probe(P::WolfsslConnect, "wolfSSL_connect", O, "wolfssl_connect_entry", None,
        &[RDI], &[], "a client's handshake: the name it was given is the connection's"),
    probe(P::WolfsslConnectTls13, "wolfSSL_connect_TLSv13", O, "wolfssl_connect_entry", None,
        &[RDI], &[], "a TLS 1.3 client's handshake (as wolfSSL_connect)"),
    probe(P::WolfsslNegotiate, "wolfSSL_negotiate", O, "tls_handshake_entry", None,
        &[RDI], &[], "a handshake (as SSL_do_handshake)"),
    probe(P::WolfsslDoHandshake, "wolfSSL_SSL_do_handshake", O, "tls_handshake_entry", None,
        &[RDI], &[], "a handshake (SSL_do_handshake of the compatibility layer)"),
    probe(P::WolfsslSetFd, "wolfSSL_set_fd", O, "ssl_set_fd_entry", None,
        &[RDI, RSI], &[], "the descriptor a program gives its connection: its socket"),
    probe(P::WolfsslFree, "wolfSSL_free", O, "wolfssl_free_entry", None,
        &[RDI], &[], "the connection's end"),
    // Erlang/OTP's ssl: call instructions inside the crypto NIF's
    // aead_cipher_nif (src/inspect/erlang.rs), never libcrypto's functions;
    // each record's key is tied to its socket by its ciphertext
    // (bpf/erlang.bpf.h, bpf/erlang_sock.bpf.h).
    probe(P::ErlangCipherInit, "aead_cipher_nif->EVP_CipherInit_ex", S, "erl_cipher_init",
        None, &[RSI, RCX, R8, R9], &[], "a record's direction, then its key and nonce"),
    probe(P::ErlangCipherUpdate, "aead_cipher_nif->EVP_CipherUpdate", S, "erl_cipher_update",
        None, &[RSI, RCX, R8], &[], "the additional data, then the record: plaintext sealed"),
    probe(P::ErlangSealFinal, "aead_cipher_nif->EVP_CipherFinal_ex", S, "erl_seal_final",
        None, &[], &[], "a sealed record's ciphertext, for a key not tied to its socket yet"),
    probe(P::ErlangOpenDone, "aead_cipher_nif<-EVP_DecryptFinal_ex", S, "erl_open_done",
        None, &[RAX], &[], "plaintext opened, once its tag verified"),
];

impl ProbePoint {
    /// Its row of the table.
    pub fn probe(self) -> &'static Probe {
        PROBES
            .iter()
            .find(|p| p.point == self)
            .expect("every probe point has a row in PROBES (unit test)")
    }

    /// The symbol the probe point is attached to.
    pub fn symbol(self) -> &'static str {
        self.probe().symbol
    }

    /// Whether a return program goes with the entry program.
    pub fn has_return(self) -> bool {
        self.probe().ret.is_some()
    }

    /// The points of the OpenSSL family, in the order they are listed.
    pub const OPENSSL: [ProbePoint; 13] = [
        P::SslWrite,
        P::SslRead,
        P::SslWriteEx,
        P::SslWriteEx2,
        P::SslReadEx,
        P::SslFree,
        P::SslCtrl,
        P::SslSetHostName,
        P::SslGetServername,
        P::SslDoHandshake,
        P::SslAccept,
        P::SslSetFd,
        P::SslSetWfd,
    ];

    /// GnuTLS's points.
    pub const GNUTLS: [ProbePoint; 6] = [
        P::GnutlsSend,
        P::GnutlsRecv,
        P::GnutlsServerName,
        P::GnutlsDeinit,
        P::GnutlsHandshake,
        P::GnutlsSetInt,
    ];

    /// mbedTLS's SSL library (`libmbedtls.so`), or mbedTLS linked in.
    pub const MBEDTLS: [ProbePoint; 9] = [
        P::MbedtlsWrite,
        P::MbedtlsRead,
        P::MbedtlsSetHostname,
        P::MbedtlsHandshake,
        P::MbedtlsHandshakeStep,
        P::MbedtlsSessionReset,
        P::MbedtlsFree,
        P::MbedtlsWriteEarlyData,
        P::MbedtlsReadEarlyData,
    ];

    /// wolfSSL (`libwolfssl.so`), by its own names only.
    pub const WOLFSSL: [ProbePoint; 14] = [
        P::WolfsslWrite,
        P::WolfsslRead,
        P::WolfsslWriteEx,
        P::WolfsslReadEx,
        P::WolfsslUseSni,
        P::WolfsslGetServername,
        P::WolfsslAccept,
        P::WolfsslAcceptTls13,
        P::WolfsslConnect,
        P::WolfsslConnectTls13,
        P::WolfsslNegotiate,
        P::WolfsslDoHandshake,
        P::WolfsslSetFd,
        P::WolfsslFree,
    ];

    /// Erlang/OTP's crypto NIF (`crypto.so`): instructions in aead_cipher_nif.
    pub const ERLANG: [ProbePoint; 4] = [
        P::ErlangCipherInit,
        P::ErlangCipherUpdate,
        P::ErlangSealFinal,
        P::ErlangOpenDone,
    ];

    /// NSS's SSL library (libssl3.so).
    pub const NSS: [ProbePoint; 2] = [P::NssImportFd, P::NssSetUrl];

    /// The native library of plainsight's Java agent (jvm/native).
    pub const JSSE: [ProbePoint; 3] = [P::JsseOpen, P::JsseData, P::JsseClose];

    /// NSPR's I/O calls (libnspr4.so), on NSS SSL descriptors.
    pub const NSPR: [ProbePoint; 5] = [P::PrSend, P::PrWrite, P::PrRecv, P::PrRead, P::PrClose];

    /// The `EVP_AEAD_CTX_*` points of aws-lc / BoringSSL in executables.
    pub const AEAD: [ProbePoint; 5] = [
        P::AeadInit,
        P::AeadCleanup,
        P::AeadSeal,
        P::AeadSealScatter,
        P::AeadOpen,
    ];
}

impl fmt::Display for ProbePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// The user-space probes for `--hooks`, one line each.
pub fn describe() -> String {
    let mut s = String::from("user-space probes (placement per file: --explain):\n");
    for p in PROBES {
        let progs = match p.ret {
            Some(r) => format!("{} + {r}", p.entry),
            None => p.entry.to_string(),
        };
        s.push_str(&format!("  {:<40} {:<46} {}\n", p.symbol, progs, p.about));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::mem::MaybeUninit;

    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    use libbpf_rs::OpenObject;
    use libbpf_sys::bpf_insn;

    use super::*;
    use iced_x86::Register::{R10, R11, R12, R13, R15, RBP, RSP};

    /// Offsets of the registers in `struct pt_regs` (x86-64), as the BPF
    /// programs read them from their context.
    const PT_REGS: &[(i16, Register)] = &[
        (0, R15),
        (8, R14),
        (16, R13),
        (24, R12),
        (32, RBP),
        (40, RBX),
        (48, R11),
        (56, R10),
        (64, R9),
        (72, R8),
        (80, RAX),
        (88, RCX),
        (96, RDX),
        (104, RSI),
        (112, RDI),
        (152, RSP),
    ];
    const SP: i16 = 152;

    /// What a BPF register holds, as far as this check follows it.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Val {
        Unknown,
        /// The program's context (`struct pt_regs *`).
        Ctx,
        /// The traced stack pointer plus a constant.
        Sp(i64),
    }

    /// What one program reads of the traced registers: register reads, and
    /// the stack arguments whose addresses (`sp + 8 * (n - 6)`) it passes
    /// to a helper. Follows one straight pass over the instructions
    /// (copies, constant adds, spills to the BPF stack); that is how clang
    /// compiles these programs.
    fn reads(insns: &[bpf_insn]) -> (BTreeSet<Register>, BTreeSet<u8>) {
        const LDX_MEM_DW: u8 = 0x79;
        const STX_MEM_DW: u8 = 0x7b;
        const MOV64_X: u8 = 0xbf;
        const ADD64_K: u8 = 0x07;
        const CALL: u8 = 0x85;
        let mut r = [Val::Unknown; 11];
        r[1] = Val::Ctx;
        let mut spill: HashMap<i16, Val> = HashMap::new();
        let (mut regs, mut stack) = (BTreeSet::new(), BTreeSet::new());
        for i in insns {
            let (d, s) = (i.dst_reg() as usize % 11, i.src_reg() as usize % 11);
            match i.code {
                LDX_MEM_DW if r[s] == Val::Ctx => {
                    if let Some((_, reg)) = PT_REGS.iter().find(|(o, _)| *o == i.off) {
                        if *reg != RSP {
                            regs.insert(*reg);
                        }
                    }
                    r[d] = if i.off == SP {
                        Val::Sp(0)
                    } else {
                        Val::Unknown
                    };
                }
                LDX_MEM_DW if s == 10 => r[d] = spill.get(&i.off).copied().unwrap_or(Val::Unknown),
                STX_MEM_DW if d == 10 => {
                    spill.insert(i.off, r[s]);
                }
                MOV64_X => r[d] = r[s],
                ADD64_K => {
                    r[d] = match r[d] {
                        Val::Sp(k) => Val::Sp(k + i64::from(i.imm)),
                        _ => Val::Unknown,
                    }
                }
                CALL => {
                    // A helper reading user memory at a stack argument.
                    if let Val::Sp(k) = r[3] {
                        if k > 0 && k % 8 == 0 {
                            stack.insert((k / 8 + 6) as u8);
                        }
                    }
                    for v in r.iter_mut().take(6) {
                        *v = Val::Unknown;
                    }
                }
                // Any other instruction that writes its destination.
                c if c & 0x07 == 0x07 || c & 0x07 == 0x04 || c & 0x07 == 0x01 || c == 0x18 => {
                    r[d] = Val::Unknown
                }
                _ => {}
            }
        }
        (regs, stack)
    }

    fn programs(object: Object) -> HashMap<String, Vec<bpf_insn>> {
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let open = match object {
            Object::Openssl => {
                let s = crate::bpf::openssl::OpensslSkelBuilder::default()
                    .open(storage)
                    .expect("opening openssl");
                collect(s.open_object())
            }
            Object::Statictls => {
                let s = crate::bpf::statictls::StatictlsSkelBuilder::default()
                    .open(storage)
                    .expect("opening statictls");
                collect(s.open_object())
            }
        };
        open
    }

    fn collect(o: &libbpf_rs::OpenObject) -> HashMap<String, Vec<bpf_insn>> {
        o.progs()
            .map(|p| (p.name().to_string_lossy().into_owned(), p.insns().to_vec()))
            .collect()
    }

    #[test]
    fn every_point_has_one_row() {
        use ProbePoint as P;
        let all = [
            P::SslWrite,
            P::SslRead,
            P::SslWriteEx,
            P::SslWriteEx2,
            P::SslReadEx,
            P::SslFree,
            P::SslCtrl,
            P::SslSetHostName,
            P::SslGetServername,
            P::SslDoHandshake,
            P::SslAccept,
            P::SslSetFd,
            P::SslSetWfd,
            P::SslBioWrite,
            P::SslBioRead,
            P::SslBioCtrl,
            P::AeadInit,
            P::AeadCleanup,
            P::AeadSeal,
            P::AeadSealScatter,
            P::AeadOpen,
            P::RingInit,
            P::RingSeal,
            P::RingOpen,
            P::GnutlsSend,
            P::GnutlsRecv,
            P::GnutlsServerName,
            P::GnutlsDeinit,
            P::GnutlsHandshake,
            P::GnutlsSetInt,
            P::NssImportFd,
            P::NssSetUrl,
            P::PrSend,
            P::PrWrite,
            P::PrRecv,
            P::PrRead,
            P::PrClose,
            P::GoWrite,
            P::GoWriteRet,
            P::GoRead,
            P::GoReadRet,
            P::GoHandshake,
            P::GoServerHandshake,
            P::GoClose,
            P::JsseOpen,
            P::JsseData,
            P::JsseClose,
        ];
        let all: Vec<ProbePoint> = all
            .into_iter()
            .chain(ProbePoint::MBEDTLS)
            .chain(ProbePoint::WOLFSSL)
            .chain(ProbePoint::ERLANG)
            .collect();
        assert_eq!(PROBES.len(), all.len());
        for p in all {
            assert_eq!(PROBES.iter().filter(|r| r.point == p).count(), 1, "{p:?}");
        }
    }

    /// The table says what the compiled programs do: every program exists
    /// in its object, the entry program reads exactly the registers and
    /// stack arguments listed (placement relies on it), and the return
    /// program reads no register but the return register.
    #[test]
    fn table_matches_the_bpf_programs() {
        let objects = [
            (Object::Openssl, programs(Object::Openssl)),
            (Object::Statictls, programs(Object::Statictls)),
        ];
        let progs = |o: Object| &objects.iter().find(|(x, _)| *x == o).unwrap().1;
        let mut wrong = Vec::new();
        for p in PROBES {
            let Some(insns) = progs(p.object).get(p.entry) else {
                wrong.push(format!(
                    "{}: no program {} in {:?}",
                    p.symbol, p.entry, p.object
                ));
                continue;
            };
            let (regs, stack) = reads(insns);
            let want: BTreeSet<Register> = p.regs.iter().copied().collect();
            if regs != want {
                wrong.push(format!(
                    "{}: {} reads registers {regs:?}",
                    p.symbol, p.entry
                ));
            }
            let want: BTreeSet<u8> = p.stack.iter().copied().collect();
            if stack != want {
                wrong.push(format!(
                    "{}: {} reads stack arguments {stack:?}",
                    p.symbol, p.entry
                ));
            }
            let Some(ret) = p.ret else { continue };
            match progs(p.object).get(ret).map(|i| reads(i)) {
                None => wrong.push(format!("{}: no program {ret}", p.symbol)),
                Some((regs, stack)) if regs.iter().any(|r| *r != RAX) || !stack.is_empty() => wrong
                    .push(format!(
                        "{}: {ret} reads {regs:?} and stack {stack:?}",
                        p.symbol
                    )),
                Some(_) => {}
            }
        }
        assert!(
            wrong.is_empty(),
            "the probe table is wrong:\n{}",
            wrong.join("\n")
        );
    }

    /// Every uprobe program of the objects serves a row of the table.
    #[test]
    fn every_uprobe_program_is_in_the_table() {
        for o in [Object::Openssl, Object::Statictls] {
            let storage: &'static mut MaybeUninit<OpenObject> =
                Box::leak(Box::new(MaybeUninit::uninit()));
            let names: Vec<(String, String)> = match o {
                Object::Openssl => {
                    let s = crate::bpf::openssl::OpensslSkelBuilder::default()
                        .open(storage)
                        .unwrap();
                    sections(s.open_object())
                }
                Object::Statictls => {
                    let s = crate::bpf::statictls::StatictlsSkelBuilder::default()
                        .open(storage)
                        .unwrap();
                    sections(s.open_object())
                }
            };
            for (name, section) in names {
                if !section.starts_with("uprobe") && !section.starts_with("uretprobe") {
                    continue;
                }
                assert!(
                    PROBES.iter().any(|p| p.object == o
                        && (p.entry == name || p.ret == Some(name.as_str()))),
                    "{name} ({section}) is in no row of PROBES"
                );
            }
        }
    }

    fn sections(o: &libbpf_rs::OpenObject) -> Vec<(String, String)> {
        o.progs()
            .map(|p| {
                (
                    p.name().to_string_lossy().into_owned(),
                    p.section().to_string_lossy().into_owned(),
                )
            })
            .collect()
    }
}
