//! Cross-process news through PostgreSQL `LISTEN/NOTIFY`: every server process
//! listens on one channel on a connection of its own, and tells the others what
//! they must not keep believing (a token revoked, a user whose tier or tokens
//! changed, samples or files written: cached reads are stale). Delivery takes milliseconds after the notifying transaction commits:
//! the listener blocks on its connection until news comes.
//!
//! A notification sent while a listener is disconnected is lost, so after every
//! (re)connection the listener calls `resync`: its owner then forgets whatever
//! the lost news could have been about (the token caches), and asks the database
//! again.

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use std::time::Duration;

/// The channel every process listens on (`sql::INSERT_SAMPLES` and
/// `sql::INSERT_FILE` name it too).
pub const CHANNEL: &str = "crudrs_news";

/// The payload of a sample batch insert.
pub const SAMPLES_CHANGED: &str = "samples";

/// The payload of a new file.
pub const FILES_CHANGED: &str = "files";

/// First wait before reconnecting (doubled up to 5 s while it fails).
const RETRY: Duration = Duration::from_millis(250);

fn connect(url: &str) -> Result<Client, postgres::Error> {
    let mut client = Client::connect(url, NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    Ok(client)
}

/// Starts listening: connects at once (so nothing announced after this returns
/// is missed), then runs on its own thread until `alive` says stop (looked at
/// when news comes or the connection is lost). `on_message` gets each payload;
/// `resync` runs after every later connection (news sent meanwhile is lost),
/// and after the first one too when it could not be made at once (the database
/// was down at start-up). `lost` runs whenever the listener is not connected
/// (at start when the first connection failed, and after a connection is lost):
/// until `resync`, news may be missed.
pub fn listen(
    url: String,
    alive: impl Fn() -> bool + Send + 'static,
    on_message: impl Fn(&str) + Send + 'static,
    resync: impl Fn() + Send + 'static,
    lost: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let mut first = connect(&url).ok();
    if first.is_none() {
        lost();
    }
    std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || {
            let mut backoff = RETRY;
            while alive() {
                let mut client = match first.take() {
                    Some(c) => c,
                    None => match connect(&url) {
                        Ok(c) => {
                            backoff = RETRY;
                            resync();
                            c
                        }
                        Err(e) => {
                            tracing::debug!("notification listener cannot connect: {e}");
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    },
                };
                // Blocks until news comes: an idle listener costs nothing (no
                // wake-up, no allocation), and a lost connection ends the wait.
                let mut notifications = client.notifications();
                let mut news = notifications.blocking_iter();
                loop {
                    match news.next() {
                        Ok(Some(n)) => {
                            if !alive() {
                                return;
                            }
                            on_message(n.payload());
                        }
                        Ok(None) => {
                            lost();
                            break;
                        }
                        Err(e) => {
                            lost();
                            tracing::warn!("notification listener lost its connection: {e}");
                            break;
                        }
                    }
                }
            }
        })
        .map(|_| ())
}

/// Sends `payload` on the channel from `client` (delivered when its transaction
/// commits; at once outside one).
pub fn notify(client: &mut Client, payload: &str) -> Result<(), postgres::Error> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .map(|_| ())
}
