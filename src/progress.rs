//! What a sync tells as it goes, to whoever started it: its phases (the daemon's `STATUS=`) and
//! its notable steps (the lines a `resync` client sees). The sync says them explicitly, here, and
//! each is logged too; they are never read back out of the logs.
//!
//! The listener is scoped to the sync's task ([`reporting`]), so the code deep in a sync tells
//! its progress without every function passing a handle down; with no listener (a `sync` run by
//! hand), telling is only logging.

use std::future::Future;

use tokio::sync::mpsc::UnboundedSender;

/// One piece of progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// What the sync is doing now: `fetching parameters and files`, `pulling 2 images`...
    Phase(String),
    /// Something it did or found: `recreating web (environment changed)`, `web is ready`...
    Step(String),
}

tokio::task_local! {
    static LISTENER: UnboundedSender<Progress>;
}

/// Runs `sync` with its progress sent to `listener`.
pub async fn reporting<F: Future>(listener: UnboundedSender<Progress>, sync: F) -> F::Output {
    LISTENER.scope(listener, sync).await
}

fn tell(progress: Progress) {
    let _ = LISTENER.try_with(|listener| listener.send(progress));
}

/// A new phase: logged, and told.
pub fn phase(text: impl Into<String>) {
    let text = text.into();
    tracing::info!("{text}");
    crate::timeline::phase(&text);
    tell(Progress::Phase(text));
}

/// A step worth telling whoever waits for the sync: logged, and told.
pub fn step(text: impl Into<String>) {
    let text = text.into();
    tracing::info!("{text}");
    tell(Progress::Step(text));
}

/// A step that went wrong but did not stop the sync: logged as a warning, and told.
pub fn warn(text: impl Into<String>) {
    let text = text.into();
    tracing::warn!("{text}");
    tell(Progress::Step(format!("warning: {text}")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_reaches_the_listener_of_its_task_only() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        reporting(tx, async {
            phase("fetching parameters and files");
            step("web is ready");
        })
        .await;
        phase("told to nobody");
        assert_eq!(
            rx.recv().await,
            Some(Progress::Phase("fetching parameters and files".into()))
        );
        assert_eq!(rx.recv().await, Some(Progress::Step("web is ready".into())));
        assert!(
            rx.recv().await.is_none(),
            "the listener is gone with its sync"
        );
    }
}
