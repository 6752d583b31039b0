//! # headers — check the message header: required fields, duplicates, the Date
//!
//! ## Synopsis
//!
//! ```text
//! headers [require From,Date] [future DAYS] [past DAYS]
//!         [reject 0|1|naughty] [reject_type perm|temp|...] [loglevel N]
//! headers require From,Date future 2 past 14
//! ```
//!
//! ## Description
//!
//! At `data_post`, checks the header section of the message as the client sent it (not the
//! Received and Authentication-Results fields this server adds):
//!
//! 1. the message is not empty: `You must send some data first`;
//! 2. if `future` or `past` is set and the message has a `Date` this plugin can read (RFC 5322
//!    §3.3, with the obsolete forms of §4.3), it is not more than `future` days ahead of
//!    this server's clock, nor more than `past` days behind it: `The Date header is too far
//!    in the future` / `in the past`. A Date that does not parse is logged and not judged
//!    (qpsmtpd does the same with what Perl's Date::Parse cannot read; note that parser took
//!    more forms, such as `asctime` dates, than RFC 5322 allows);
//! 3. every field named in `require` is present with a non-empty value: `We require a valid
//!    From header`;
//! 4. none of the fields RFC 5322 §3.6 allows at most once appears twice: `Only one Subject
//!    header allowed. See RFC 5322, Section 3.6`. Those are `Date`, `From`, `Sender`,
//!    `Reply-To`, `To`, `Cc`, `Bcc`, `Message-ID`, `In-Reply-To`, `References` and `Subject`
//!    (names in any case).
//!
//! The first failure in that order is the reply: `552 5.6.0 <reason>` with the defaults
//! (`reject_type temp`: 452 4.6.0), or only a log line with `reject 0`. Every failure is
//! logged. Clients that are immune (relay clients, whitelisted hosts or senders:
//! `shared::is_immune`) are not checked, as in qpsmtpd.
//!
//! Lines in the header section that are not fields (no colon, a space in the name) are
//! logged at `info` and otherwise ignored.
//!
//! Default `require`: **`From`**, as in qpsmtpd, whose documentation explains why `Date` is
//! not required by default: much legitimate automated mail (bank notices, bounces, JavaMail
//! senders) has none, although RFC 5322 §3.6 requires it. Add it with `require From,Date`.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `require` | `From` | comma-separated field names (`From,Date,Subject,Message-ID`); each a valid RFC 5322 field name |
//! | `future` | off | days; a Date later than now + DAYS fails. `0` is off, as in qpsmtpd |
//! | `past` | off | days; a Date earlier than now - DAYS fails. `0` is off |
//! | `reject 0\|1\|naughty` | `1` | `0`: log only (start with it: see what would be refused); `naughty`: mark the connection |
//! | `reject_type` | `perm` | `perm` 552, `temp` 452, `disconnect`, `temp_disconnect` |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `data_post`.
//!
//! ## Notes
//!
//! Reads `WhitelistHost`, `WhitelistSender` and `relay_client` (through `is_immune`). Writes
//! `Naughty` with `reject naughty`. (qpsmtpd also lowered karma; there is no karma plugin
//! yet.)
//!
//! ## Standards
//!
//! RFC 5322 §3.6 (required fields and the at-most-once table), §3.3 and §4.3 (date-time),
//! §3.6.8 and §4.5.8 (field names); RFC 3463 §3.7 (X.6.0, media error).
//!
//! ## Security
//!
//! The header walk is strict and does not allocate (`ringsmtpd_plugin_api::headers`); a
//! folded or non-UTF-8 Date is the only value copied. Only the header section kept in memory
//! is read, also for a message spooled to disk.

use std::borrow::Cow;

use ringsmtpd_plugin_api::headers::{self, parse_date};
use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Step,
    Transaction,
};

/// RFC 5322 §3.6: the fields a message may have at most once (the "Max number" column is 1).
const SINGULAR: [&str; 11] = [
    "Date",
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
];

const DAY: i64 = 86_400;

