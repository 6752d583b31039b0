//! # sender_permitted_from — SPF (RFC 7208)
//!
//! The evaluator: [`record`] parses an SPF record into terms, [`macros`] expands macro
//! strings (§7), [`eval`] is `check_host()` on the worker's DNS client. The plugin itself
//! is not registered yet.

pub mod eval;
pub mod macros;
pub mod record;

#[cfg(test)]
mod suite;
