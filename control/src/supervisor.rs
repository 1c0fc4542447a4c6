//! The controller never dies silently (SPEC §16).
//!
//! The loop runs on a thread of its own with a runtime of its own, so fsyncs and table
//! compiles never stall a data-path worker (and `--workers 1` works). If the loop panics
//! anyway, this supervisor drops that runtime (and the tasks it spawned), counts the restart
//! (`switchyard_controller_restarts_total`, `/api/v1/status` `controller.restarts`), and boots
//! a new loop from the persisted state — plus the changes it had applied but not yet
//! persisted, which the [`Core`] keeps — within a second. Intents sent meanwhile wait in the
//! queue. A second panic within a minute exits the process non-zero, for its own supervisor
//! to restart: never serve on with a frozen table and no automatic rollback.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::clock;
use crate::controller::{Controller, Core};

/// Two panics closer than this end the process.
const PANIC_WINDOW: Duration = Duration::from_secs(60);

/// Starts the supervised loop; the receiver fires once the first table is compiled.
pub(crate) fn spawn(core: Core) -> Result<oneshot::Receiver<()>, String> {
    let (ready_tx, ready_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("switchyard-controller".into())
        .spawn(move || supervise(core, ready_tx))
        .map_err(|e| format!("cannot start the controller thread: {e}"))?;
    Ok(ready_rx)
}

fn supervise(mut core: Core, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut last_panic: Option<Instant> = None;
    loop {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot start the controller's runtime: {e}");
                std::process::exit(1);
            }
        };
        let ran = catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on(async {
                let controller = Controller::boot(&mut core).await;
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                controller.run().await;
            })
        }));
        runtime.shutdown_timeout(Duration::from_millis(100));
        let Err(panic) = ran else {
            return; // Every handle is gone: the process is stopping.
        };
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let now = Instant::now();
        if last_panic.is_some_and(|t| now.duration_since(t) < PANIC_WINDOW) {
            tracing::error!(
                "the controller panicked again within {}s ({what}); exiting so that the \
                 process supervisor restarts switchyard",
                PANIC_WINDOW.as_secs()
            );
            std::process::exit(1);
        }
        last_panic = Some(now);
        metrics::counter!("switchyard_controller_restarts_total").increment(1);
        core.status.rcu(|s| {
            let mut next = crate::status::Status::clone(s);
            next.controller_restarts += 1;
            next.last_controller_restart = Some(clock::now());
            next
        });
        tracing::error!(
            "the controller panicked ({what}); restarting it from the persisted state \
             (the data path keeps serving the last table)"
        );
    }
}