/// The `headers` plugin.
pub struct Headers {
    common: Common,
    require: Vec<String>,
    /// Seconds; 0 is off.
    future: i64,
    past: i64,
}

/// Builds `headers` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut require = vec!["From".to_string()];
    let (mut future, mut past) = (0, 0);
    let mut it = rest.iter();
    while let Some(key) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| init.error(format!("argument '{key}' needs a value")))?;
        match *key {
            "require" => {
                require = value.split(',').map(str::to_string).collect();
                if let Some(bad) = require.iter().find(|n| !is_field_name(n)) {
                    return Err(init.error(format!("require: '{bad}' is not a header name")));
                }
            }
            "future" | "past" => {
                let days = value.parse::<u32>().map_err(|_| {
                    init.error(format!(
                        "{key} must be a whole number of days, not '{value}'"
                    ))
                })?;
                let secs = i64::from(days) * DAY;
                if *key == "future" {
                    future = secs;
                } else {
                    past = secs;
                }
            }
            other => return Err(init.unknown(other)),
        }
    }
    Ok(Box::new(Headers {
        common,
        require,
        future,
        past,
    }))
}

/// RFC 5322 §3.6.8: `1*ftext`, printable ASCII but `:`.
fn is_field_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

impl Headers {
    /// The first failure, if any; logs every one.
    fn check(&self, cx: &Cx, txn: &Transaction) -> Option<Cow<'static, str>> {
        if txn.body.len == 0 {
            self.common
                .log(cx, Level::Info, format_args!("fail, no data"));
            return Some("5.6.0 You must send some data first".into());
        }
        let header = txn.body.header_bytes();
        let mut seen = [0u32; SINGULAR.len()];
        let mut present = vec![false; self.require.len()];
        let mut date = None;
        for field in headers::fields(header) {
            let field = match field {
                Ok(f) => f,
                Err(bad) => {
                    self.common
                        .log(cx, Level::Info, format_args!("ignored: {bad}"));
                    continue;
                }
            };
            if let Some(i) = SINGULAR.iter().position(|n| field.is(n)) {
                seen[i] += 1;
            }
            for (i, name) in self.require.iter().enumerate() {
                if field.is(name) && !field.is_empty() {
                    present[i] = true;
                }
            }
            if date.is_none() && field.is("Date") {
                date = Some(field);
            }
        }
        let mut first: Option<Cow<'static, str>> = None;
        if let (Some(date), true) = (date, self.future > 0 || self.past > 0) {
            let value = date.value();
            match parse_date(&value) {
                Ok(dt) => {
                    let now = cx
                        .svc
                        .now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    if self.past > 0 && dt.timestamp < now - self.past {
                        self.common.log(
                            cx,
                            Level::Info,
                            format_args!("fail, date too old ({value})"),
                        );
                        first = Some("5.6.0 The Date header is too far in the past".into());
                    } else if self.future > 0 && dt.timestamp > now + self.future {
                        self.common.log(
                            cx,
                            Level::Info,
                            format_args!("fail, date in future ({value})"),
                        );
                        first = Some("5.6.0 The Date header is too far in the future".into());
                    }
                }
                Err(e) => self.common.log(
                    cx,
                    Level::Info,
                    format_args!("skip, date not parseable ({value}): {e}"),
                ),
            }
        }
        for (name, ok) in self.require.iter().zip(&present) {
            if !ok {
                self.common
                    .log(cx, Level::Info, format_args!("fail, no {name} header"));
                first.get_or_insert_with(|| {
                    format!("5.6.0 We require a valid {name} header").into()
                });
            }
        }
        for (name, n) in SINGULAR.iter().zip(seen) {
            if n > 1 {
                self.common
                    .log(cx, Level::Info, format_args!("fail, {n} {name} headers"));
                first.get_or_insert_with(|| {
                    format!("5.6.0 Only one {name} header allowed. See RFC 5322, Section 3.6")
                        .into()
                });
            }
        }
        first
    }
}

