//! Virus scanners (qpsmtpd's `plugins/virus/`): each checks the message at `data_post`, on the
//! shared scanner-client shape of `crate::helpers::scanner`.

pub mod clamdscan;
