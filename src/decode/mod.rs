//! Decode: from captured byte streams to protocol messages (issue 6 builds
//! the access log, HTTP/2 and pcapng on this; only HTTP/1.1 exists yet and
//! nothing in the output uses it so far).

pub mod http1;