impl Plugin for Headers {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if is_immune(cx, Some(txn)) {
            self.common
                .log(cx, Level::Info, format_args!("skip, immune"));
            return Step::DECLINED;
        }
        match self.check(cx, txn) {
            Some(reason) => Step::Ready(self.common.reject(cx, reason)),
            None => {
                self.common.log(cx, Level::Info, format_args!("pass"));
                Step::DECLINED
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::WhitelistSender;
    use ringsmtpd_plugin_api::testing::{self, assert_bad_args, cx, run, set_message};
    use ringsmtpd_plugin_api::Outcome;

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        testing::build(new, &format!("headers {}", args.join(" ")), &[])
    }

    fn txn(message: &str) -> Transaction {
        let mut t = Transaction::default();
        set_message(&mut t, message);
        t
    }

    fn check(p: &dyn Plugin, message: &str) -> Outcome {
        let (mut c, _) = cx("192.0.2.1:1");
        run(p.data_post(&mut c, &mut txn(message)))
    }

    /// An RFC 5322 date `secs` from now, in -0500.
    fn date(offset_secs: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let t = now + offset_secs - 5 * 3600;
        let (days, rem) = (t.div_euclid(DAY), t.rem_euclid(DAY));
        // civil_from_days (H. Hinnant).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!(
            "{d} {} {y} {:02}:{:02}:{:02} -0500",
            MONTHS[(m - 1) as usize],
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }

    fn msg(fields: &str) -> String {
        format!("{fields}\r\nbody line\r\n")
    }

    const GOOD: &str = "From: a@x.test\r\nTo: b@y.test\r\nSubject: hi\r\n";

    #[test]
    fn a_good_message_passes() {
        let p = build(&[]).unwrap();
        assert_eq!(check(&*p, &msg(GOOD)), Outcome::Declined);
        let fields = format!("{GOOD}Date: {}\r\n", date(0));
        let p = build(&["require", "From,Date", "future", "1", "past", "1"]).unwrap();
        assert_eq!(check(&*p, &msg(&fields)), Outcome::Declined);
    }

    #[test]
    fn required_fields() {
        let p = build(&[]).unwrap();
        assert_eq!(
            check(&*p, &msg("To: b@y.test\r\n")),
            Outcome::deny("5.6.0 We require a valid From header")
        );
        // Present but empty is missing; any case of the name counts.
        assert!(check(&*p, &msg("From:   \r\n")).is_deny());
        assert_eq!(check(&*p, &msg("FROM: a@x\r\n")), Outcome::Declined);
        // Date is not required by default (qpsmtpd), but can be.
        let p = build(&["require", "From,Date"]).unwrap();
        assert_eq!(
            check(&*p, &msg(GOOD)),
            Outcome::deny("5.6.0 We require a valid Date header")
        );
        let p = build(&["require", "Message-ID"]).unwrap();
        assert_eq!(check(&*p, &msg("message-id: <1@x>\r\n")), Outcome::Declined);
        assert!(check(&*p, &msg(GOOD)).is_deny());
        // In the body, a "From:" line is not a header.
        let p = build(&[]).unwrap();
        assert!(check(&*p, "To: b\r\n\r\nFrom: a@x\r\n").is_deny());
    }

    #[test]
    fn duplicate_singular_fields() {
        let p = build(&[]).unwrap();
        for name in SINGULAR {
            let fields = format!("{GOOD}{name}: one\r\n{}: two\r\n", name.to_lowercase());
            let o = check(&*p, &msg(&fields));
            let want = format!("5.6.0 Only one {name} header allowed. See RFC 5322, Section 3.6");
            assert_eq!(o, Outcome::Deny(Some(want.into())), "{name}");
        }
        // Fields that may repeat.
        let fields = format!("{GOOD}Received: a\r\nReceived: b\r\nComments: c\r\nComments: d\r\n");
        assert_eq!(check(&*p, &msg(&fields)), Outcome::Declined);
    }

    #[test]
    fn date_range() {
        let p = build(&["future", "2", "past", "2"]).unwrap();
        let with = |off: i64| msg(&format!("{GOOD}Date: {}\r\n", date(off)));
        assert_eq!(check(&*p, &with(DAY)), Outcome::Declined);
        assert_eq!(check(&*p, &with(-DAY)), Outcome::Declined);
        assert_eq!(
            check(&*p, &with(3 * DAY)),
            Outcome::deny("5.6.0 The Date header is too far in the future")
        );
        assert_eq!(
            check(&*p, &with(-3 * DAY)),
            Outcome::deny("5.6.0 The Date header is too far in the past")
        );
        // Off unless set.
        let p = build(&[]).unwrap();
        assert_eq!(check(&*p, &with(-300 * DAY)), Outcome::Declined);
        let p = build(&["past", "0", "future", "0"]).unwrap();
        assert_eq!(check(&*p, &with(300 * DAY)), Outcome::Declined);
        let p = build(&["future", "2"]).unwrap();
        assert_eq!(check(&*p, &with(-300 * DAY)), Outcome::Declined);
        // Unparseable: logged, not judged.
        let p = build(&["future", "1", "past", "1"]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        let m = msg(&format!("{GOOD}Date: Fri Nov 21 09:55:06 1997\r\n"));
        assert_eq!(run(p.data_post(&mut c, &mut txn(&m))), Outcome::Declined);
        assert!(svc.logged("skip, date not parseable"), "{:?}", svc.logs);
        // A folded Date with a comment is read.
        let m = msg(&format!(
            "{GOOD}Date: Fri, 21 Nov 1997\r\n 09:55:06 -0600 (CST)\r\n"
        ));
        assert!(check(&*p, &m).is_deny());
    }

    #[test]
    fn date_failure_comes_first() {
        let p = build(&["past", "1"]).unwrap();
        let m = msg("Date: 1 Jan 2000 00:00 +0000\r\nSubject: a\r\nSubject: b\r\n");
        assert_eq!(
            check(&*p, &m),
            Outcome::deny("5.6.0 The Date header is too far in the past")
        );
    }

    #[test]
    fn empty_message_and_malformed_lines() {
        let p = build(&[]).unwrap();
        assert_eq!(
            check(&*p, ""),
            Outcome::deny("5.6.0 You must send some data first")
        );
        let (mut c, svc) = cx("192.0.2.1:1");
        let m = msg("From a@x Sat Jan  1 00:00:00 2000\r\nFrom: a@x\r\n");
        assert_eq!(run(p.data_post(&mut c, &mut txn(&m))), Outcome::Declined);
        assert!(
            svc.logged("ignored: line 1: not a header field"),
            "{:?}",
            svc.logs
        );
    }

    #[test]
    fn immune_clients_and_common_args() {
        let p = build(&[]).unwrap();
        let bad = msg("To: b\r\n");
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.relay_client = true;
        assert_eq!(run(p.data_post(&mut c, &mut txn(&bad))), Outcome::Declined);
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = txn(&bad);
        t.notes.set(WhitelistSender("x".into()));
        assert_eq!(run(p.data_post(&mut c, &mut t)), Outcome::Declined);

        let forms = testing::reject_forms(new, "headers", &[], |p, c| {
            run(p.data_post(c, &mut txn(&bad)))
        });
        assert!(matches!(forms.temp, Outcome::DenySoft(_)));
        assert_eq!(forms.log_only, Outcome::Declined);
        assert_eq!(forms.naughty, Outcome::Declined);
        assert!(forms.naughty_msg.is_some());
    }

    #[test]
    fn bad_arguments() {
        assert_bad_args(
            new,
            "headers",
            &[
                &["require"][..],
                &["require", "From,,Date"],
                &["require", "Fr om"],
                &["require", "From:"],
                &["future", "-1"],
                &["past", "1.5"],
                &["past", "x"],
                &["bogus", "1"],
                &["reject_type", "never"],
            ],
        );
    }
}
