//! # virus/clamav — scan the message with ClamAV's command-line scanner
//!
//! ## Synopsis
//!
//! ```text
//! virus/clamav [/path/to/clamscan] [clamscan_path=PATH] [clamd_conf=PATH] [database=PATH]
//!              [action=add-header|reject] [max_size=BYTES] [tmp_dir=PATH] [back_compat]
//!              [declined_on_fail] [timeout=SECONDS] [max_scans=N] [defer_on_error=yes|no]
//!              [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `data_post` runs `clamscan --stdout --no-summary [--database=PATH]
//! [--config-file=PATH] FILE` (or `clamdscan`, which takes the same options and asks clamd) on
//! the message: FILE is the spool file of a spooled message, or a temporary copy of a message
//! held in memory (written and removed off the worker). The program runs on the slow helpers'
//! pool, in a process group of its own that is killed at `timeout`; at most `max_scans` run at
//! once per worker, the others wait in a queue.
//!
//! clamscan's exit code decides, as in qpsmtpd:
//!
//! | exit | meaning | outcome |
//! |---|---|---|
//! | 0 | clean | `X-Virus-Checked: Checked by ClamAV on <me>` added |
//! | 1 | virus found; its names are the `FILE: NAME FOUND` lines | `action=reject`: `552 5.7.1 Virus found: NAME`; `action=add-header` (the default): `X-Virus-Found: Yes` and `X-Virus-Details: NAME` added |
//! | 2, any other code, a signal, cannot start, past `timeout` | the scan did not happen | the error policy |
//!
//! The error policy: with `defer_on_error yes` (the default) `451 4.7.1` and the sender
//! retries; with `defer_on_error no` (or qpsmtpd's `declined_on_fail`) the message goes on
//! with `X-Virus-Checked: not scanned, virus/clamav error`. Either way a line logged at
//! `error` says why, with the first part of the program's output.
//!
//! A message over `max_size` is not scanned (logged). Every scan logs one line with its result
//! and the time spent: `pass, clean (0.081s)`, `fail, found virus Eicar-Signature (0.090s)`.
//!
//! ## Arguments
//!
//! qpsmtpd's `name=value` form; a first argument that is an absolute path is the program.
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `clamscan_path=PATH` | `/usr/bin/clamscan` | the scanner: `clamscan` or `clamdscan` |
//! | `clamd_conf=PATH` | | passed as `--config-file=PATH` (clamdscan's option; clamscan has none) |
//! | `database=PATH` | | passed as `--database=PATH` (clamscan's signature directory or file); not in qpsmtpd |
//! | `action=add-header\|reject` | `add-header` | what a virus does |
//! | `max_size=BYTES` | `524288` | larger messages are not scanned |
//! | `tmp_dir=PATH` | the system's (`$TMPDIR`, `/tmp`) | where a message held in memory is written for the scanner |
//! | `back_compat` | | accepted, no effect: it added options for ClamAV before 0.80 |
//! | `declined_on_fail` | | the same as `defer_on_error=no` |
//! | `timeout=SECONDS` | `25` | the whole scan, queueing included; the program is killed then. Keep it below `plugin_timeout` (30) |
//! | `max_scans=N` | `8` | scans in flight per worker; more wait in a queue |
//! | `defer_on_error=yes\|no` | `yes` | the error policy, above |
//! | `loglevel N` | | qpsmtpd's per-plugin log level |
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
//! The scanner reads the message as received: the header fields this server added (such as
//! `Received`) are not in the file. qpsmtpd passed the message in mbox form with the
//! `--config-file` option always set; here `--config-file` is passed only when `clamd_conf`
//! is given, since clamscan refuses it. qpsmtpd's default on a scanner failure was `DENYSOFT`
//! too, but on an unknown exit code without a virus name it let the message through; here
//! every failure goes to the error policy. For a long-running scanner prefer
//! `virus/clamdscan` (clamd keeps its database loaded; clamscan loads it for every message).
//!
//! Metrics: the core's per-plugin series (`ringsmtpd_plugin_outcomes_total{hook="data_post"}`,
//! `ringsmtpd_plugin_duration_seconds`); the kind of result is in the log line with the time
//! spent.
//!
//! ## Standards
//!
//! `clamscan(1)`: exit codes 0 (clean), 1 (virus found), 2 (error); `FILE: NAME FOUND` lines.
//!
//! ## Security
//!
//! The program's output is hostile input: only its first 16 KiB are read; a virus name keeps
//! letters, digits and `._-:/+!@# ` (anything else, control characters included, becomes
//! `?`), at most 128 characters and three names, before it reaches the reply, a header
//! (through the header API) or the log. The program gets the file's path as an argument, never
//! through a shell. A temporary copy is mode 0600 and removed after the scan.

