//! `ringsmtpd karma`, qpsmtpd's `karma_tool`: what the command does with karma's records,
//! without the store (the binary's `src/karma_tool.rs` opens it and sends these batches).

use std::net::IpAddr;
use std::time::Duration;

use ringsmtpd_plugin_api::store::{Batch, Replies};

use super::record::{self, Keys, Record, Slots};
use super::Settings;

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Every IP the store knows (the embedded store only).
    List,
    Show(IpAddr),
    /// Into the penalty box, for `days` (default: the karma line's `penalty_days`).
    Capture(IpAddr, Option<f64>),
    Release(IpAddr),
}

/// The command words after `ringsmtpd karma` (options such as `--config` taken out).
pub fn parse_command(words: &[&str]) -> Result<Command, String> {
    let ip = |w: &str| {
        w.parse::<IpAddr>()
            .map_err(|_| format!("not an IP address: '{}'", w.escape_debug()))
    };
    Ok(match words {
        ["list"] => Command::List,
        ["show" | "search", w] => Command::Show(ip(w)?),
        ["capture", w] => Command::Capture(ip(w)?, None),
        ["capture", w, days] => match days.parse::<f64>() {
            Ok(d) if d > 0.0 && d <= 3650.0 => Command::Capture(ip(w)?, Some(d)),
            _ => {
                return Err(format!(
                    "DAYS must be above 0 (up to 3650), not '{}'",
                    days.escape_debug()
                ))
            }
        },
        ["release", w] => Command::Release(ip(w)?),
        _ => return Err("expected list, show IP, capture IP [DAYS] or release IP".into()),
    })
}

/// `penalty_days` and `history_days` from the karma line's arguments (the defaults without
/// one); other arguments are the plugin's business.
pub fn durations(args: &[String]) -> Result<(f64, Duration), String> {
    let mut s = Settings::default();
    for pair in args.chunks(2) {
        if let [key, value] = pair {
            if matches!(key.as_str(), "penalty_days" | "history_days") {
                s.apply(key, value).unwrap_or(Ok(()))?;
            }
        }
    }
    Ok((s.penalty_days, s.history))
}

/// One IP's keys, and its record read back after the command's writes.
pub struct Request {
    pub batch: Batch,
    slots: Slots,
}

impl Request {
    /// The batch for `show`, `capture` or `release` of `ip` (`None` for `list`); `now` in
    /// Unix seconds.
    pub fn new(cmd: &Command, now: u64, penalty_days: f64, keep: Duration) -> Option<Request> {
        let (ip, mut batch) = match *cmd {
            Command::List => return None,
            Command::Show(ip) => (ip, Batch::new()),
            Command::Capture(ip, days) => {
                let secs = (days.unwrap_or(penalty_days) * 86_400.0) as u64;
                let keys = Keys::new(ip).ok()?;
                (
                    ip,
                    record::capture(&keys, now, now.saturating_add(secs), keep),
                )
            }
            Command::Release(ip) => (ip, record::release(&Keys::new(ip).ok()?)),
        };
        let slots = Record::read(&mut batch, &Keys::new(ip).ok()?);
        Some(Request { batch, slots })
    }

    /// The record in the replies.
    pub fn record(&self, r: &Replies) -> Record {
        Record::from_replies(r, self.slots)
    }
}

/// The table's first line.
pub const HEADER: &str = "IP address                               penalty box until                naughty  nice  connects";

/// One line of the table; `date` writes the end of a penalty box (Unix seconds).
pub fn row(ip: &str, rec: &Record, now: u64, date: impl Fn(u64) -> String) -> String {
    let until = match (rec.penalty_left(now), rec.penalty_until) {
        (Some(_), Some(until)) => date(until),
        _ => "-".into(),
    };
    format!(
        "{ip:<40} {until:<32} {:>7} {:>5} {:>9}",
        rec.naughty, rec.nice, rec.connects
    )
}

/// Groups stored entries into one record per IP (for `list`), sorted by IP.
pub fn records<'a>(
    entries: impl IntoIterator<Item = (&'a ringsmtpd_plugin_api::store::Key, &'a [u8])>,
) -> Vec<(String, Record)> {
    let mut by_ip = std::collections::BTreeMap::<String, Record>::new();
    for (key, value) in entries {
        if let Some((ip, field)) = record::parse_key(key) {
            by_ip.entry(ip).or_default().set_field(field, value);
        }
    }
    by_ip.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::store::{Key, Table};

    #[test]
    fn commands_and_their_batches() {
        assert_eq!(parse_command(&["list"]), Ok(Command::List));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            parse_command(&["capture", "192.0.2.7"]),
            Ok(Command::Capture(ip, None))
        );
        assert_eq!(
            parse_command(&["capture", "192.0.2.7", "0.5"]),
            Ok(Command::Capture(ip, Some(0.5)))
        );
        for bad in [
            &["show"][..],
            &["show", "a\r\nb"],
            &["capture", "192.0.2.7", "-1"],
            &["prune"],
            &[],
        ] {
            assert!(parse_command(bad).is_err(), "{bad:?}");
        }
        let args: Vec<String> = [
            "reject",
            "connect",
            "penalty_days",
            "2",
            "history_days",
            "9",
        ]
        .map(String::from)
        .into();
        assert_eq!(durations(&args), Ok((2.0, Duration::from_secs(9 * 86_400))));
        assert!(durations(&["penalty_days".into(), "soon".into()]).is_err());

        let mut t = Table::new(100);
        let keep = Duration::from_secs(86_400);
        let now = 1_700_000_000;
        let capture = Request::new(&Command::Capture(ip, None), now, 2.0, keep).unwrap();
        let rec = capture.record(&t.apply(&capture.batch, now * 1000).unwrap());
        assert_eq!(
            (rec.naughty, rec.penalty_until),
            (1, Some(now + 2 * 86_400))
        );
        assert!(row("192.0.2.7", &rec, now, |t| format!("<{t}>")).contains(" <1700172800> "));
        let entries: Vec<(Key, Vec<u8>)> = t
            .live_entries(now * 1000)
            .into_iter()
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect();
        let listed = records(entries.iter().map(|(k, v)| (k, v.as_slice())));
        assert_eq!(listed, vec![("192.0.2.7".to_string(), rec)]);
        let release = Request::new(&Command::Release(ip), now, 2.0, keep).unwrap();
        let rec = release.record(&t.apply(&release.batch, now * 1000).unwrap());
        assert_eq!(rec, Record::default());
        assert!(row("192.0.2.7", &rec, now, |_| unreachable!()).contains(" - "));
        assert!(Request::new(&Command::List, now, 2.0, keep).is_none());
    }
}
