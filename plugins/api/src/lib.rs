//! The plugin interface of ringsmtpd: hooks, outcomes, continuations, typed notes.
//!
//! This crate does no network I/O and knows no runtime, so every plugin can be tested without
//! sockets ([`testing`]); the one file it reads is a spooled message ([`mime`], on the blocking
//! pool). A plugin implements [`Plugin`]; each hook returns a [`Step`]: an [`Outcome`]
//! now, or a future for work that waits (DNS, spamd, a downstream MTA). The engine in the
//! `ringsmtpd` crate runs the chains and turns outcomes into SMTP replies.

pub mod address;
pub mod args;
pub mod auth;
pub mod cidr;
mod common;
mod context;
pub mod dns;
pub mod dnsutil;
mod envelope;
pub mod escape;
pub mod header_edit;
pub mod headers;
mod hook;
mod hook_list;
pub mod metrics;
pub mod mime;
pub mod net;
mod notes;
mod outcome;
pub mod owner;
mod plugin;
pub mod shared;
pub mod store;
pub mod testing;

#[cfg(test)]
#[global_allocator]
static ALLOC: testing::CountingAlloc = testing::CountingAlloc;

/// The plugin writer's guide, `docs/writing-plugins.md`, included here so that `cargo test`
/// compiles every example in it.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/writing-plugins.md")]
pub struct WritingPluginsGuide;

pub use common::{Common, CommonArgs, LogAdjust, Reject, RejectType};
pub use context::{
    blocking, helper, set_spool_remover, AuthInfo, Body, Connection, Cx, Hello, HelloKind, Level,
    Services, SpoolFile, TlsInfo, Transaction,
};
pub use envelope::{Address, BodyType, MailParams, Notify, RcptParams, Recipient, Ret};
pub use hook::{Hook, HookSet};
pub use notes::Notes;
pub use outcome::{Msg, Outcome, Reply, Step};
pub use plugin::{ConfigError, ConfigLine, ConfigSource, Factory, LogRecord, Plugin, PluginInit};
