//! # connection_time — log how long each connection lasted
//!
//! ## Synopsis
//!
//! ```text
//! connection_time [LEVEL]
//! connection_time [loglevel N|+N|-N]
//! connection_time            # logs "1.234 s." at info
//! connection_time LOGNOTICE  # qpsmtpd's older form: the level of the line
//! connection_time loglevel +1
//! ```
//!
//! ## Description
//!
//! Writes one line per connection when it is closed, with the time since it was accepted,
//! in seconds with millisecond precision: `0.731 s.`. The start is the moment the listener
//! accepted the connection (`conn.started`), which is also when qpsmtpd's `pre-connection`
//! hook ran, so the figure includes the banner, every plugin's time and the final QUIT.
//!
//! qpsmtpd also hooked `connect`, for its tcpserver mode where `pre-connection` never runs;
//! here every connection has a start time, so the `connect` hook is not needed.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `LEVEL` | `info` (6) | a single bare argument: the level of the duration line, as a number 0-7 or a name (`LOGINFO`, `notice`, ...), qpsmtpd's backward-compatible form |
//! | `loglevel` | | qpsmtpd's per-plugin adjustment (`+1` quieter, `-1` louder, `N` a ceiling) |
//!
//! `reject` and `reject_type` are accepted and do nothing: this plugin never refuses.
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `pre-connection` (a debug line "started"), `post-connection` (the duration). Both decline.
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! None.
//!
//! ## Security
//!
//! Nothing from the client is logged.

use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Step,
};

/// The `connection_time` plugin.
pub struct ConnectionTime {
    common: Common,
    /// The level of the duration line before `loglevel` adjusts it.
    level: Level,
}

/// Builds `connection_time` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let level = match rest.as_slice() {
        [] => Level::Info,
        [level] => Level::parse(level)
            .filter(|_| level.parse::<i32>().map_or(true, |n| (0..=7).contains(&n)))
            .ok_or_else(|| init.error(format!("'{level}' is not a log level (0-7 or a name)")))?,
        [_, extra, ..] => return Err(init.unknown(extra)),
    };
    Ok(Box::new(ConnectionTime { common, level }))
}

impl Plugin for ConnectionTime {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::PreConnection, Hook::PostConnection])
    }

    fn pre_connection<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        self.common.log(cx, Level::Debug, format_args!("started"));
        Step::DECLINED
    }

    fn post_connection<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let secs = cx.conn.started.elapsed().as_secs_f64();
        self.common
            .log(cx, self.level, format_args!("{secs:.3} s."));
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, assert_bad_args, cx, run};
    use ringsmtpd_plugin_api::Outcome;
    use std::time::{Duration, Instant};

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        testing::build(new, &format!("connection_time {}", args.join(" ")), &[])
    }

    /// The lines logged at post-connection for a connection that lasted 1.25 s.
    fn logged(args: &[&str]) -> Vec<(Level, String)> {
        let p = build(args).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        c.conn.started = Instant::now() - Duration::from_millis(1250);
        assert_eq!(run(p.post_connection(&mut c)), Outcome::Declined);
        let logs = svc.logs.borrow();
        logs.iter()
            .map(|(l, source, m)| {
                assert_eq!(source, "connection_time");
                (*l, m.clone())
            })
            .collect()
    }

    #[test]
    fn logs_duration_at_info() {
        let lines = logged(&[]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, Level::Info);
        assert!(
            lines[0].1.starts_with("1.25") && lines[0].1.ends_with(" s."),
            "{lines:?}"
        );
    }

    #[test]
    fn bare_level_argument() {
        assert_eq!(logged(&["LOGNOTICE"])[0].0, Level::Notice);
        assert_eq!(logged(&["3"])[0].0, Level::Error);
        assert_eq!(logged(&["debug"])[0].0, Level::Debug);
    }

    #[test]
    fn loglevel_adjusts() {
        assert_eq!(logged(&["loglevel", "-1"])[0].0, Level::Notice);
        assert_eq!(logged(&["loglevel", "+1"])[0].0, Level::Debug);
        assert!(logged(&["loglevel", "5"]).is_empty());
    }

    #[test]
    fn pre_connection_logs_debug() {
        let p = build(&[]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        assert_eq!(run(p.pre_connection(&mut c)), Outcome::Declined);
        assert_eq!(svc.logs.borrow()[0].0, Level::Debug);
        assert!(p.hooks().contains(Hook::PostConnection));
    }

    #[test]
    fn bad_arguments() {
        assert_bad_args(
            new,
            "connection_time",
            &[
                &["LOGNOPE"][..],
                &["9"],
                &["-1"],
                &["6", "7"],
                &["loglevel"],
            ],
        );
    }
}
