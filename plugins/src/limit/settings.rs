//! The `limit` plugin's settings: `key value` pairs from the plugin line and the config file
//! `limit`, and the `N/PERIOD` form of a rate.

use ringsmtpd_plugin_api::args::parse_flag;

/// The longest window of a rate, and of `concurrency_ttl`: 30 days.
const MAX_PERIOD: u64 = 30 * 86_400;
/// The largest count a limit may name (far above any real limit; keeps the sliding estimate's
/// arithmetic far from overflow).
const MAX_COUNT: u64 = 1_000_000_000;

/// At most `max` events per `period` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rate {
    pub max: u64,
    pub period: u64,
}

impl Rate {
    /// `N` (per minute) or `N/PERIOD`, the period in seconds or with a unit `s`, `m`, `h`,
    /// `d` (`50/5m`); `0` turns the limit off (`None`).
    pub fn parse(key: &str, value: &str) -> Result<Option<Rate>, String> {
        let bad = || format!("{key} must be N or N/PERIOD (50/5m, 1000/1h), not '{value}'");
        let (n, period) = value.split_once('/').unwrap_or((value, "60"));
        let max = count(n).ok_or_else(bad)?;
        let (digits, unit) = match period.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => period.split_at(i),
            None => (period, "s"),
        };
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let period = digits
            .parse::<u64>()
            .ok()
            .and_then(|p| p.checked_mul(scale))
            .filter(|p| (1..=MAX_PERIOD).contains(p))
            .ok_or_else(bad)?;
        Ok((max > 0).then_some(Rate { max, period }))
    }
}

/// A decimal count up to [`MAX_COUNT`] (digits only: no sign, no spaces).
fn count(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().filter(|n| *n <= MAX_COUNT)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settings {
    /// Connections open at once per client (0: off).
    pub concurrency: u64,
    /// Seconds a connection stays counted at least (and at most twice that).
    pub concurrency_ttl: u64,
    pub rate_conn: Option<Rate>,
    /// Recipients attempted per connection (0: off).
    pub recipients: u64,
    /// Recipients per message (0: off).
    pub message_recipients: u64,
    pub rate_msg_host: Option<Rate>,
    pub rate_msg_sender: Option<Rate>,
    pub rate_rcpt_host: Option<Rate>,
    pub rate_rcpt_sender: Option<Rate>,
    /// Relay clients and whitelisted hosts and senders skip every limit.
    pub exempt_immune: bool,
    /// IPv6 clients are counted per network of this many bits.
    pub ipv6_prefix: u8,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            concurrency: 0,
            concurrency_ttl: 600,
            rate_conn: None,
            recipients: 0,
            message_recipients: 0,
            rate_msg_host: None,
            rate_msg_sender: None,
            rate_rcpt_host: None,
            rate_rcpt_sender: None,
            exempt_immune: true,
            ipv6_prefix: 64,
        }
    }
}

impl Settings {
    /// Applies one `key value` setting (from the plugin line or the config file `limit`).
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        let number = |v: &str| count(v).ok_or_else(|| format!("{key} must be a number, not '{v}'"));
        match key {
            "concurrency" => self.concurrency = number(value)?,
            "concurrency_ttl" => {
                self.concurrency_ttl = number(value)
                    .ok()
                    .filter(|s| (60..=MAX_PERIOD).contains(s))
                    .ok_or_else(|| {
                        format!("concurrency_ttl must be 60 to {MAX_PERIOD} seconds, not '{value}'")
                    })?
            }
            "rate_conn" => self.rate_conn = Rate::parse(key, value)?,
            "recipients" => self.recipients = number(value)?,
            "message_recipients" => self.message_recipients = number(value)?,
            "rate_msg_host" => self.rate_msg_host = Rate::parse(key, value)?,
            "rate_msg_sender" => self.rate_msg_sender = Rate::parse(key, value)?,
            "rate_rcpt_host" => self.rate_rcpt_host = Rate::parse(key, value)?,
            "rate_rcpt_sender" => self.rate_rcpt_sender = Rate::parse(key, value)?,
            "exempt_immune" => self.exempt_immune = parse_flag(key, value)?,
            "ipv6_prefix" => {
                self.ipv6_prefix = value
                    .parse::<u8>()
                    .ok()
                    .filter(|n| (1..=128).contains(n))
                    .ok_or_else(|| format!("ipv6_prefix must be 1 to 128, not '{value}'"))?
            }
            _ => return Err(format!("unknown argument '{key}'")),
        }
        Ok(())
    }

    /// True if some limit is on.
    pub fn any(&self) -> bool {
        self.connect_limits() || self.mail_limits() || self.rcpt_limits()
    }

    pub fn connect_limits(&self) -> bool {
        self.concurrency > 0 || self.rate_conn.is_some()
    }

    pub fn mail_limits(&self) -> bool {
        self.rate_msg_host.is_some() || self.rate_msg_sender.is_some()
    }

    pub fn rcpt_limits(&self) -> bool {
        self.recipients > 0
            || self.message_recipients > 0
            || self.rate_rcpt_host.is_some()
            || self.rate_rcpt_sender.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_zero_is_off() {
        let r = |v| Rate::parse("rate_rcpt_host", v);
        assert_eq!(
            r("50/5m"),
            Ok(Some(Rate {
                max: 50,
                period: 300
            }))
        );
        assert_eq!(r("7"), Ok(Some(Rate { max: 7, period: 60 })));
        assert_eq!(
            r("1000/1h"),
            Ok(Some(Rate {
                max: 1000,
                period: 3600
            }))
        );
        assert_eq!(r("3/90"), Ok(Some(Rate { max: 3, period: 90 })));
        assert_eq!(
            r("2/1d"),
            Ok(Some(Rate {
                max: 2,
                period: 86_400
            }))
        );
        assert_eq!(r("0/5m"), Ok(None));
        for bad in [
            "",
            "x",
            "-1",
            "+5",
            "5/",
            "5/0",
            "5/m",
            "5/5w",
            "5/31d",
            "5/5m5",
            "1/99999999999999999999d",
            "5000000000",
        ] {
            assert!(r(bad).is_err(), "{bad}");
        }
    }
}
