//! systemd notifications: `READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`. Outside systemd
//! (no `NOTIFY_SOCKET`) they do nothing; a notification that fails is logged, never fatal.

use std::sync::Mutex;
use std::time::Duration;

use sd_notify::NotifyState;

static LAST_STATUS: Mutex<String> = Mutex::new(String::new());

fn send(state: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(state) {
        tracing::warn!("systemd notification failed: {err}");
    }
}

pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Sets `STATUS=` (redacted: `systemctl status` shows it to anyone), sending only when it changed.
pub fn status(text: &str) {
    let text = &*crate::redact::text(text);
    let mut last = LAST_STATUS.lock().unwrap_or_else(|e| e.into_inner());
    if *last != text {
        send(&[NotifyState::Status(text)]);
        *last = text.to_string();
    }
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to send `WATCHDOG=1`: half of `WatchdogSec`, as sd_watchdog_enabled(3) advises.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .filter(|d| !d.is_zero())
}
