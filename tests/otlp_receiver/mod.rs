//! An OTLP receiver for the tests, built on the official OpenTelemetry
//! protobuf definitions (`opentelemetry-proto`): gRPC (tonic's generated
//! TraceService and LogsService servers) or plain HTTP/protobuf
//! (`POST /v1/traces`, `/v1/logs`). It keeps every request it gets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_server::{LogsService, LogsServiceServer},
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

#[derive(Default)]
pub struct Received {
    pub traces: Vec<ExportTraceServiceRequest>,
    pub logs: Vec<ExportLogsServiceRequest>,
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        r: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().traces.push(r.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Store {
    async fn export(
        &self,
        r: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().logs.push(r.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// A receiver listening on 127.0.0.1 until dropped.
pub struct Receiver {
    pub port: u16,
    store: Store,
    _rt: Option<tokio::runtime::Runtime>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    /// gRPC.
    pub fn grpc() -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = Store::default();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = std_listener.local_addr().unwrap().port();
        std_listener.set_nonblocking(true).unwrap();
        let s = store.clone();
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let incoming = tonic::transport::server::TcpIncoming::from(l);
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(s.clone()))
                .add_service(LogsServiceServer::new(s))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        Receiver {
            port,
            store,
            _rt: Some(rt),
            stop: Arc::default(),
        }
    }

    /// HTTP/protobuf.
    pub fn http() -> Receiver {
        let store = Store::default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (s, st) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        http_conn(c, &s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver {
            port,
            store,
            _rt: None,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits (bounded) until `f` holds of what was received.
    pub fn wait(&self, what: &str, f: impl Fn(&Received) -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !f(&self.store.0.lock().unwrap()) {
            assert!(Instant::now() < until, "OTLP receiver: no {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&Received) -> T) -> T {
        f(&self.store.0.lock().unwrap())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One HTTP/1.1 connection: requests until it closes.
fn http_conn(c: std::net::TcpStream, s: &Store) {
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        let mut ctype = String::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "content-type" => ctype = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        assert_eq!(ctype, "application/x-protobuf");
        let ok = match path.as_str() {
            "/v1/traces" => {
                let m = ExportTraceServiceRequest::decode(&body[..]).unwrap();
                s.0.lock().unwrap().traces.push(m);
                true
            }
            "/v1/logs" => {
                let m = ExportLogsServiceRequest::decode(&body[..]).unwrap();
                s.0.lock().unwrap().logs.push(m);
                true
            }
            _ => false,
        };
        let head = if ok {
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        };
        w.write_all(head.as_bytes()).unwrap();
    }
}
