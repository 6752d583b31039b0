//! Who the client is beyond its address (qpsmtpd's `plugins/ident/`): where it is
//! (`ident/geoip`) and what operating system it runs (`ident/p0f`). Both only write notes for
//! other plugins (and headers), unless told to refuse.

pub mod geoip;
pub mod p0f;
