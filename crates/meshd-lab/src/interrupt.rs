//! SIGINT and SIGTERM for a lab that a person runs (`meshd demo`): they set a flag instead of
//! killing the process, every wait of the lab gives up with [`LabError::Interrupted`], and
//! the lab's drop cleans up. A process that never installs the handler is never
//! interrupted this way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::LabError;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Catches SIGINT and SIGTERM for the rest of the process (see the module docs); the first
/// one prints `<SIGNAL>: stopping <what> and cleaning up` on stderr.
pub fn install_signal_handler(what: &'static str) -> Result<(), LabError> {
    let failed = |source| LabError::Io {
        what: "cannot install the SIGINT/SIGTERM handler".to_owned(),
        source,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    std::thread::Builder::new()
        .name("lab-signals".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (mut int, mut term) = match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(i), Ok(t)) => (i, t),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                loop {
                    let name = tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    };
                    if !INTERRUPTED.swap(true, Ordering::SeqCst) {
                        eprintln!("\n{name}: stopping {what} and cleaning up");
                    }
                }
            });
        })
        .map_err(failed)?;
    match ready_rx.recv() {
        Ok(result) => result.map_err(failed),
        Err(_) => Err(failed(std::io::Error::other("the signal thread ended"))),
    }
}

/// [`LabError::Interrupted`] once a signal arrived.
pub fn check() -> Result<(), LabError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(LabError::Interrupted);
    }
    Ok(())
}

/// Sleeps, but returns [`LabError::Interrupted`] as soon as a signal arrives.
pub fn sleep(d: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

/// Polls `done` every `every` until it returns `Some` or `timeout` passes (`None`); stops
/// at the first error, an interrupt included.
pub fn wait_for<T, E: From<LabError>>(
    timeout: Duration,
    every: Duration,
    mut done: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = done()? {
            return Ok(Some(v));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        sleep(every)?;
    }
}

/// Polls `done` every 100 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let polled: Result<Option<()>, LabError> =
        wait_for(timeout, Duration::from_millis(100), || {
            Ok(done().then_some(()))
        });
    matches!(polled, Ok(Some(())))
}
