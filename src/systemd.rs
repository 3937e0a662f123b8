//! What systemd is told (`Type=notify`): ready, reloading, stopping, a one-line status, and
//! the watchdog's keep-alive. Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::time::Duration;

pub use sd_notify::NotifyState as State;

/// Sends `states`; a failure is logged once per call and otherwise ignored: the daemon serves
/// whether or not anyone listens.
pub fn notify(states: &[State<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// How often the watchdog wants a keep-alive, if it is enabled for this process: half the
/// interval systemd set (`WATCHDOG_USEC`), as sd_watchdog_enabled(3) asks. As there, a
/// `WATCHDOG_PID` that names another process disables it and an absent one does not.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
