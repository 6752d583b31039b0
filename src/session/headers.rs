//! The headers the core adds after DATA, as qpsmtpd does (reference §5.4): Received (the
//! `received_line` hook may replace its value), then Authentication-Results in front of it.

use std::fmt::Write;

use ringsmtpd_plugin_api::headers;
use ringsmtpd_plugin_api::shared::AuthResults;
use ringsmtpd_plugin_api::{AuthInfo, Connection, Hook, Outcome, Transaction};

use super::State;
use crate::hooks::Call;

impl State {
    pub(super) async fn add_core_headers(&mut self, txn: &mut Transaction) {
        let protocol = protocol(&self.cx.conn, txn.mail_params.smtputf8);
        let env = self.env.clone();
        let custom = if env.chains.has(Hook::ReceivedLine) {
            let call = Call::ReceivedLine(protocol);
            match env
                .chains
                .run(&mut self.cx, Some(&mut *txn), call)
                .await
                .outcome
            {
                Outcome::Ok(Some(text)) => Some(text),
                _ => None,
            }
        } else {
            None
        };
        // Both headers are written into one reused buffer, then put in front of the headers
        // plugins added: no allocation once the session has seen a message.
        let mut h = std::mem::take(&mut self.scratch);
        h.clear();
        let me = env.svc.me();
        // Clauses about the connection (iprev) and about this message (SPF, DKIM, DMARC).
        let clauses = (self.cx.conn.notes.get::<AuthResults>().into_iter())
            .chain(txn.notes.get::<AuthResults>())
            .flat_map(|AuthResults(results)| results.iter().map(String::as_str));
        auth_results_value(&mut h, me, self.cx.conn.auth.as_ref(), clauses);
        h.push_str("\r\nReceived: ");
        match custom {
            Some(text) => h.push_str(&text),
            None => received_value(&mut h, &self.cx.conn, me, protocol),
        }
        h.push_str("\r\n");
        txn.added_headers.insert_str(0, &h);
        self.scratch = h;
    }
}

/// Writes `Authentication-Results: <me>; auth=...` and the plugins' clauses (RFC 8601), one
/// per folded line, into `out` (without the final CRLF). The user name comes from the client
/// (through an AUTH backend): it is written as a quoted string when it is not a plain token,
/// so it can neither start a header nor forge a clause (`u; dkim=pass`); control characters
/// in the plugins' clauses become spaces.
pub fn auth_results_value<'c>(
    out: &mut String,
    me: &str,
    auth: Option<&AuthInfo>,
    clauses: impl Iterator<Item = &'c str>,
) {
    let _ = write!(out, "Authentication-Results: {me}; ");
    match auth {
        Some(a) => {
            let _ = write!(out, "auth=pass ({}) smtp.auth=", a.mechanism);
            push_pvalue(out, &a.user);
        }
        None => out.push_str("auth=none"),
    }
    for clause in clauses {
        out.push_str(";\r\n\t");
        headers::push_value(out, clause);
    }
}

/// An RFC 8601 `pvalue`: as it is when it is a dot-atom or an address of them, otherwise a
/// quoted string (`"` and `\` escaped, control characters as spaces).
fn push_pvalue(out: &mut String, value: &str) {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.@".contains(c);
    if !value.is_empty() && value.chars().all(atext) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The `with` protocol token: RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA) and, for SMTPUTF8
/// transactions, RFC 6531 §3.7.3 (UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA).
pub fn protocol(conn: &Connection, smtputf8: bool) -> &'static str {
    match (
        conn.is_esmtp(),
        smtputf8,
        conn.tls.is_some(),
        conn.auth.is_some(),
    ) {
        (false, _, _, _) => "SMTP",
        (true, false, false, false) => "ESMTP",
        (true, false, true, false) => "ESMTPS",
        (true, false, false, true) => "ESMTPA",
        (true, false, true, true) => "ESMTPSA",
        (true, true, false, false) => "UTF8SMTP",
        (true, true, true, false) => "UTF8SMTPS",
        (true, true, false, true) => "UTF8SMTPA",
        (true, true, true, true) => "UTF8SMTPSA",
    }
}

