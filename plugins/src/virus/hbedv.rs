//! # virus/hbedv — scan the message with H+BEDV's (Avira's) command-line scanner antivir
//!
//! ## Synopsis
//!
//! ```text
//! virus/hbedv [hbedvscanner PATH] [timeout SECONDS] [max_scans N] [defer_on_error yes|no]
//!             [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `data_post` runs `antivir --archive-max-recursion=50 --alltypes -z -noboot -nombr -rs
//! FILE` on the message: FILE is the spool file, or a temporary copy of a message held in
//! memory; the program runs off the worker, killed with its process group at `timeout`, at
//! most `max_scans` at once per worker. Its output lines `ALERT: [NAME type] ...` name the
//! viruses.
//!
//! | exit | meaning (antivir's documentation) | outcome |
//! |---|---|---|
//! | 0 | no virus | `X-H+BEDV-Virus-Checked: Checked` added |
//! | 1, 3 | a virus or a suspicious file found | refused with `552 5.7.1 Virus found: NAMES` if `hbedv_deny` is empty or missing, or one of its patterns matches a name; else `X-H+BEDV-Virus-Found: Yes` and `X-H+BEDV-Virus-Details: NAMES` are added |
//! | 200, 211, 214 | out of memory, self-check failed, no licence key | the error policy |
//! | any other code, a signal, cannot start, past `timeout` | | the error policy |
//!
//! The error policy: `defer_on_error yes` (the default) answers `451 4.7.1`; `no` lets the
//! message through with `X-H+BEDV-Virus-Checked: not scanned, virus/hbedv error`. Every scan
//! logs one line with its result and the time spent.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `hbedvscanner PATH` | `/usr/bin/antivir` | the program |
//! | `timeout SECONDS` | `25` | the whole scan, queueing included; keep it below `plugin_timeout` (30) |
//! | `max_scans N` | `8` | scans in flight per worker; more wait in a queue |
//! | `defer_on_error yes\|no` | `yes` | the error policy |
//! | `loglevel N` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! `hbedv_deny`: one regular expression per line (`Worm/Sober\..*`, or `.*` for every virus),
//! matched against a whole virus name, case-insensitively. Missing or empty: every virus
//! refuses the message. A pattern that does not compile stops the server with `file:line`.
//!
//! ## Hooks
//!
//! `data_post`.
//!
//! ## Notes
//!
//! **Tested with a stand-in program only**: antivir is proprietary and not available here; the
//! tests run a small shell script that prints `ALERT:` lines and exits with the codes above.
//! qpsmtpd let the message through on every scanner error; here errors go to the error policy.
//! The patterns are Rust `regex` syntax, which matches Perl's for such patterns (no
//! look-around or back-references). The scanner reads the message as received.
//!
//! ## Standards
//!
//! None.
//!
//! ## Security
//!
//! The output is hostile input: its first 16 KiB are read, a virus name is cleaned (letters,
//! digits and `._-:/+!@# `, anything else becomes `?`, at most 128 characters) before it is
//! matched, and before it reaches the reply, a header or the log. No shell runs the program.

use regex::{Regex, RegexBuilder};
use ringsmtpd_plugin_api::args::parse_lines;
use ringsmtpd_plugin_api::{ConfigError, Cx, Hook, HookSet, Plugin, PluginInit, Step, Transaction};

use super::verdict::{build_product, viruses, Found, Marks, Product};
use crate::helpers::command_scanner::Ran;
use crate::helpers::scan_metrics::scan_metrics;
use crate::queue::local::output_for_log;

const DEFAULT_PROGRAM: &str = "/usr/bin/antivir";
const DENY_FILE: &str = "hbedv_deny";
const OPTIONS: &[&str] = &[
    "--archive-max-recursion=50",
    "--alltypes",
    "-z",
    "-noboot",
    "-nombr",
    "-rs",
];

/// The `virus/hbedv` plugin.
pub struct Hbedv {
    product: Product,
    /// `hbedv_deny`, each anchored at both ends.
    deny: Vec<Regex>,
}

/// Builds `virus/hbedv` from its config line and `hbedv_deny`.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build_plugin(init)?))
}

fn build_plugin(init: &PluginInit<'_>) -> Result<Hbedv, ConfigError> {
    let marks = Marks {
        found: "X-H+BEDV-Virus-Found",
        details: "X-H+BEDV-Virus-Details",
        checked: "X-H+BEDV-Virus-Checked",
        by: "",
    };
    let product = build_product(
        init,
        "hbedvscanner",
        DEFAULT_PROGRAM,
        marks,
        scan_metrics!("virus/hbedv"),
        |_, _, _| Ok(false),
    )?;
    let deny = parse_lines(init, DENY_FILE, |line| {
        RegexBuilder::new(&format!("^(?:{})$", line.trim()))
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("bad pattern: {e}"))
    })?;
    Ok(Hbedv { product, deny })
}

