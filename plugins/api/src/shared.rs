//! Notes that several plugins share, as public types (qpsmtpd's well-known note names).

/// A deferred reject (qpsmtpd's conn note `naughty`): a plugin with `reject naughty` found the
/// client bad; the `naughty` plugin turns this into a reject at the hook it is told to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naughty {
    pub plugin: String,
    pub msg: String,
}

/// The client host is whitelisted (qpsmtpd conn note `whitelisthost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhitelistHost(pub String);

/// The sender is whitelisted (qpsmtpd txn note `whitelistsender`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhitelistSender(pub String);

/// Results for the Authentication-Results header (RFC 8601), one `method=result ...` clause
/// each. Facts about the connection (iprev) go in the connection's notes, facts about a
/// message (SPF, DKIM, DMARC) in the transaction's; the core writes both, connection first.
/// qpsmtpd kept all of them per connection, so they piled up across messages (#320).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthResults(pub Vec<String>);

impl AuthResults {
    /// One clause: `method=result`, ` (reason)` if any, then ` prop=value` for each property
    /// whose value is not empty (e.g. `dkim=pass header.d=example.com`). Values must already
    /// be clean (a `pvalue` without `;`, `(`, `)`, `"`, `\` or white space).
    pub fn clause(
        method: &str,
        result: impl std::fmt::Display,
        reason: Option<&str>,
        props: &[(&str, &str)],
    ) -> String {
        use std::fmt::Write;
        let mut c = format!("{method}={result}");
        if let Some(why) = reason {
            let _ = write!(c, " ({why})");
        }
        for (prop, value) in props.iter().filter(|(_, v)| !v.is_empty()) {
            let _ = write!(c, " {prop}={value}");
        }
        c
    }
}

/// qpsmtpd's `is_immune`: checks are skipped for relay clients and whitelisted hosts/senders.
pub fn is_immune(cx: &crate::Cx, txn: Option<&crate::Transaction>) -> bool {
    cx.conn.relay_client
        || cx.conn.notes.contains::<WhitelistHost>()
        || txn.is_some_and(|t| t.notes.contains::<WhitelistSender>())
}
