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
    rerun_if_host_stalled(|| lighttpd_under_sni("mod_mbedtls", &[], &[]));
}

/// mbedTLS linked into the executable (as in firmware): found in `.symtab`.
#[test]
fn static_mbedtls_client_with_and_without_a_matching_name() {
    rerun_if_host_stalled(|| client_under_sni("mbedtls_client_static"));
}

/// One context for two connections in turn (`mbedtls_ssl_session_reset`,
/// the host name set once, kept by mbedTLS for the next connection): under
/// `--sni`, both are captured, each named, each closed, each on its socket.
#[test]
fn a_context_reused_after_a_reset_keeps_its_name() {
    rerun_if_host_stalled(|| {
        let srv = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let req = request("/again", "api.acme.com");
        let f = request_file(dir.path(), &req);
        let port = srv.port.to_string();
        let mut cli = Held::with_env(
            &fixture("mbedtls_client"),
            &["127.0.0.1", &port, "api.acme.com", f.to_str().unwrap()],
            &[("MBEDTLS_CLIENT_TWICE", "1")],
        );
        let pid = cli.pid;
        let agent = Agent::start(&["--sni", "*.acme.com", "--pid", &pid.to_string()]);
        cli.go(b"");
        let (ok, out, err) = cli.finish(std::time::Duration::from_secs(30));
        assert!(ok, "{err}");
        let resp = expected_response("GET", "/again", 0, true);
        assert_eq!(out, [&resp[..], &resp[..]].concat());
        let (w, r) = agent.wait_bytes(pid, 2 * req.len(), 2 * resp.len());
        assert_eq!(show(&w), show(&[&req[..], &req[..]].concat()));
        assert_eq!(r, [&resp[..], &resp[..]].concat());
        let recs = agent.records();
        let mine: Vec<_> = recs.iter().filter(|r| r["pid"] == pid).collect();
        let count = |t: &str| mine.iter().filter(|r| r["type"] == t).count();
        assert_eq!((count("sni"), count("close")), (2, 2), "{mine:?}");
        assert_only_api_acme(&recs, 0);
        // Two TCP connections: the data of each names its own client port.
        let ports: std::collections::BTreeSet<u64> = mine
            .iter()
            .filter(|r| r["type"] == "data")
            .map(|r| r["client"]["port"].as_u64().expect("a client port"))
            .collect();
        assert_eq!(ports.len(), 2, "{ports:?}");
        assert!(mine
            .iter()
            .filter(|r| r["type"] == "data")
            .all(|r| r["server"]["port"] == srv.port));
    });
}

#[test]
fn lighttpd_mod_mbedtls_decoded_http1_and_http2() {
    rerun_if_host_stalled(|| lighttpd_decoded("mod_mbedtls"));
}
