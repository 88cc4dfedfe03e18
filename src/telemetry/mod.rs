//! Fleet outputs: OTLP export of decoded exchanges ([`otlp`]) and
//! Prometheus metrics ([`metrics`]), fed by the output thread beside the
//! console, JSON and pcapng outputs.

pub mod metrics;
pub mod otlp;

use std::sync::Arc;

use crate::decode::db::{DbKind, DbQuery, DbStatus};
use crate::decode::Exchange;
use crate::record::Clock;
use crate::record::ConnMeta;
use metrics::Metrics;
use otlp::{DbSeen, OtlpSink, Seen};

/// What the output thread hands each decoded exchange to.
#[derive(Clone, Default)]
pub struct TelemetrySink {
    pub metrics: Option<Arc<Metrics>>,
    pub otlp: Option<OtlpSink>,
}

impl TelemetrySink {
    /// Whether anything is asked of exchanges (then they are decoded even
    /// without a decoded console or file output).
    pub fn is_on(&self) -> bool {
        self.metrics.is_some() || self.otlp.is_some()
    }

    /// A file carrying TLS code was classified: counted by stack and state.
    pub fn coverage(&self, c: &crate::record::Coverage) {
        if let Some(m) = &self.metrics {
            m.tls_file(c.stack, c.captured);
        }
    }

    /// One decoded exchange of a connection (`meta.client`: the captured
    /// process sent the request; not known yet counts as the client).
    pub fn exchange(&self, meta: &ConnMeta, ex: &Exchange, clock: &Clock) {
        if let Some(m) = &self.metrics {
            let server = meta.sni.as_deref().or(ex.authority.as_deref());
            let seconds = ex.latency_ns().map(|ns| ns as f64 / 1e9);
            let port = meta.facts.client_server().1.map(|a| a.port());
            m.exchange(
                &meta.comm,
                (server, port),
                ex.method.as_deref(),
                ex.status,
                seconds,
            );
        }
        if let Some(o) = &self.otlp {
            let seen = Seen {
                pid: meta.pid,
                comm: &meta.comm,
                sni: meta.sni.as_deref(),
                container: meta.facts.container.as_ref().map(|c| c.id.as_str()),
                pod_uid: meta
                    .facts
                    .container
                    .as_ref()
                    .and_then(|c| c.pod_uid.as_deref()),
                client: meta.facts.is_client().unwrap_or(true),
                endpoints: meta.facts.endpoints.as_deref(),
                exchange: ex,
            };
            o.send(otlp::item(&seen, clock, o.logs));
        }
    }

    /// One database command of a connection: its duration in the
    /// histogram, a span. Pushed messages (pub/sub) are neither.
    pub fn db(&self, meta: &ConnMeta, q: &DbQuery, clock: &Clock) {
        if q.kind == DbKind::Message {
            return;
        }
        if let (Some(m), Some(ns)) = (&self.metrics, q.latency_ns()) {
            let ok = q.status == Some(DbStatus::Ok);
            m.db(
                &meta.comm,
                q.system.as_str(),
                q.operation.as_deref(),
                ok,
                ns as f64 / 1e9,
            );
        }
        if let Some(o) = &self.otlp {
            let seen = DbSeen {
                pid: meta.pid,
                comm: &meta.comm,
                container: meta.facts.container.as_ref().map(|c| c.id.as_str()),
                pod_uid: meta
                    .facts
                    .container
                    .as_ref()
                    .and_then(|c| c.pod_uid.as_deref()),
                client: meta.facts.is_client().unwrap_or(true),
                endpoints: meta.facts.endpoints.as_deref(),
                query: q,
            };
            o.send(otlp::db_item(&seen, clock));
        }
    }
}
