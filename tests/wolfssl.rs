//! wolfSSL: a client built against libwolfssl-dev, and lighttpd's
//! mod_wolfssl hit by curl over TLS 1.3 and 1.2; exact bytes, process and
//! side.

mod common;

use common::*;

#[test]
fn wolfssl_client_with_and_without_a_matching_name() {
    rerun_if_host_stalled(|| client_under_sni("wolfssl_client"));
}

#[test]
fn lighttpd_mod_wolfssl_tls13_captured_on_the_server_side() {
    rerun_if_host_stalled(|| lighttpd_under_sni("mod_wolfssl", &["--tlsv1.3"]));
}

#[test]
fn lighttpd_mod_wolfssl_tls12_captured_on_the_server_side() {
    rerun_if_host_stalled(|| lighttpd_under_sni("mod_wolfssl", &["--tls-max", "1.2"]));
}

/// wolfSSL linked into the executable: found in `.symtab`.
#[test]
fn static_wolfssl_client_with_and_without_a_matching_name() {
    rerun_if_host_stalled(|| client_under_sni("wolfssl_client_static"));
}
