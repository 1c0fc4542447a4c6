//! Accepting client connections and serving HTTP/1.1 and HTTP/2 on them.
//!
//! One accept loop per listener. Each connection is served by hyper-util's `auto` builder,
//! which speaks HTTP/1.1 and, on seeing the HTTP/2 preface, h2c with prior knowledge — both on
//! one port. A semaphore caps concurrent connections (excess ones are closed at once rather
//! than queued), accept errors such as running out of file descriptors back off instead of
//! spinning, and shutdown is graceful: stop accepting, let in-flight requests finish up to a
//! deadline, then return.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use switchyard_config::Limits;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::pipeline;
use crate::TableHandle;

/// Live numbers about one listener, read by the exporter.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub active: AtomicI64,
    pub accepted: AtomicU64,
    /// Connections closed at once because `max_connections` was reached.
    pub refused: AtomicU64,
}

/// A bound listener ready to serve.
pub struct Listener {
    pub name: String,
    pub tcp: TcpListener,
    pub stats: Arc<ListenerStats>,
}

impl Listener {
    pub async fn bind(name: &str, address: SocketAddr) -> std::io::Result<Listener> {
        Ok(Listener {
            name: name.to_string(),
            tcp: TcpListener::bind(address).await?,
            stats: Arc::default(),
        })
    }

    /// Serves until `shutdown` turns true, then drains in-flight requests for up to `drain`.
    pub async fn serve(
        self,
        table: TableHandle,
        limits: Limits,
        mut shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) {
        let builder = http_builder(&limits);
        let graceful = GracefulShutdown::new();
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        loop {
            let (stream, client) = tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: wait for connections to close instead of spinning.
                        tracing::warn!(listener = %self.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            self.stats.accepted.fetch_add(1, Relaxed);
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                self.stats.refused.fetch_add(1, Relaxed);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let table = Arc::clone(&table);
            let service = service_fn(move |req| {
                let table = Arc::clone(&table);
                async move {
                    Ok::<_, std::convert::Infallible>(
                        pipeline::handle(&table, client, "http", req).await,
                    )
                }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            let stats = Arc::clone(&self.stats);
            stats.active.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%client, error = %e, "connection ended with an error");
                }
                stats.active.fetch_sub(1, Relaxed);
                drop(permit);
            });
        }
        drop(self.tcp);
        tracing::info!(listener = %self.name, "stopped accepting; draining connections");
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(listener = %self.name, "drain deadline passed; closing the rest");
        }
    }
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers 431 when a request head does not fit; its minimum buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        // Bounded, not left to chance: rapid-reset floods and oversized header lists.
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256)
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32);
    builder
}
