//! The plugin test kit: build a plugin from its `config/plugins` line and files in memory
//! ([`build`]), fake services without a runtime ([`FakeServices`], [`cx`]), a tiny executor
//! for `Step`s ([`run`]), fixtures (transactions, messages, AUTH attempts, [`TempDir`]), a
//! fake backend server ([`FakePeer`]) and the check that a plugin lists every hook it
//! implements ([`unlisted_overrides`]). No sockets unless a test starts its own peer, no
//! threads besides the blocking job's own.
//!
//! ```ignore
//! let p = build(new, "badmailfrom reject 0", &[("badmailfrom", "spammer@example.com\n")])?;
//! let (mut cx, svc) = cx("192.0.2.1:4242");
//! assert_eq!(run(p.mail(&mut cx, &mut txn)), Outcome::Declined);
//! assert!(svc.logged("fail, log only"));
//! ```

mod alloc;
mod build;
mod fixtures;
mod hooks;
mod peer;
mod services;

pub use alloc::{allocations, CountingAlloc};
pub use build::*;
pub use fixtures::*;
pub use hooks::*;
pub use peer::*;
pub use services::*;