impl Plugin for Hbedv {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::pending(async move {
            self.product
                .scan(cx, txn, OPTIONS, read, |names| self.denies(names))
                .await
        })
    }
}

impl Hbedv {
    /// Every virus is refused without patterns; else one pattern must match one name.
    fn denies(&self, names: &[String]) -> bool {
        self.deny.is_empty()
            || names
                .iter()
                .any(|n| self.deny.iter().any(|d| d.is_match(n)))
    }
}

/// antivir's exit code and `ALERT: [NAME type]` lines.
fn read(ran: &Ran) -> Result<Found, String> {
    let why = match ran.code {
        Some(0) => return Ok(Found::Clean),
        Some(1 | 3) => {
            let text = ran.text();
            let names = text.lines().filter_map(|l| {
                let inner = l.strip_prefix("ALERT: [")?.split(']').next()?;
                inner.split_whitespace().next()
            });
            return Ok(match viruses(names) {
                Found::Clean => Found::Viruses(vec!["unnamed".into()]),
                found => found,
            });
        }
        Some(200) => "not enough memory",
        Some(211) => "self-check failed",
        Some(214) => "licence key not found",
        _ => "unknown exit",
    };
    Err(format!(
        "antivir: {why} ({}): {}",
        ran.how(),
        output_for_log(&ran.output)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::scanner::test_kit::reply_of;
    use crate::virus::verdict::test_kit::{scan, stand_in};
    use ringsmtpd_plugin_api::testing::{build, build_err};
    use ringsmtpd_plugin_api::Outcome;

    const MESSAGE: &str = "Subject: hi\r\n\r\nhello\r\n";

    fn plugin(program: &str, deny: &str) -> Hbedv {
        let line = format!("virus/hbedv hbedvscanner {program}");
        build(build_plugin, &line, &[(DENY_FILE, deny)]).unwrap()
    }

    /// A stand-in antivir: checks its options, prints two alerts and exits `code`.
    fn antivir(code: u8) -> (ringsmtpd_plugin_api::testing::TempDir, String) {
        stand_in(
            "antivir",
            &format!(
                "[ \"$*\" = \"--archive-max-recursion=50 --alltypes -z -noboot -nombr -rs $7\" ] \
                 && [ -f \"$7\" ] || exit 9\n\
                 echo 'ALERT: [Worm/Sober.A virus] /tmp/x <<< Contains the worm'\n\
                 echo 'ALERT: [Eicar-Test-Signature virus] /tmp/x'\n\
                 exit {code}"
            ),
        )
    }

    #[test]
    fn deny_list_decides() {
        let (_d, p) = antivir(1);
        let want = (
            552,
            "5.7.1".into(),
            "Virus found: Worm/Sober.A, Eicar-Test-Signature".into(),
        );
        assert_eq!(reply_of(&scan(&plugin(&p, ""), MESSAGE).0), want);
        assert_eq!(
            reply_of(&scan(&plugin(&p, "worm/sober\\..*\n"), MESSAGE).0),
            want
        );
        // No pattern matches a whole name: through, with the product's own fields.
        let (out, headers, _) = scan(&plugin(&p, "Worm/NetSky\\..*\nEicar\n"), MESSAGE);
        assert_eq!(out, Outcome::Declined);
        assert!(
            headers.contains("X-H+BEDV-Virus-Found: Yes\r\n"),
            "{headers}"
        );
        assert!(headers.contains("X-H+BEDV-Virus-Details: Worm/Sober.A, Eicar-Test-Signature\r\n"));
        let (_d, p) = antivir(3);
        assert_eq!(reply_of(&scan(&plugin(&p, ""), MESSAGE).0).0, 552);
    }

    #[test]
    fn clean_and_errors() {
        let (_d, p) = antivir(0);
        let (out, headers, _) = scan(&plugin(&p, ""), MESSAGE);
        assert_eq!(out, Outcome::Declined);
        assert_eq!(headers, "X-H+BEDV-Virus-Checked: Checked\r\n");
        for (code, why) in [(214, "licence key"), (2, "unknown exit")] {
            let (_d, p) = antivir(code);
            let (out, _, logs) = scan(&plugin(&p, ""), MESSAGE);
            assert_eq!(reply_of(&out).0, 451);
            assert!(logs.iter().any(|l| l.contains(why)), "{logs:?}");
        }
    }

    #[test]
    fn arguments_and_config() {
        let p: Hbedv = build(build_plugin, "virus/hbedv", &[]).unwrap();
        assert_eq!(p.product.scanner.program.to_str(), Some(DEFAULT_PROGRAM));
        assert!(p.deny.is_empty());
        let e = build_err(build_plugin, "virus/hbedv", &[(DENY_FILE, "ok\nWorm(\n")]);
        assert_eq!((e.file.as_str(), e.line), (DENY_FILE, 2), "{e}");
        let e = build_err(build_plugin, "virus/hbedv hbedvscanner", &[]);
        assert!(e.to_string().contains("needs a value"), "{e}");
    }
}
