//! Queue plugins (qpsmtpd's `plugins/queue/`): the `queue` hook delivers the message. At least
//! one must be configured, or every DATA ends in 451. `OK` means the message is durable at its
//! destination (DESIGN.md §6): the client gets 250 only then.

pub mod discard;
pub mod maildir;
