//! The state store behind `Services::store` (see `ringsmtpd_plugin_api::store`): the config
//! file `state_store`, the process's embedded store, and each worker's client.
//!
//! - [`embedded`]: the default, a store thread owning the data, saved to a file;
//! - [`file`]: that file's format;
//! - [`redis`]: Redis over the worker's sockets, a small pool per worker, shared by every
//!   process and host that points at it; [`resp`]: its protocol.
//!
//! The embedded store is opened once per process, on the main thread, at start (a damaged
//! file stops the start) and at a reload that changes its directory; every worker talks to
//! the same store thread. It is saved and stopped by [`close`] when the process ends.

pub mod embedded;
pub mod file;
pub mod redis;
pub mod resp;

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use ringsmtpd_plugin_api::store::{Batch, StoreError, StoreFuture};
use ringsmtpd_plugin_api::{ConfigError, ConfigSource};

pub use embedded::Embedded;
pub use redis::{Redis, RedisConfig};

/// The default directory of the embedded store (relative to the working directory).
pub const DEFAULT_STATE_DIR: &str = "./state";
/// The default bound of the embedded store.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// Config `state_store`: which backend, and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// `embedded [dir PATH] [max_entries N]`.
    Embedded { dir: PathBuf, max_entries: usize },
    /// `redis ADDR [db N] [user NAME] [password_file PATH] [timeout S] [pool N]`.
    Redis(RedisConfig),
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig::Embedded {
            dir: PathBuf::from(DEFAULT_STATE_DIR),
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

impl StoreConfig {
    /// Reads `state_store` (one line; absent: the embedded store in `./state`).
    pub fn load(cfg: &dyn ConfigSource) -> Result<StoreConfig, ConfigError> {
        let Some(lines) = cfg.lines("state_store")? else {
            return Ok(StoreConfig::default());
        };
        let Some(line) = lines.first() else {
            return Ok(StoreConfig::default());
        };
        if let Some(extra) = lines.get(1) {
            return Err(extra.error("state_store takes one line"));
        }
        StoreConfig::parse(&line.text).map_err(|e| line.error(e))
    }

    fn parse(text: &str) -> Result<StoreConfig, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (kind, rest) = words.split_first().ok_or("empty state_store line")?;
        match *kind {
            "embedded" => {
                if rest.len() % 2 != 0 {
                    return Err(format!("'{}' needs a value", rest[rest.len() - 1]));
                }
                let pairs = rest.chunks(2).map(|kv| (kv[0], kv[1]));
                let (mut dir, mut max) = (PathBuf::from(DEFAULT_STATE_DIR), DEFAULT_MAX_ENTRIES);
                for (k, v) in pairs {
                    match k {
                        "dir" => dir = PathBuf::from(v),
                        "max_entries" => {
                            max = v
                                .parse()
                                .ok()
                                .filter(|n| (1..=100_000_000).contains(n))
                                .ok_or_else(|| {
                                    format!("max_entries must be 1..100000000, not '{v}'")
                                })?
                        }
                        _ => return Err(format!("unknown embedded store setting '{k}'")),
                    }
                }
                Ok(StoreConfig::Embedded {
                    dir,
                    max_entries: max,
                })
            }
            "redis" => Ok(StoreConfig::Redis(RedisConfig::parse(rest)?)),
            other => Err(format!("unknown state store '{other}' (embedded or redis)")),
        }
    }
}

/// The process's embedded store, once opened.
static EMBEDDED: Mutex<Option<Embedded>> = Mutex::new(None);

fn embedded() -> std::sync::MutexGuard<'static, Option<Embedded>> {
    EMBEDDED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens what `config` needs for the whole process (main thread, at start and reload): the
/// embedded store, unless the one open already lives in the same directory.
pub fn open(config: &StoreConfig) -> Result<(), String> {
    let StoreConfig::Embedded { dir, max_entries } = config else {
        return Ok(()); // Redis: each worker connects itself
    };
    let mut current = embedded();
    let path = dir.join(embedded::FILE_NAME);
    if current.as_ref().is_some_and(|e| e.path() == path) {
        return Ok(());
    }
    if let Some(old) = current.take() {
        old.close(Duration::from_secs(10));
    }
    *current = Some(Embedded::open(dir, *max_entries)?);
    Ok(())
}

/// What `--check` asks: does the embedded store's file load? Starts nothing, writes nothing.
pub fn verify(config: &StoreConfig) -> Result<(), String> {
    match config {
        StoreConfig::Embedded { dir, max_entries } => embedded::load(dir, *max_entries).map(drop),
        StoreConfig::Redis(_) => Ok(()),
    }
}

/// Saves and stops the embedded store (at exit).
pub fn close() {
    if let Some(store) = embedded().take() {
        store.close(Duration::from_secs(10));
    }
}

/// A worker's client for the configured store.
pub enum StoreClient {
    Embedded(Embedded),
    Redis(Rc<Redis>),
    /// Nothing opened (tests that build a worker without [`open`]).
    None,
}

impl StoreClient {
    /// The client for `config` on this worker.
    pub fn new(config: &StoreConfig) -> StoreClient {
        match config {
            StoreConfig::Embedded { .. } => match embedded().as_ref() {
                Some(e) => StoreClient::Embedded(e.clone()),
                None => StoreClient::None,
            },
            StoreConfig::Redis(cfg) => StoreClient::Redis(Redis::new(cfg.clone())),
        }
    }

    /// Sends a batch (see `Services::store`).
    pub fn send(&self, batch: Batch) -> StoreFuture {
        if let Err(e) = batch.check() {
            return Box::pin(std::future::ready(Err(e)));
        }
        if batch.is_empty() {
            let none = ringsmtpd_plugin_api::store::Replies(Vec::new());
            return Box::pin(std::future::ready(Ok(none)));
        }
        match self {
            StoreClient::Embedded(e) => e.send(batch),
            StoreClient::Redis(r) => Box::pin(r.clone().send(batch)),
            StoreClient::None => Box::pin(std::future::ready(Err(StoreError::Unavailable(
                "no state store opened".into(),
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines() {
        assert_eq!(StoreConfig::parse("embedded"), Ok(StoreConfig::default()));
        assert_eq!(
            StoreConfig::parse("embedded dir /var/lib/x max_entries 5"),
            Ok(StoreConfig::Embedded {
                dir: "/var/lib/x".into(),
                max_entries: 5
            })
        );
        for bad in [
            "embedded dir",
            "embedded max_entries 0",
            "embedded size 3",
            "memcached",
        ] {
            assert!(StoreConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
