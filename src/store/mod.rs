//! The state store behind `Services::store` (see `ringsmtpd_plugin_api::store`): the process's
//! embedded store, and each worker's client.
//!
//! - [`settings`]: the config file `state_store` (a leaf `config.rs` reads, so the config
//!   does not depend on the backends and their sockets);
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
pub mod settings;

use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use ringsmtpd_plugin_api::store::{Batch, StoreError, StoreFuture};

pub use embedded::Embedded;
pub use redis::Redis;
pub use settings::{RedisConfig, StoreConfig};

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
