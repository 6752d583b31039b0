//! # loadcheck — refuse connections while the system load is too high
//!
//! ## Synopsis
//!
//! ```text
//! loadcheck [max_load 7] [cache_time 10] [uptime /usr/bin/uptime] [loadavg /proc/loadavg]
//!           [reject 0|1|naughty] [reject_type temp|perm|...] [loglevel N]
//! loadcheck max_load 12 cache_time 30
//! ```
//!
//! ## Description
//!
//! At `connect`, compares the system's 1-minute load average with `max_load`. Above it, the
//! client is refused before the banner:
//!
//! ```text
//! 450 4.3.2 Server load too high, please try again later.
//! ```
//!
//! and disconnected (the `connect` reply table closes after any refusal); the sender retries
//! later. At or below it, the plugin declines and the session goes on.
//!
//! The load comes from `/proc/loadavg` (Linux) when it is readable when the plugin is built,
//! otherwise from the output of the `uptime` program (`load average: 0.05, ...` or BSD's
//! `load averages: ...`; a decimal comma is understood). If neither works the configuration is
//! refused (qpsmtpd logs an error and silently checks nothing).
//!
//! **Reading never happens on the worker thread.** A value is kept for `cache_time` seconds.
//! When it is older, the next connection starts a refresh on the blocking thread pool and is
//! itself judged by the old value, as are the connections that arrive while the refresh
//! runs; the new value serves the connections after it. Only the very first connection a
//! worker sees waits for the read (there is no old value to judge it by); if that read is
//! still under way when another connection arrives, that one is let through. So neither a
//! slow `uptime` nor a procfs read ever stalls a core, and at most one read per worker is in
//! flight.
//!
//! If a read fails (the file vanished, `uptime` printed nothing usable), the error is logged
//! at the next connection, the old value (if any) stays in use, and the next read is tried
//! `cache_time` seconds later. With no value at all, connections are accepted: a broken
//! measurement never refuses mail.
//!
//! Each worker has its own instance and cache: with `cache_time` 10 and 8 workers, at most
//! 8 reads in 10 seconds.
//!
//! ## Arguments
//!
//! Named arguments (`key value` pairs), as in qpsmtpd:
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `max_load` | `7` | refuse when the 1-minute load is **above** this (a positive decimal number) |
//! | `cache_time` | `10` | seconds a measured value is used (a non-negative integer; `0`: refresh at every connection, still in the background) |
//! | `uptime` | `/usr/bin/uptime` | the program run when `loadavg` is not readable |
//! | `loadavg` | `/proc/loadavg` | ringsmtpd only: the file whose first field is the load (for tests and chroots) |
//! | `reject 0\|1\|naughty` | `1` | `0`: log only; `naughty`: mark the connection instead |
//! | `reject_type` | `temp` | `temp` 450 (qpsmtpd's `DENYSOFT`), `perm` 550, ... (at `connect` all of them disconnect) |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `connect`.
//!
//! ## Notes
//!
//! Writes `Naughty` with `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §3.1 (a server may refuse a connection at the greeting), §4.2.5 and §4.5.4.1
//! (a 4xx is temporary: the client retries later); RFC 3463 §3.4 (X.3.2, system not accepting
//! network messages).
//!
//! ## Security
//!
//! The `uptime` path is run without a shell and without arguments; it comes from the
//! administrator's config only. Nothing from the network reaches the read.

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringsmtpd_plugin_api::{
    blocking, Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, RejectType, Step,
};

const DEFAULT_MAX_LOAD: f64 = 7.0;
const DEFAULT_CACHE_SECS: u64 = 10;
const DEFAULT_UPTIME: &str = "/usr/bin/uptime";
const DEFAULT_LOADAVG: &str = "/proc/loadavg";

/// Where the load comes from, chosen when the plugin is built.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A file whose first field is the 1-minute load (`/proc/loadavg`).
    File(PathBuf),
    /// A program printing `... load average: X, Y, Z` (`uptime`).
    Program(PathBuf),
}