/// Writes qpsmtpd's Received value into `out`:
/// `from <host> (HELO <helo>) (<ip>)\r\n\tby <me> (ringsmtpd/<ver>) with <proto>; <date>`.
pub fn received_value(out: &mut String, conn: &Connection, me: &str, protocol: &str) {
    // The host name (from DNS, or TCPREMOTEHOST in --stdio mode) and the HELO text go into a
    // header: only printable ASCII without parentheses survives.
    let shown = |c: char| {
        if c.is_ascii_graphic() && c != '(' && c != ')' {
            c
        } else {
            '?'
        }
    };
    out.push_str("from ");
    out.extend(
        conn.remote_host
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .map(shown),
    );
    out.push_str(" (HELO ");
    out.extend(conn.hello_host().chars().map(shown));
    let ver = env!("CARGO_PKG_VERSION");
    let _ = write!(
        out,
        ") ({})\r\n\tby {me} (ringsmtpd/{ver}) with {protocol}",
        conn.remote.ip()
    );
    if let Some(t) = &conn.tls {
        let _ = write!(out, " ({} {} encrypted)", t.protocol, t.cipher);
    }
    out.push_str("; ");
    rfc5322_date(out, std::time::SystemTime::now());
}

/// Writes an RFC 5322 §3.3 date in local time, e.g. `Sat, 21 Nov 2026 05:23:55 +0000`.
pub fn rfc5322_date(out: &mut String, t: std::time::SystemTime) {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: `localtime_r` is the thread-safe variant: it writes only into `tm`, a valid,
    // zero-initialised struct owned by this frame, and reads only `secs`.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            out.push_str("Thu, 01 Jan 1970 00:00:00 +0000");
            return;
        }
        tm
    };
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let off_min = tm.tm_gmtoff / 60;
    let _ = write!(
        out,
        "{}, {:02} {} {} {:02}:{:02}:{:02} {}{:02}{:02}",
        DAYS[tm.tm_wday.clamp(0, 6) as usize],
        tm.tm_mday,
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        if off_min < 0 { '-' } else { '+' },
        off_min.abs() / 60,
        off_min.abs() % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_names(section: &str) -> Vec<String> {
        headers::fields(section.as_bytes())
            .map(|f| f.expect("well formed").name().to_string())
            .collect()
    }

    #[test]
    fn a_user_name_cannot_add_a_header_or_forge_a_clause() {
        let auth = AuthInfo {
            user: "u\r\nBcc: x@example.com; dkim=pass \"q\"".into(),
            mechanism: "PLAIN".into(),
        };
        let clauses = ["spf=pass smtp.mailfrom=a.example\r\nX-Evil: 1"];
        let mut h = String::new();
        auth_results_value(&mut h, "mx.test", Some(&auth), clauses.into_iter());
        h.push_str("\r\n");
        assert_eq!(field_names(&h), ["Authentication-Results"], "{h}");
        assert!(
            h.contains(r#"smtp.auth="u  Bcc: x@example.com; dkim=pass \"q\"";"#),
            "{h}"
        );
        let mut h = String::new();
        let plain = AuthInfo {
            user: "joe@example.com".into(),
            mechanism: "LOGIN".into(),
        };
        auth_results_value(&mut h, "mx.test", Some(&plain), std::iter::empty());
        assert_eq!(
            h,
            "Authentication-Results: mx.test; auth=pass (LOGIN) smtp.auth=joe@example.com"
        );
    }

    #[test]
    fn a_remote_host_name_cannot_add_a_header() {
        let remote = "192.0.2.1:25".parse().expect("address");
        let local = "127.0.0.1:25".parse().expect("address");
        let mut conn = Connection::new(1, remote, local);
        conn.remote_host = Some("evil.example\r\nX-Injected: yes".into());
        let mut h = String::from("Received: ");
        received_value(&mut h, &conn, "mx.test", "SMTP");
        h.push_str("\r\n");
        assert_eq!(field_names(&h), ["Received"], "{h}");
        assert!(h.starts_with("Received: from evil.example??X-Injected:?yes (HELO "));
    }
}
