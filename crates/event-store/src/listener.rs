//! Wake-ups for log readers: `LISTEN marketing_events` on a dedicated connection,
//! fanned out through a `watch` channel. A notification is only a hint that new
//! events may be readable; readers also poll, so a lost connection or a dropped
//! notification delays them, never loses anything.

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

/// The channel writers notify after they commit (`EventStore::notify_committed`).
pub const EVENTS_CHANNEL: &str = "marketing_events";

/// A ticking counter: every tick means "new events may be readable".
#[derive(Clone)]
pub struct Wakeups {
    sender: Arc<watch::Sender<u64>>,
}

impl Default for Wakeups {
    fn default() -> Self {
        Self::new()
    }
}

impl Wakeups {
    pub fn new() -> Self {
        let (sender, _) = watch::channel(0);
        Self {
            sender: Arc::new(sender),
        }
    }

    /// Wakes every reader. Called by the listener on NOTIFY and by an in-process
    /// appender right after its commit (which saves a round trip through Postgres).
    pub fn notify(&self) {
        self.sender.send_modify(|ticks| *ticks = ticks.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

/// Waits for the next tick on `receiver`, or `timeout`, whichever comes first.
pub async fn wait(receiver: &mut watch::Receiver<u64>, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, receiver.changed()).await;
}

/// Keeps a `LISTEN` connection open (reconnecting with back-off) and ticks
/// `wakeups` on each notification, and once after every (re)connect because
/// notifications sent while disconnected are gone.
pub fn spawn_listener(config: tokio_postgres::Config, wakeups: Wakeups) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match listen_once(&config, &wakeups).await {
                Ok(()) => tracing::warn!("event listener connection closed; reconnecting"),
                Err(error) => tracing::warn!(%error, "event listener failed; reconnecting"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

async fn listen_once(
    config: &tokio_postgres::Config,
    wakeups: &Wakeups,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen_sql = format!("LISTEN {EVENTS_CHANNEL}");
    let listen = client.batch_execute(&listen_sql);
    tokio::pin!(listen);
    // The connection must be driven while LISTEN runs.
    loop {
        tokio::select! {
            result = &mut listen => { result?; break; }
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
    wakeups.notify();
    // `client` stays alive until here: dropping it would close the connection.
    while let Some(message) = messages.next().await {
        if let AsyncMessage::Notification(_) = message? {
            wakeups.notify();
        }
    }
    Ok(())
}
