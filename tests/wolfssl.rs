//! wolfSSL: a client built against libwolfssl-dev, and lighttpd's
//! mod_wolfssl hit by curl over TLS 1.3 and 1.2; exact bytes, process and
//! side.

mod common;

use common::*;

#[test]
fn wolfssl_client_with_and_without_a_matching_name() {
    rerun_if_host_stalled(|| client_under_sni("wolfssl_client"));
}

/// With `--host-wide-returns`: lighttpd runs a TLS 1.3 handshake inside
/// `wolfSSL_read`, and the call that returns the request is the one after
/// the call that read the ClientHello, a client round trip later. Return
/// probes attached per process (requested when the name matched) race that
/// call: on a loaded host it starts before they are in, and its plaintext
/// is lost (README, "what is covered"). TLS 1.2 has a round trip more.
#[test]
fn lighttpd_mod_wolfssl_tls13_captured_on_the_server_side() {
    rerun_if_host_stalled(|| {
        lighttpd_under_sni("mod_wolfssl", &["--tlsv1.3"], &["--host-wide-returns"])
    });
}

#[test]
fn lighttpd_mod_wolfssl_tls12_captured_on_the_server_side() {
    rerun_if_host_stalled(|| lighttpd_under_sni("mod_wolfssl", &["--tls-max", "1.2"], &[]));
}

/// wolfSSL linked into the executable: found in `.symtab`.
#[test]
fn static_wolfssl_client_with_and_without_a_matching_name() {
    rerun_if_host_stalled(|| client_under_sni("wolfssl_client_static"));
}

/// A wolfSSL server names the one name it accepts with `wolfSSL_UseSNI`
/// (here: api.acme.com, serving other names too): that is no name of its
/// connections. Under `--sni other.example`, curl's connection to
/// other.example is captured on the server's side with the name curl sent,
/// exactly; the one to api.acme.com is not.
#[test]
fn a_servers_own_name_is_not_its_clients() {
    use std::time::Duration;
    rerun_if_host_stalled(|| {
        let (cert, key) = cert_args();
        let mut server = Held::new(&fixture("wolfssl_server"), &[&cert, &key, "api.acme.com"]);
        let agent = Agent::start(&["--sni", "other.example", "--pid", &server.pid.to_string()]);
        let port = server.run_for_port();
        let mut other = curl_held("other.example", port, &[]);
        other.go(b"");
        let (ok, got, err) = other.finish(Duration::from_secs(30));
        assert!(ok, "curl: {err}");
        assert!(got.ends_with(b"hello from wolfssl\n"), "{}", show(&got));
        let mut api = curl_held("api.acme.com", port, &[]);
        api.go(b"");
        assert!(api.finish(Duration::from_secs(30)).0);
        let req = curl_request("other.example", port);
        let (w, r) = agent.wait_bytes(server.pid, got.len(), req.len());
        assert_eq!(show(&r), show(&req));
        assert_eq!(
            r, req,
            "the server read curl's request to other.example only"
        );
        assert_eq!(w, got, "the server wrote what curl received");
        let recs = agent.records();
        let names: Vec<&str> = recs
            .iter()
            .filter(|r| r["type"] == "sni" || r["type"] == "data")
            .filter_map(|r| r["sni"].as_str())
            .collect();
        assert!(
            !names.is_empty() && names.iter().all(|n| *n == "other.example"),
            "{names:?}"
        );
        check_loopback(&recs, server.pid, None, port);
    });
}

#[test]
fn lighttpd_mod_wolfssl_decoded_http1_and_http2() {
    rerun_if_host_stalled(|| lighttpd_decoded("mod_wolfssl"));
}
