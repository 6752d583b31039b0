//! The headers the core adds after DATA, as qpsmtpd does (reference §5.4): Received (the
//! `received_line` hook may replace its value), then Authentication-Results in front of it.

use ringsmtpd_plugin_api::shared::AuthResults;
use ringsmtpd_plugin_api::{Connection, Outcome, Transaction};

use super::State;
use crate::hooks::Call;

impl State {
    pub(super) async fn add_core_headers(&mut self, txn: &mut Transaction) {
        let protocol = protocol(&self.cx.conn, txn.mail_params.smtputf8);
        let env = self.env.clone();
        let decision = env
            .chains
            .run(&mut self.cx, Some(&mut *txn), Call::ReceivedLine(protocol))
            .await;
        let received = match decision.outcome {
            Outcome::Ok(Some(text)) => text.into_owned(),
            _ => received_value(&self.cx.conn, env.svc.me(), protocol),
        };
        txn.prepend_header("Received", &received);
        let mut ar = format!("{}; ", env.svc.me());
        match &self.cx.conn.auth {
            Some(a) => ar.push_str(&format!("auth=pass ({}) smtp.auth={}", a.mechanism, a.user)),
            None => ar.push_str("auth=none"),
        }
        if let Some(AuthResults(results)) = txn.notes.get::<AuthResults>() {
            for r in results {
                ar.push_str(";\r\n\t");
                ar.push_str(r);
            }
        }
        txn.prepend_header("Authentication-Results", &ar);
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

/// qpsmtpd's Received value:
/// `from <host> (HELO <helo>) (<ip>)\r\n\tby <me> (ringsmtpd/<ver>) with <proto>; <date>`.
pub fn received_value(conn: &Connection, me: &str, protocol: &str) -> String {
    let host = conn.remote_host.as_deref().unwrap_or("unknown");
    let helo = sanitize(conn.hello_host());
    let tls = match &conn.tls {
        Some(t) => format!(" ({} {} encrypted)", t.protocol, t.cipher),
        None => String::new(),
    };
    format!(
        "from {host} (HELO {helo}) ({ip})\r\n\tby {me} (ringsmtpd/{ver}) with {protocol}{tls}; {date}",
        ip = conn.remote.ip(),
        ver = env!("CARGO_PKG_VERSION"),
        date = rfc5322_date(std::time::SystemTime::now()),
    )
}

/// The HELO text goes into a header: only printable ASCII without parentheses survives.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '(' && c != ')' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// An RFC 5322 §3.3 date in local time, e.g. `Sat, 21 Nov 2026 05:23:55 +0000`.
pub fn rfc5322_date(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: `localtime_r` is the thread-safe variant: it writes only into `tm`, a valid,
    // zero-initialised struct owned by this frame, and reads only `secs`.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return "Thu, 01 Jan 1970 00:00:00 +0000".to_string();
        }
        tm
    };
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let off_min = tm.tm_gmtoff / 60;
    format!(
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
    )
}
