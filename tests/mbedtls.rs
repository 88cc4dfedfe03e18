//! mbedTLS: a client built against libmbedtls-dev, and lighttpd's
//! mod_mbedtls hit by curl; exact bytes, process and side.

mod common;

use common::*;

#[test]
fn mbedtls_client_with_and_without_a_matching_name() {
    rerun_if_host_stalled(|| client_under_sni("mbedtls_client"));
}

/// mbedTLS 2.28 speaks TLS 1.2 only.
#[test]
fn lighttpd_mod_mbedtls_captured_on_the_server_side() {
    rerun_if_host_stalled(|| lighttpd_under_sni("mod_mbedtls", &[]));
}

/// mbedTLS linked into the executable (as in firmware): found in `.symtab`.
#[test]
fn static_mbedtls_client_with_and_without_a_matching_name() {
    rerun_if_host_stalled(|| client_under_sni("mbedtls_client_static"));
}
