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

/// One DKIM signature as `dkim` verified it: what DMARC needs (RFC 7489 §3.1.1, §4.2) and
/// what an aggregate report lists (§7.2). Values are as the signature has them, cleaned by
/// `dkim` (printable ASCII, bounded), not lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimResult {
    /// `d=`, the signing domain.
    pub domain: String,
    /// `s=`, the selector (empty if the signature had none).
    pub selector: String,
    /// The RFC 8601 result: `pass`, `fail`, `policy`, `temperror` or `permerror`.
    pub result: &'static str,
}

/// Every DKIM signature verified on the message, top to bottom (txn note, written by `dkim`;
/// read by `dmarc`). Absent when `dkim` did not run; empty when the message had none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DkimResults(pub Vec<DkimResult>);

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

/// A content scanner's verdict on the message (txn note; qpsmtpd's note `spamassassin`),
/// written by `spamassassin` and `rspamd`, for the plugins that weigh a message by it (karma;
/// no plugin reads it yet). One note per message: when several scanners run, a spam verdict is never
/// replaced by a later clean one ([`SpamVerdict::record`]); otherwise the last one stands.
/// Each scanner's log line has its own verdict either way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpamVerdict {
    /// The plugin that scanned (`spamassassin`, `rspamd`).
    pub scanner: &'static str,
    /// The message's score (higher is spammier).
    pub score: f64,
    /// The score the scanner itself calls spam at: spamd's `required`, rspamd's `reject`
    /// action score.
    pub threshold: f64,
    /// The scanner's own verdict: spamd's `Spam: True`; rspamd's action `add header`,
    /// `rewrite subject`, `soft reject` or `reject`.
    pub is_spam: bool,
    /// The scanner's action word (rspamd's `no action`, `greylist`, `add header`,
    /// `rewrite subject`, `soft reject`, `reject`); `None` for a scanner without one (spamd).
    pub action: Option<&'static str>,
}

impl SpamVerdict {
    /// Stores the verdict in `notes`, unless a spam verdict is there and this one is not.
    pub fn record(self, notes: &mut crate::Notes) {
        if !self.is_spam && notes.get::<SpamVerdict>().is_some_and(|v| v.is_spam) {
            return;
        }
        notes.set(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spam_verdict_is_not_replaced_by_a_clean_one() {
        let verdict = |scanner, is_spam| SpamVerdict {
            scanner,
            score: if is_spam { 9.0 } else { 1.0 },
            threshold: 5.0,
            is_spam,
            action: None,
        };
        let mut notes = crate::Notes::new();
        verdict("rspamd", false).record(&mut notes);
        verdict("spamassassin", true).record(&mut notes);
        assert_eq!(
            notes.get::<SpamVerdict>().map(|v| v.scanner),
            Some("spamassassin")
        );
        verdict("rspamd", false).record(&mut notes);
        assert_eq!(
            notes.get::<SpamVerdict>().map(|v| v.scanner),
            Some("spamassassin")
        );
    }
}

/// The client's karma (conn note, set by `karma` at `connect`; absent without that plugin):
/// qpsmtpd's notes `karma_history` and `karma`. Other plugins read it to be more lenient with
/// known good clients (greylisting skips a positive history) or stricter with bad ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Karma {
    /// Nice minus naughty connections this IP has had (qpsmtpd's `karma_history`).
    pub history: i64,
    /// This connection's karma so far (qpsmtpd's `karma`): below zero is bad. `karma` records
    /// the connection as naughty or nice from it when the client disconnects.
    pub score: i64,
}

impl Karma {
    /// qpsmtpd's `adjust_karma`: adds `by` to this connection's score (a good sign raises it,
    /// a bad one lowers it). Nothing happens when the `karma` plugin does not run.
    pub fn adjust(cx: &mut crate::Cx, by: i64) {
        if let Some(k) = cx.conn.notes.get_mut::<Karma>() {
            k.score = k.score.saturating_add(by);
        }
    }
}

/// Where the client is, as `ident/geoip` found it in its MaxMind databases (qpsmtpd's conn
/// notes `geoip_country`, `geoip_country_name`, `geoip_continent`, `geoip_city`, `geoip_asn`,
/// `geoip_distance`). Absent when the plugin did not run or the address is in no database;
/// each field `None` when the database has no such data. Texts are printable ASCII or
/// UTF-8 without control characters, at most 64 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoIp {
    /// ISO 3166-1 alpha-2 country code, upper case (`DE`).
    pub country: Option<String>,
    /// The country's English name.
    pub country_name: Option<String>,
    /// Two-letter continent code (`EU`, `NA`...).
    pub continent: Option<String>,
    /// The city's English name (city databases only).
    pub city: Option<String>,
    /// The autonomous system number (an ASN database).
    pub asn: Option<u32>,
    /// Kilometres from the server, great circle (with the `distance` argument and a city
    /// database that knows where the client is).
    pub distance_km: Option<u32>,
}

/// The client's TCP fingerprint, as `ident/p0f` got it from p0f v3 (qpsmtpd's conn note
/// `p0f`). Texts are printable ASCII, at most 31 bytes, empty when p0f did not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct P0f {
    /// The OS name (`Linux`, `Windows`): p0f's `os_name`.
    pub os_name: String,
    /// The OS version (`2.2.x-3.x`): p0f's `os_flavor` (qpsmtpd v2's `detail`).
    pub os_flavor: String,
    /// Network hops from the client, `None` when unknown.
    pub distance: Option<u16>,
    /// The link type (`Ethernet or modem`, `DSL`...): p0f's `link_type`.
    pub link: String,
    /// The client's uptime in minutes, `None` when unknown.
    pub uptime_min: Option<u32>,
}

impl P0f {
    /// qpsmtpd's `genre`: the OS name and flavor, `Linux 2.2.x-3.x`.
    pub fn genre(&self) -> String {
        match (self.os_name.is_empty(), self.os_flavor.is_empty()) {
            (false, false) => format!("{} {}", self.os_name, self.os_flavor),
            (false, true) => self.os_name.clone(),
            (true, _) => self.os_flavor.clone(),
        }
    }
}