use ringsmtpd_plugin_api::{
    CommonArgs, ConfigError, Cx, Hook, HookSet, Plugin, PluginInit, Step, Transaction,
};

use super::verdict::{viruses, Found, Marks, Product};
use crate::helpers::command_scanner::{absolute, CommandScanner, Ran};
use crate::helpers::scan_metrics::scan_metrics;
use crate::helpers::scanner::too_big;
use crate::helpers::scanner::ScannerArgs;
use crate::queue::local::output_for_log;

/// Debian's clamscan.
const DEFAULT_PROGRAM: &str = "/usr/bin/clamscan";
/// qpsmtpd's default `max_size`: 512 KiB.
const DEFAULT_MAX_SIZE: u64 = 512 * 1024;

/// The `virus/clamav` plugin.
pub struct ClamAv {
    product: Product,
    /// Options before the file.
    options: Vec<String>,
    reject: bool,
    max_size: u64,
}

/// Builds `virus/clamav` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build_plugin(init)?))
}

fn build_plugin(init: &PluginInit<'_>) -> Result<ClamAv, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut args = ScannerArgs::default();
    let mut program = DEFAULT_PROGRAM.to_string();
    let mut options = vec!["--stdout".to_string(), "--no-summary".to_string()];
    let mut reject = false;
    let mut max_size = DEFAULT_MAX_SIZE;
    let mut tmp_dir = None;
    let mut rest = rest.as_slice();
    if let Some(first) = rest
        .first()
        .filter(|a| a.starts_with('/') && !a.contains('='))
    {
        program = first.to_string();
        rest = &rest[1..];
    }
    let error = |e: String| init.error(e);
    for arg in rest {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (*arg, None),
        };
        match (key, value) {
            ("back_compat", None) => {}
            ("declined_on_fail", None) => args.defer_on_error = false,
            ("clamscan_path", Some(v)) => program = v.to_string(),
            ("clamd_conf", Some(v)) => {
                let p = absolute(v).map_err(error)?;
                options.push(format!("--config-file={}", p.display()));
            }
            ("database", Some(v)) => {
                let p = absolute(v).map_err(error)?;
                options.push(format!("--database={}", p.display()));
            }
            ("action", Some("add-header")) => reject = false,
            ("action", Some("reject")) => reject = true,
            ("action", Some(v)) => {
                return Err(init.error(format!("action must be add-header or reject, not '{v}'")))
            }
            ("max_size", Some(v)) => {
                max_size =
                    v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        init.error(format!("max_size '{v}' is not a size in bytes"))
                    })?
            }
            ("tmp_dir", Some(v)) => tmp_dir = Some(absolute(v).map_err(error)?),
            (key, Some(v)) if args.take(key, v).map_err(error)? => {}
            _ => return Err(init.unknown(arg)),
        }
    }
    let mut scanner =
        CommandScanner::new(&program, args, scan_metrics!("virus/clamav")).map_err(error)?;
    if let Some(dir) = tmp_dir {
        scanner.tmp_dir = dir;
    }
    Ok(ClamAv {
        product: Product {
            common,
            scanner,
            marks: Marks::standard("ClamAV"),
        },
        options,
        reject,
        max_size,
    })
}

impl Plugin for ClamAv {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if too_big(&self.product.common, cx, txn, self.max_size, "max_size") {
            return Step::DECLINED;
        }
        Step::pending(async move {
            let argv: Vec<&str> = self.options.iter().map(String::as_str).collect();
            let reject = self.reject;
            self.product
                .scan(cx, txn, &argv, read, move |_| reject)
                .await
        })
    }
}