/// The last measurement, shared with the refresh job on the blocking pool.
#[derive(Debug, Default)]
struct Cache {
    load: Option<f64>,
    /// When the last read (successful or not) finished.
    read_at: Option<Instant>,
    /// A read is under way.
    refreshing: bool,
    /// The error of the last read, not logged yet.
    error: Option<String>,
}

/// The `loadcheck` plugin.
pub struct LoadCheck {
    common: Common,
    max_load: f64,
    cache_time: Duration,
    source: Source,
    cache: Arc<Mutex<Cache>>,
}

/// Builds `loadcheck` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<LoadCheck, ConfigError> {
    let (common, rest) = init.common(CommonArgs {
        reject_type: RejectType::Temp,
        ..CommonArgs::DEFAULT
    })?;
    let mut max_load = DEFAULT_MAX_LOAD;
    let mut cache_secs = DEFAULT_CACHE_SECS;
    let mut uptime = PathBuf::from(DEFAULT_UPTIME);
    let mut loadavg = PathBuf::from(DEFAULT_LOADAVG);
    let mut it = rest.iter();
    while let Some(key) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| init.error(format!("argument '{key}' needs a value")))?;
        match *key {
            "max_load" => {
                max_load = match value.parse::<f64>() {
                    Ok(v) if v.is_finite() && v > 0.0 => v,
                    _ => {
                        return Err(init
                            .error(format!("max_load must be a positive number, not '{value}'")))
                    }
                }
            }
            "cache_time" => {
                cache_secs = value.parse::<u64>().map_err(|_| {
                    init.error(format!(
                        "cache_time must be a whole number of seconds, not '{value}'"
                    ))
                })?
            }
            "uptime" => uptime = PathBuf::from(value),
            "loadavg" => loadavg = PathBuf::from(value),
            other => return Err(init.unknown(other)),
        }
    }
    // Chosen once, as qpsmtpd's get_load_method: the file if it is there, else the program.
    let source = if std::fs::File::open(&loadavg).is_ok() {
        Source::File(loadavg)
    } else if is_executable(&uptime) {
        Source::Program(uptime)
    } else {
        return Err(init.error(format!(
            "cannot measure the load: {} is not readable and {} is not an executable file",
            loadavg.display(),
            uptime.display()
        )));
    };
    Ok(LoadCheck {
        common,
        max_load,
        cache_time: Duration::from_secs(cache_secs),
        source,
        cache: Arc::new(Mutex::new(Cache::default())),
    })
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The cache, even if a job panicked while holding it (the data is still consistent: every
/// write is a plain store).
fn lock(cache: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads the load. Blocking: runs on the thread pool only.
fn read_load(source: &Source) -> Result<f64, String> {
    match source {
        Source::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let first = text.split_whitespace().next().unwrap_or("");
            first
                .parse::<f64>()
                .ok()
                .filter(|l| l.is_finite() && *l >= 0.0)
                .ok_or_else(|| format!("{}: '{first}' is not a load", path.display()))
        }
        Source::Program(path) => {
            let out = Command::new(path)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
            let text = String::from_utf8_lossy(&out.stdout);
            parse_uptime(&text).ok_or_else(|| {
                format!(
                    "{} printed no load average: '{}'",
                    path.display(),
                    text.trim()
                )
            })
        }
    }
}

/// The 1-minute load from `uptime` output: the number after `average:` / `averages:`.
fn parse_uptime(text: &str) -> Option<f64> {
    let at = text.find("average")?;
    let after = &text[at..];
    let after = after[after.find(':')? + 1..].trim_start();
    let number: String = after
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .collect();
    // "0.05," or, in a locale with a decimal comma, "0,05,".
    let number = number.trim_end_matches(',').replace(',', ".");
    number.parse::<f64>().ok().filter(|l| l.is_finite())
}

/// The job that refreshes `cache`; it stores its result itself, so it completes the refresh
/// even if nobody waits for it any more.
fn refresh_job(cache: Arc<Mutex<Cache>>, source: Source) -> impl FnOnce() + Send + 'static {
    move || {
        let result = read_load(&source);
        let mut c = lock(&cache);
        c.refreshing = false;
        c.read_at = Some(Instant::now());
        match result {
            Ok(load) => c.load = Some(load),
            Err(e) => c.error = Some(e),
        }
    }
}

