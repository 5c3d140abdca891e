//! Graceful shutdown: stop taking calls, let running ones finish, and give
//! the ones that cannot finish in time an `interrupted` receipt.
//!
//! Every call holds a [`CallGuard`] while it runs. [`Shutdown::drain`] waits
//! for the guards to go, up to a deadline; then it fires the interrupt token,
//! which makes the execute stage stop the tool and record the call as
//! `interrupted`. The receipt writer is flushed only after that, so even an
//! interrupted call leaves its evidence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long interrupted calls get to write their receipts.
const RECORD_GRACE: Duration = Duration::from_secs(5);

/// Shared shutdown state of one tollgate process.
#[derive(Debug, Default)]
pub struct Shutdown {
    draining: AtomicBool,
    inflight: AtomicUsize,
    idle: Notify,
    interrupt: CancellationToken,
}

/// Held by a call while it is in the pipeline.
#[derive(Debug)]
pub struct CallGuard(Arc<Shutdown>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Shutdown {
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    /// Register a call; the guard releases it when dropped.
    pub fn track(self: &Arc<Self>) -> CallGuard {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        CallGuard(self.clone())
    }

    /// True once draining has begun: transports refuse new calls.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Calls currently in the pipeline.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Resolves when running calls must stop (after the drain deadline).
    pub fn interrupted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.interrupt.cancelled()
    }

    /// Stop taking calls and wait up to `timeout` for running ones; then
    /// interrupt the rest and wait (briefly) for them to record. Returns how
    /// many calls had to be interrupted.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        if self.wait_idle(timeout).await {
            return 0;
        }
        let left = self.inflight();
        tracing::warn!(
            calls = left,
            "drain timeout reached; interrupting running calls"
        );
        self.interrupt.cancel();
        self.wait_idle(RECORD_GRACE).await;
        left
    }

    async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            if self.inflight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inflight() == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_calls_then_interrupts() {
        let s = Shutdown::new();
        let quick = s.track();
        let stuck = s.track();
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.drain(Duration::from_millis(100)).await });
        drop(quick);
        // The stuck call only ends when interrupted.
        s.interrupted().await;
        assert!(s.is_draining());
        drop(stuck);
        assert_eq!(waiter.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn idle_drain_returns_at_once() {
        let s = Shutdown::new();
        assert_eq!(s.drain(Duration::from_secs(10)).await, 0);
    }
}
