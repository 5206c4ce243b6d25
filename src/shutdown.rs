//! Graceful shutdown (SIGTERM): stop accepting, tell every open socket to
//! reconnect elsewhere, let in-flight requests finish within a bound.
//!
//! [`Drain::begin`] is called when the shutdown signal arrives. Every
//! browser and conversation socket waits on [`Drain::started`] next to its
//! other work and, when it fires, closes with [`CLOSE_SERVICE_RESTART`]
//! (1012, "service restart"): clients reconnect at once, reaching another
//! node through the load balancer, and their next snapshot carries on.
//! Event streams (SSE) simply end; `EventSource` reconnects by itself. The
//! HTTP server meanwhile stops accepting and waits for in-flight requests;
//! after `shutdown_drain_s` whatever is left is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// WebSocket close code sent to every socket when the node shuts down.
pub const CLOSE_SERVICE_RESTART: u16 = 1012;

#[derive(Clone)]
pub struct Drain {
    /// `true` once the shutdown began.
    draining: Arc<watch::Sender<bool>>,
    open: Arc<AtomicUsize>,
    all_closed: Arc<Notify>,
}

/// Held by a socket while it is open (see [`Drain::socket`]).
pub struct OpenSocket(Drain);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: Arc::new(watch::channel(false).0),
            open: Arc::default(),
            all_closed: Arc::default(),
        }
    }
}

impl Drain {
    pub fn begin(&self) {
        self.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once the node is shutting down.
    pub async fn started(&self) {
        let mut rx = self.draining.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Counts a socket as open until the guard drops.
    pub fn socket(&self) -> OpenSocket {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenSocket(self.clone())
    }

    pub fn open_sockets(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until every counted socket has closed.
    pub async fn sockets_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.open_sockets() == 0 {
                return;
            }
            notified.await;
        }
    }
}
