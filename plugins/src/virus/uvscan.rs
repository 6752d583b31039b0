//! # virus/uvscan — scan the message with McAfee's command-line scanner uvscan
//!
//! ## Synopsis
//!
//! ```text
//! virus/uvscan [uvscan_location PATH] [deny_viruses yes|no] [timeout SECONDS]
//!              [max_scans N] [defer_on_error yes|no] [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `data_post` runs `uvscan --mime --unzip --secure --noboot FILE` on a multipart message
//! of at most 250,000 bytes (others are not scanned: a log line says why). FILE is the spool
//! file, or a temporary copy of a message held in memory; the program runs off the worker,
//! killed with its process group at `timeout`, at most `max_scans` at once per worker.
//!
//! | exit | meaning (uvscan's documentation) | outcome |
//! |---|---|---|
//! | 0 | no virus | `X-Virus-Checked: Checked by McAfee uvscan on <me>` added |
//! | 13 | virus found | `deny_viruses yes`: `552 5.7.1 Virus found: NAME`; `no`: `X-Virus-Found: Yes`, `X-Virus-Details: NAME` |
//! | 12, 19 | a virus was found and cleaning failed / succeeded | as 13 |
//! | 2, 6, 8, 15 | DAT file integrity, general problem, no DAT file, self-check failed | the error policy |
//! | any other code, a signal, cannot start, past `timeout` | | the error policy |
//!
//! The virus name is taken from the output line `... Found: NAME` or `... Found NAME`
//! (`unnamed` if there is none). Whatever the exit code, output saying `password-protected`
//! refuses the message with `552 5.7.1 We do not accept password-protected zip files!`, as
//! qpsmtpd did.
//!
//! The error policy: `defer_on_error yes` (the default) answers `451 4.7.1`; `no` lets the
//! message through with `X-Virus-Checked: not scanned, virus/uvscan error`. Every scan logs
//! one line with its result and the time spent.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `uvscan_location PATH` | `/usr/local/bin/uvscan` | the program |
//! | `deny_viruses yes\|no` | `yes` | refuse a message with a virus, or mark it with headers |
//! | `timeout SECONDS` | `25` | the whole scan, queueing included; keep it below `plugin_timeout` (30) |
//! | `max_scans N` | `8` | scans in flight per worker; more wait in a queue |
//! | `defer_on_error yes\|no` | `yes` | the error policy |
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
//! **Tested with a stand-in program only**: uvscan is proprietary and not available here; the
//! tests run a small shell script that follows the exit codes and output above. qpsmtpd let
//! a message through on every scanner error and treated every unknown exit code as a virus;
//! here errors and unknown codes go to the error policy (a virus needs one of the codes that
//! say so). The scanner reads the message as received (without the header fields this server
//! added).
//!
//! ## Standards
//!
//! None.
//!
//! ## Security
//!
//! The output is hostile input: its first 16 KiB are read, a virus name is cleaned (letters,
//! digits and `._-:/+!@# `, anything else becomes `?`, at most 128 characters) before it
//! reaches the reply, a header or the log. No shell runs the program.

use ringsmtpd_plugin_api::args::parse_flag;
use ringsmtpd_plugin_api::{ConfigError, Cx, Hook, HookSet, Plugin, PluginInit, Step, Transaction};

use super::verdict::{build_product, not_multipart, viruses, Found, Marks, Product};
use crate::helpers::command_scanner::Ran;
use crate::helpers::scan_metrics::scan_metrics;
use crate::helpers::scanner::too_big;
use crate::queue::local::output_for_log;

const DEFAULT_PROGRAM: &str = "/usr/local/bin/uvscan";
/// qpsmtpd's limit, bytes.
const MAX_SIZE: u64 = 250_000;
const OPTIONS: &[&str] = &["--mime", "--unzip", "--secure", "--noboot"];
const PASSWORD_PROTECTED: &str = "We do not accept password-protected zip files!";

/// The `virus/uvscan` plugin.
pub struct Uvscan {
    product: Product,
    deny: bool,
}

/// Builds `virus/uvscan` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build_plugin(init)?))
}

fn build_plugin(init: &PluginInit<'_>) -> Result<Uvscan, ConfigError> {
    let mut deny = true;
    let marks = Marks::standard("McAfee uvscan");
    let product = build_product(
        init,
        "uvscan_location",
        DEFAULT_PROGRAM,
        marks,
        scan_metrics!("virus/uvscan"),
        |key, value, _| {
            match key {
                "deny_viruses" => deny = parse_flag(key, value)?,
                _ => return Ok(false),
            }
            Ok(true)
        },
    )?;
    Ok(Uvscan { product, deny })
}

impl Plugin for Uvscan {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let common = &self.product.common;
        if too_big(common, cx, txn, MAX_SIZE, "the limit of") || not_multipart(common, cx, txn) {
            return Step::DECLINED;
        }
        Step::pending(async move {
            let deny = self.deny;
            self.product
                .scan(cx, txn, OPTIONS, read, move |_| deny)
                .await
        })
    }
}

