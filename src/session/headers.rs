//! The headers the core adds after DATA, as qpsmtpd does (reference §5.4): Received (the
//! `received_line` hook may replace its value), then Authentication-Results in front of it.

use ringsmtpd_plugin_api::shared::AuthResults;
use std::fmt::Write;

use ringsmtpd_plugin_api::{Connection, Hook, Outcome, Transaction};

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
        let _ = write!(h, "Authentication-Results: {me}; ");
        let _ = match &self.cx.conn.auth {
            Some(a) => write!(h, "auth=pass ({}) smtp.auth={}", a.mechanism, a.user),
            None => write!(h, "auth=none"),
        };
        // Clauses about the connection (iprev) and about this message (SPF, DKIM, DMARC).
        let conn_results = self.cx.conn.notes.get::<AuthResults>();
        for AuthResults(results) in conn_results
            .into_iter()
            .chain(txn.notes.get::<AuthResults>())
        {
            for r in results {
                let _ = write!(h, ";\r\n\t{r}");
            }
        }
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
    let host = conn.remote_host.as_deref().unwrap_or("unknown");
    let _ = write!(out, "from {host} (HELO ");
    // The HELO text goes into a header: only printable ASCII without parentheses survives.
    out.extend(conn.hello_host().chars().map(|c| {
        if c.is_ascii_graphic() && c != '(' && c != ')' {
            c
        } else {
            '?'
        }
    }));
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
