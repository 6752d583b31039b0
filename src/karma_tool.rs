//! `ringsmtpd karma`: qpsmtpd's `karma_tool` against the configured state store. The command
//! words and karma's records are the plugin's (`ringsmtpd_plugins::karma::tool`); this file
//! opens the store.
//!
//! - Redis (config `state_store`): live, while servers run; the batch goes over a
//!   short-lived monoio runtime with the servers' own Redis client. `list` needs a scan the
//!   store API does not have: it says how to list with `redis-cli`.
//! - The embedded store: its file is owned by a running server's store thread, which would
//!   undo an edit at its next save. The command takes the store directory's lock
//!   exclusively (servers hold it shared) and refuses while a server runs; otherwise it
//!   reads the files, applies the batch and saves a new snapshot (`embedded::edit`).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringsmtpd_plugin_api::store::{unix_ms, Batch, Replies};
use ringsmtpd_plugins::karma::tool::{self, Command, Request};

use crate::config::{plugin_lines, ConfigDir};
use crate::store::embedded;
use crate::store::StoreConfig;

/// The command line after `karma`: the command and the config directory (a bad command line
/// exits 2, as the server's).
pub fn parse(args: &[String]) -> Result<(Command, PathBuf), String> {
    let mut config =
        std::env::var_os("QPSMTPD_CONFIG").map_or_else(|| PathBuf::from("config"), PathBuf::from);
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" | "-c" => config = it.next().ok_or("--config needs a value")?.into(),
            w => words.push(w),
        }
    }
    Ok((tool::parse_command(&words)?, config))
}

/// Runs `cmd` on the store `config` names; the text to print, or why not.
pub fn run(cmd: &Command, config: &std::path::Path) -> Result<String, String> {
    let cfg = ConfigDir::new(config);
    let store = StoreConfig::load(&cfg).map_err(|e| e.to_string())?;
    let karma_args = plugin_lines(&cfg, "plugins")
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|l| l.base_name() == "karma")
        .map(|l| l.args)
        .unwrap_or_default();
    let (penalty_days, keep) = tool::durations(&karma_args).map_err(|e| format!("karma: {e}"))?;
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let request = Request::new(cmd, secs, penalty_days, keep);
    let mut out = format!("{}\n", tool::HEADER);
    match (&store, request) {
        (StoreConfig::Embedded { dir, max_entries }, request) => {
            if matches!(cmd, Command::Capture(..)) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("state store {}: {e}", dir.display()))?;
            }
            if !dir.is_dir() {
                return Err(format!(
                    "no state store in {} (config state_store): nothing recorded yet",
                    dir.display()
                ));
            }
            let ms = unix_ms(now);
            let is_list = request.is_none();
            let rows = embedded::edit(dir, *max_entries, |table| {
                let Some(request) = request else {
                    let entries = table.live_entries(ms);
                    let listed = entries.iter().map(|(k, e)| (*k, e.value.as_slice()));
                    return Ok(tool::records(listed)
                        .into_iter()
                        .map(|(ip, rec)| tool::row(&ip, &rec, secs, date) + "\n")
                        .collect::<String>());
                };
                let replies = table.apply(&request.batch, ms).map_err(|e| e.to_string())?;
                Ok(tool::row(
                    &ip_of(cmd),
                    &request.record(&replies),
                    secs,
                    date,
                ))
            })?;
            out.push_str(&rows);
            if is_list {
                return Ok(out);
            }
        }
        (StoreConfig::Redis(_), None) => {
            return Err(
                "list needs the embedded store; with Redis list the keys with \
                        redis-cli --scan --pattern '5:karma*' and show each IP"
                    .into(),
            )
        }
        (StoreConfig::Redis(redis), Some(mut request)) => {
            let replies = redis_batch(redis.clone(), std::mem::take(&mut request.batch))?;
            out.push_str(&tool::row(
                &ip_of(cmd),
                &request.record(&replies),
                secs,
                date,
            ));
        }
    }
    out.push('\n');
    Ok(out)
}

/// The end of a penalty box in local time, as karma_tool printed it.
fn date(secs: u64) -> String {
    let mut out = String::new();
    crate::session::headers::rfc5322_date(&mut out, UNIX_EPOCH + Duration::from_secs(secs));
    out
}

fn ip_of(cmd: &Command) -> String {
    match cmd {
        Command::Show(ip) | Command::Capture(ip, _) | Command::Release(ip) => {
            ip.to_canonical().to_string()
        }
        Command::List => String::new(),
    }
}

/// One batch to Redis, on a runtime of its own (the command is not a worker), within the
/// `timeout` of `state_store`, as the servers' batches.
fn redis_batch(cfg: crate::store::RedisConfig, batch: Batch) -> Result<Replies, String> {
    crate::runtime::run_on(crate::runtime::Driver::Epoll, move || {
        crate::store::Redis::new(cfg).send(batch)
    })
    .map_err(|e| format!("runtime: {e}"))?
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Embedded;
    use ringsmtpd_plugin_api::testing::TempDir;

    fn karma(dir: &TempDir, words: &[&str]) -> Result<String, String> {
        let mut args = vec!["--config".to_string(), dir.path().display().to_string()];
        args.extend(words.iter().map(|w| w.to_string()));
        let (cmd, config) = parse(&args)?;
        run(&cmd, &config)
    }

    #[test]
    fn capture_show_release_on_the_embedded_store_and_never_under_a_server() {
        let dir = TempDir::new("karma-tool");
        let state = dir.path().join("state");
        std::fs::write(
            dir.path().join("state_store"),
            format!("embedded dir {}\n", state.display()),
        )
        .unwrap();
        std::fs::write(dir.path().join("plugins"), "karma penalty_days 2\n").unwrap();
        let none = karma(&dir, &["show", "192.0.2.7"]).unwrap_err();
        assert!(none.contains("nothing recorded yet"), "{none}");

        let server = Embedded::open(&state, 100).unwrap();
        let refused = karma(&dir, &["capture", "192.0.2.7"]).unwrap_err();
        assert!(refused.contains("a running ringsmtpd"), "{refused}");
        server.close(Duration::from_secs(10));

        let out = karma(&dir, &["capture", "192.0.2.7"]).unwrap();
        let row = out.lines().nth(1).unwrap();
        assert!(row.starts_with("192.0.2.7 "), "{out}");
        // the end of the box as an RFC 5322 date: `Sat, 21 Nov 2026 05:23:55 +0000`
        assert_eq!(row.matches(':').count(), 2, "{out}");
        assert!(row.ends_with("1     0         0"), "{out}");
        // the server's store reads it back: the penalty ends in two days
        let (_, table) = embedded::load(&state, 100).unwrap();
        let ms = unix_ms(SystemTime::now());
        let until = table
            .live_entries(ms)
            .iter()
            .find(|(k, _)| k.parts_in("karma").is_some_and(|p| p[1] == b"penalty"))
            .and_then(|(_, e)| e.expires)
            .unwrap();
        assert!(
            (until - ms).abs_diff(2 * 86_400_000) < 60_000,
            "{until} {ms}"
        );

        let listed = karma(&dir, &["list"]).unwrap();
        assert_eq!(listed.lines().count(), 2, "{listed}");
        let out = karma(&dir, &["release", "::ffff:192.0.2.7"]).unwrap();
        assert!(out.lines().nth(1).unwrap().contains(" - "), "{out}");
        assert!(karma(&dir, &["show", "192.0.2.7"]).unwrap().contains(" - "));
        assert!(karma(&dir, &["prune"]).is_err());
    }
}