/// uvscan's exit code and `Found` lines.
fn read(ran: &Ran) -> Result<Found, String> {
    let text = ran.text();
    if text.contains("password-protected") {
        return Ok(Found::Refuse(PASSWORD_PROTECTED));
    }
    let why = match ran.code {
        Some(0) => return Ok(Found::Clean),
        Some(12 | 13 | 19) => {
            let names = text.lines().filter_map(|l| {
                let (_, name) = l.split_once("Found")?;
                Some(name.trim_start_matches(':'))
            });
            return Ok(match viruses(names) {
                Found::Clean => Found::Viruses(vec!["unnamed".into()]),
                found => found,
            });
        }
        Some(2) => "integrity check of a DAT file failed",
        Some(6) => "a general problem occurred",
        Some(8) => "no DAT file found",
        Some(15) => "self-check failed",
        _ => "unknown exit",
    };
    Err(format!(
        "uvscan: {why} ({}): {}",
        ran.how(),
        output_for_log(&ran.output)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::scanner::test_kit::reply_of;
    use crate::virus::verdict::test_kit::{scan, stand_in, MULTIPART};
    use ringsmtpd_plugin_api::testing::{build, build_err};
    use ringsmtpd_plugin_api::Outcome;

    fn plugin(program: &str, more: &str) -> Uvscan {
        let line = format!("virus/uvscan uvscan_location {program} {more}");
        build(build_plugin, &line, &[]).unwrap()
    }

    /// A stand-in uvscan: checks its options, then prints `out` and exits `code`.
    fn uvscan(out: &str, code: u8) -> (ringsmtpd_plugin_api::testing::TempDir, String) {
        stand_in(
            "uvscan",
            &format!(
                "[ \"$1 $2 $3 $4\" = '--mime --unzip --secure --noboot' ] && [ -f \"$5\" ] || exit 6\n\
                 printf '{out}'; exit {code}"
            ),
        )
    }

    #[test]
    fn clean_virus_and_password_protected() {
        let (_d, p) = uvscan("Scanning\\n", 0);
        let (out, headers, _) = scan(&plugin(&p, ""), MULTIPART);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Checked: Checked by McAfee uvscan on mx.example.test"));

        let (_d, p) = uvscan("    /tmp/x ... Found: EICAR test file NOT a virus.\\n", 13);
        let (out, _, logs) = scan(&plugin(&p, ""), MULTIPART);
        assert_eq!(
            reply_of(&out),
            (
                552,
                "5.7.1".into(),
                "Virus found: EICAR test file NOT a virus.".into()
            )
        );
        assert!(logs
            .iter()
            .any(|l| l.starts_with("fail, found virus EICAR")));
        let (out, headers, _) = scan(&plugin(&p, "deny_viruses no"), MULTIPART);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Details: EICAR test file NOT a virus.\r\n"));

        let (_d, p) = uvscan("x.zip is password-protected\\n", 0);
        assert_eq!(
            reply_of(&scan(&plugin(&p, ""), MULTIPART).0),
            (552, "5.7.1".into(), PASSWORD_PROTECTED.into())
        );
    }

    #[test]
    fn errors_unknown_codes_and_skips() {
        for (code, why) in [
            (2, "DAT file"),
            (8, "no DAT"),
            (15, "self-check"),
            (77, "unknown exit"),
        ] {
            let (_d, p) = uvscan("oops\\n", code);
            let (out, headers, logs) = scan(&plugin(&p, ""), MULTIPART);
            assert_eq!(reply_of(&out).0, 451, "{code}");
            assert!(!headers.contains("X-Virus"), "{code}");
            assert!(
                logs.iter()
                    .any(|l| l.contains(why) && l.contains(&format!("exit code {code}"))),
                "{logs:?}"
            );
        }
        let (_d, p) = uvscan("oops\\n", 6);
        let (out, headers, _) = scan(&plugin(&p, "defer_on_error no"), MULTIPART);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Checked: not scanned, virus/uvscan error"));
        // Not multipart, or too big: not scanned (the program would say virus).
        let (_d, p) = uvscan("", 13);
        let (out, _, logs) = scan(&plugin(&p, ""), "Subject: x\r\n\r\nhi\r\n");
        assert_eq!(out, Outcome::Declined);
        assert!(logs.iter().any(|l| l == "skip, not multipart"));
        let big = format!("{MULTIPART}{}", "a".repeat(250_001));
        let (out, _, logs) = scan(&plugin(&p, ""), &big);
        assert_eq!(out, Outcome::Declined);
        assert!(logs.iter().any(|l| l.starts_with("skip, too big")));
    }

    #[test]
    fn arguments() {
        let p: Uvscan = build(build_plugin, "virus/uvscan", &[]).unwrap();
        assert_eq!(p.product.scanner.program.to_str(), Some(DEFAULT_PROGRAM));
        assert!(p.deny);
        for (args, why) in [
            ("uvscan_location uvscan", "absolute"),
            ("deny_viruses maybe", "deny_viruses"),
            ("frob 1", "unknown argument"),
            ("deny_viruses", "needs a value"),
        ] {
            let e = build_err(build_plugin, &format!("virus/uvscan {args}"), &[]);
            assert!(e.to_string().contains(why), "{args}: {e}");
        }
    }
}