/// clamscan's exit code and `FILE: NAME FOUND` lines.
fn read(ran: &Ran) -> Result<Found, String> {
    match ran.code {
        Some(0) => Ok(Found::Clean),
        Some(1) => {
            let text = ran.text();
            let names = text
                .lines()
                .filter_map(|l| l.trim_end().strip_suffix(" FOUND"))
                .map(|l| l.rsplit_once(": ").map_or(l, |(_, name)| name));
            match viruses(names) {
                Found::Clean => Ok(Found::Viruses(vec!["unnamed".into()])),
                found => Ok(found),
            }
        }
        _ => Err(format!(
            "clamscan failed ({}): {}",
            ran.how(),
            output_for_log(&ran.output)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::scanner::test_kit::reply_of;
    use crate::virus::verdict::test_kit::{scan, stand_in};
    use ringsmtpd_plugin_api::testing::{build, build_err};
    use ringsmtpd_plugin_api::Outcome;

    const MESSAGE: &str = "Subject: hi\r\n\r\nhello\r\n";

    fn plugin(args: &str) -> ClamAv {
        build(build_plugin, &format!("virus/clamav {args}"), &[]).unwrap()
    }

    #[test]
    fn exit_codes_and_names() {
        let (_d, clean) = stand_in("clamscan", r#"echo "$3: OK"; exit 0"#);
        let (out, headers, logs) = scan(&plugin(&clean), MESSAGE);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Checked: Checked by ClamAV on mx.example.test\r\n"));
        assert!(
            logs.iter().any(|l| l.starts_with("pass, clean (")),
            "{logs:?}"
        );

        // The options come first and the file last; names come from the FOUND lines.
        let (_d, found) = stand_in(
            "clamscan",
            r#"[ "$1 $2 $3" = "--stdout --no-summary --database=/db" ] || exit 2
echo "$4: Eicar-Sig FOUND"; echo "$4: W32.Evil\033[31m FOUND"; exit 1"#,
        );
        let p = plugin(&format!("clamscan_path={found} database=/db action=reject"));
        let viruses = crate::helpers::scan_metrics::count("virus/clamav", "found");
        let (out, _, logs) = scan(&p, MESSAGE);
        assert!(crate::helpers::scan_metrics::count("virus/clamav", "found") > viruses);
        assert_eq!(
            reply_of(&out),
            (
                552,
                "5.7.1".into(),
                "Virus found: Eicar-Sig, W32.Evil??31m".into()
            )
        );
        assert!(logs.iter().all(|l| !l.contains('\u{1b}')), "{logs:?}");
        let (out, headers, _) = scan(
            &plugin(&format!("clamscan_path={found} database=/db")),
            MESSAGE,
        );
        assert_eq!(out, Outcome::Declined);
        assert!(
            headers.contains("X-Virus-Found: Yes\r\nX-Virus-Details: Eicar-Sig, W32.Evil??31m\r\n")
        );
    }

    #[test]
    fn failures_go_to_the_error_policy() {
        let (_d, broken) = stand_in("clamscan", "echo 'LibClamAV Error: no database'; exit 2");
        let (out, headers, logs) = scan(&plugin(&broken), MESSAGE);
        assert_eq!(
            reply_of(&out),
            (
                451,
                "4.7.1".into(),
                "Unable to scan the message now, please try again later".into()
            )
        );
        assert!(!headers.contains("X-Virus"));
        assert!(
            logs.iter().any(|l| l.starts_with("error, deferred")
                && l.contains("exit code 2")
                && l.contains("no database")),
            "{logs:?}"
        );
        let (_d, odd) = stand_in("clamscan", "exit 57");
        let (out, headers, _) = scan(&plugin(&format!("{odd} declined_on_fail")), MESSAGE);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Checked: not scanned, virus/clamav error\r\n"));
        let (out, _, logs) = scan(&plugin(&format!("{odd} defer_on_error=no")), MESSAGE);
        assert_eq!(out, Outcome::Declined);
        assert!(logs.iter().any(|l| l.contains("exit code 57")));
        let (_d, crash) = stand_in("clamscan", "kill -9 $$");
        assert_eq!(reply_of(&scan(&plugin(&crash), MESSAGE).0).0, 451);
    }

    #[test]
    fn big_messages_are_skipped() {
        let (_d, found) = stand_in("clamscan", "exit 1");
        let big = format!("Subject: x\r\n\r\n{}", "a".repeat(100));
        let (out, headers, logs) =
            scan(&plugin(&format!("{found} max_size=50 action=reject")), &big);
        assert_eq!(out, Outcome::Declined);
        assert_eq!(headers, "");
        assert!(logs.iter().any(|l| l.starts_with("skip, too big")));
    }

    #[test]
    fn arguments() {
        let p = plugin("");
        assert_eq!(p.product.scanner.program.to_str(), Some(DEFAULT_PROGRAM));
        assert!(!p.reject && p.product.scanner.args.defer_on_error);
        assert_eq!(p.max_size, DEFAULT_MAX_SIZE);
        let p = plugin("/usr/bin/clamdscan clamd_conf=/etc/clamd.conf back_compat tmp_dir=/var/tmp timeout=5 max_scans=2");
        assert_eq!(
            p.product.scanner.program.to_str(),
            Some("/usr/bin/clamdscan")
        );
        assert_eq!(p.options[2], "--config-file=/etc/clamd.conf");
        assert_eq!(p.product.scanner.tmp_dir.to_str(), Some("/var/tmp"));
        assert_eq!(p.product.scanner.args.max_scans, 2);
        for (args, why) in [
            ("action=drop", "add-header or reject"),
            ("max_size=x", "not a size"),
            ("clamscan_path=clamscan", "not an absolute path"),
            ("tmp_dir=tmp", "not an absolute path"),
            ("timeout=0", "timeout"),
            ("frob=1", "unknown argument"),
            ("frob", "unknown argument"),
        ] {
            let e = build_err(build_plugin, &format!("virus/clamav {args}"), &[]);
            assert!(e.to_string().contains(why), "{args}: {e}");
        }
    }
}
