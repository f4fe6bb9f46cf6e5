//! The work the server does besides answering requests, started with it and stopped after
//! it: the outbox workers (`notify::outbox`), the purge of expired rows, the start-up hash
//! upgrade pass (`crate::upgrade`) and the metrics upkeep.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::notify::outbox::OutboxWorker;
use crate::state::{now, AppState};

/// The running jobs. Dropping this does not stop them: call `stop` and then `finish`.
pub struct Jobs {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    purger: JoinHandle<()>,
    upgrader: Option<JoinHandle<()>>,
    upkeep: JoinHandle<()>,
}

impl Jobs {
    /// Starts OUTBOX_WORKERS outbox workers (at least one), the purge loop, the metrics
    /// upkeep and, when HASH_UPGRADE_ON_START is set, the upgrade pass.
    pub fn start(state: &AppState, worker: OutboxWorker) -> Self {
        let (stop, stopped) = watch::channel(false);
        let workers = (0..state.settings.outbox.outbox_workers.max(1))
            .map(|_| tokio::spawn(worker.clone().run(stopped.clone())))
            .collect();
        let purger = tokio::spawn(purge_loop(state.clone(), stopped.clone()));
        let upgrader = state
            .settings
            .hash_upgrade_on_start
            .then(|| tokio::spawn(upgrade_pass(state.clone())));
        let upkeep = tokio::spawn(crate::metrics::upkeep(stopped));
        Jobs {
            stop,
            workers,
            purger,
            upgrader,
            upkeep,
        }
    }

    /// Turns true when the jobs are told to stop; for other loops that stop with them.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Tells every job to stop (the outbox workers finish the message they are sending).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits up to 30 s for the outbox workers, then ends the rest where they are.
    pub async fn finish(self) {
        self.stop();
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            futures_util::future::join_all(self.workers),
        )
        .await;
        self.purger.abort();
        self.upkeep.abort();
        // Each of its writes is one conditional statement or transaction: stopping it
        // anywhere leaves every row done or untouched.
        if let Some(task) = self.upgrader {
            task.abort();
        }
    }
}

/// Deletes expired sessions, codes and tokens, and old delivered messages, every ten
/// minutes.
async fn purge_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    const EVERY: Duration = Duration::from_secs(600);
    const KEEP_SENT: i64 = 7 * 24 * 3600;
    loop {
        let now = now();
        match state.store.purge_expired(now, now - KEEP_SENT).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "purged expired rows"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purge failed; will retry"),
        }
        let keep = state.settings.audit_retention.as_secs() as i64;
        match state.store.purge_audit(now - keep).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "purged old audit events"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit purge failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The start-up upgrade pass (`crate::upgrade`). A failure is logged, not fatal: the
/// rows it did not reach still verify, and the next start or `gatehouse upgrade-hashes`
/// carries on.
async fn upgrade_pass(state: AppState) {
    if let Err(e) = crate::upgrade::run(state.store.as_ref(), &state.hasher).await {
        tracing::warn!(error = %e, "upgrade pass stopped; the next start carries on");
    }
}