impl LoadCheck {
    /// Judges the connection by `load` (`None`: unknown, accepted).
    fn decide(&self, cx: &mut Cx, load: Option<f64>, error: Option<String>) -> Outcome {
        if let Some(e) = error {
            self.common.log(
                cx,
                Level::Error,
                format_args!("unable to acquire system load: {e}"),
            );
        }
        match load {
            Some(load) if load > self.max_load => {
                self.common.log(
                    cx,
                    Level::Error,
                    format_args!("local load too high: {load}"),
                );
                let text: Cow<'static, str> = match self.common.args.reject_type {
                    RejectType::Temp | RejectType::TempDisconnect => {
                        "4.3.2 Server load too high, please try again later.".into()
                    }
                    RejectType::Perm | RejectType::Disconnect => {
                        "5.3.2 Server load too high, please try again later.".into()
                    }
                };
                self.common.reject(cx, text)
            }
            Some(load) => {
                self.common
                    .log(cx, Level::Debug, format_args!("pass, load {load}"));
                Outcome::Declined
            }
            None => {
                self.common
                    .log(cx, Level::Info, format_args!("skip, load not known yet"));
                Outcome::Declined
            }
        }
    }
}

impl Plugin for LoadCheck {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Connect])
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let (load, error, start) = {
            let mut c = lock(&self.cache);
            let expired = c.read_at.is_none_or(|at| at.elapsed() > self.cache_time);
            let start = expired && !c.refreshing;
            if start {
                c.refreshing = true;
            }
            (c.load, c.error.take(), start)
        };
        if !start {
            return Step::Ready(self.decide(cx, load, error));
        }
        let job = refresh_job(self.cache.clone(), self.source.clone());
        if load.is_some() {
            // Judged by the old value; the new one serves the next connections.
            cx.svc.spawn_blocking(Box::new(job));
            return Step::Ready(self.decide(cx, load, error));
        }
        // The first measurement on this worker: wait for it (off the worker thread).
        Step::pending(async move {
            let svc = cx.svc.clone();
            blocking(&*svc, job).await;
            let (load, new_error) = {
                let mut c = lock(&self.cache);
                (c.load, c.error.take())
            };
            self.decide(cx, load, error.or(new_error))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, assert_bad_args, cx, run, TempDir};
    use std::os::unix::fs::PermissionsExt;

    /// An executable `name` in `d` that prints `output`.
    fn script(d: &TempDir, name: &str, output: &str) -> String {
        let path = d.write(name, format!("#!/bin/sh\necho '{output}'\n"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn plugin(args: &[&str]) -> Result<LoadCheck, ConfigError> {
        testing::build(build, &format!("loadcheck {}", args.join(" ")), &[])
    }

    fn connect(p: &LoadCheck) -> Outcome {
        let (mut c, _) = cx("192.0.2.1:1");
        run(p.connect(&mut c))
    }

    fn wait_for_refresh(p: &LoadCheck) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&p.cache).refreshing {
            assert!(Instant::now() < deadline, "refresh never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn above_max_load_is_refused_at_connect() {
        let d = TempDir::new("loadcheck-above");
        let avg = d.write("loadavg", "8.50 3.00 1.00 2/300 4242\n");
        let p = plugin(&["loadavg", &avg]).unwrap();
        assert_eq!(
            connect(&p),
            Outcome::deny_soft("4.3.2 Server load too high, please try again later.")
        );
        let p = plugin(&["loadavg", &avg, "max_load", "8.5"]).unwrap();
        assert_eq!(connect(&p), Outcome::Declined, "at max_load is accepted");
        let p = plugin(&["loadavg", &avg, "max_load", "9"]).unwrap();
        assert_eq!(connect(&p), Outcome::Declined);
        let p = plugin(&["loadavg", &avg, "reject_type", "perm"]).unwrap();
        assert_eq!(
            connect(&p),
            Outcome::deny("5.3.2 Server load too high, please try again later.")
        );
        let p = plugin(&["loadavg", &avg, "reject", "0"]).unwrap();
        assert_eq!(connect(&p), Outcome::Declined);
    }

    #[test]
    fn cached_value_serves_until_cache_time_then_refreshes_in_background() {
        let d = TempDir::new("loadcheck-cache");
        let avg = d.write("loadavg", "0.10 0 0\n");
        let p = plugin(&["loadavg", &avg]).unwrap();
        assert_eq!(connect(&p), Outcome::Declined);
        d.write("loadavg", "50 0 0\n");
        // Within cache_time (10 s): the old value, no new read started.
        assert_eq!(connect(&p), Outcome::Declined);
        assert!(!lock(&p.cache).refreshing);

        let p = plugin(&["loadavg", &avg, "cache_time", "0"]).unwrap();
        d.write("loadavg", "0.10 0 0\n");
        assert_eq!(connect(&p), Outcome::Declined);
        d.write("loadavg", "50 0 0\n");
        std::thread::sleep(Duration::from_millis(2));
        // Expired: this connection is judged by the old value while the new one is read.
        assert_eq!(connect(&p), Outcome::Declined);
        wait_for_refresh(&p);
        assert_eq!(lock(&p.cache).load, Some(50.0));
        assert!(matches!(connect(&p), Outcome::DenySoft(_)));
    }

    #[test]
    fn uptime_program_when_no_loadavg() {
        let d = TempDir::new("loadcheck-uptime");
        let missing = d.join("nope");
        let up = script(
            &d,
            "uptime",
            "12:30am  up 5 days, 12:43,  1 user,  load average: 9.00, 0.00, 0.00",
        );
        let p = plugin(&["loadavg", &missing, "uptime", &up]).unwrap();
        assert_eq!(p.source, Source::Program(PathBuf::from(&up)));
        assert!(matches!(connect(&p), Outcome::DenySoft(_)));
        let bsd = script(
            &d,
            "bsd",
            "10:33AM  up  2:06, 1 user, load averages: 6.55, 3.76, 2.48",
        );
        let p = plugin(&["loadavg", &missing, "uptime", &bsd]).unwrap();
        assert_eq!(connect(&p), Outcome::Declined);
        assert_eq!(lock(&p.cache).load, Some(6.55));
    }

    #[test]
    fn uptime_output_forms() {
        assert_eq!(
            parse_uptime(" 12:29am  2 users,  load average: 0.05, 0.05, 0.06"),
            Some(0.05)
        );
        assert_eq!(
            parse_uptime("10:33AM  up  2:06, 1 user, load averages: 6.55, 3.76, 2.48"),
            Some(6.55)
        );
        assert_eq!(
            parse_uptime("12:00 up 1 day,  load average: 12,50, 1,00, 0,50"),
            Some(12.5)
        );
        assert_eq!(parse_uptime("no load here"), None);
        assert_eq!(parse_uptime("load average: x"), None);
    }

    #[test]
    fn a_failed_read_is_logged_and_accepts() {
        let d = TempDir::new("loadcheck-fail");
        let avg = d.write("loadavg", "garbage\n");
        let p = plugin(&["loadavg", &avg]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        assert!(
            svc.logged("unable to acquire system load"),
            "{:?}",
            svc.logs
        );
        assert!(svc.logged("'garbage' is not a load"));
    }

    #[test]
    fn bad_arguments() {
        let d = TempDir::new("loadcheck-args");
        let avg = d.write("loadavg", "1 1 1\n");
        let missing = d.join("nope");
        let not_exec = d.write("plain", "x");
        let bad = [
            &["loadavg", &avg, "max_load"][..],
            &["loadavg", &avg, "max_load", "x"],
            &["loadavg", &avg, "max_load", "0"],
            &["loadavg", &avg, "max_load", "-1"],
            &["loadavg", &avg, "cache_time", "1.5"],
            &["loadavg", &avg, "cache_time", "-1"],
            &["loadavg", &avg, "bogus", "1"],
            &["loadavg", &missing, "uptime", &missing],
            &["loadavg", &missing, "uptime", &not_exec],
        ];
        assert_bad_args(build, "loadcheck", &bad);
        let p = plugin(&["loadavg", &avg, "max_load", "2.5", "cache_time", "0"]).unwrap();
        assert_eq!((p.max_load, p.cache_time), (2.5, Duration::ZERO));
    }
}
