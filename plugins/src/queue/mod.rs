//! Queue plugins (qpsmtpd's `plugins/queue/`): the `queue` hook delivers the message. At least
//! one must be configured, or every DATA ends in 451. `OK` means the message is durable at its
//! destination (DESIGN.md §6): the client gets 250 only then.

pub mod discard;
mod fsync_batch;
pub mod maildir; // queue/maildir's group commit of new/ fsyncs
                 // issue 4, local queues (maildir above; shared helpers in `local`):
pub mod exim_bsmtp;
mod local;
pub mod postfix_queue;
pub mod qmail_queue;
// issue 4, network queues (shared SMTP/LMTP client in `smtp_client`):
pub mod lmtp;
mod smtp_client;
pub mod smtp_forward;
