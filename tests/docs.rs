//! The documentation that ships with the binary cannot drift from it: `docs/man/ringsmtpd.8`
//! names every option and command `ringsmtpd --help` prints (and no option it does not), and
//! `ringsmtpd help PLUGIN` prints the generated page `docs/plugins/PLUGIN.md`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

#[path = "support/man.rs"]
mod man;

use man::{items, long_options, plain};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringsmtpd"))
        .args(args)
        .output()
        .expect("run ringsmtpd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_man_page_names_every_option_and_no_other() {
    let (code, usage, _) = run(&["--help"]);
    assert_eq!(code, 0);
    let roff = std::fs::read_to_string(Path::new(ROOT).join("docs/man/ringsmtpd.8")).unwrap();
    let page = plain(&roff);
    let documented = long_options(&page);
    let offered = long_options(&usage);
    assert!(offered.len() >= 10, "{offered:?}");
    let missing: Vec<_> = offered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/man/ringsmtpd.8 lacks {missing:?}, which `ringsmtpd --help` prints"
    );
    let listed = long_options(&items(&roff));
    let gone: Vec<_> = listed.difference(&offered).collect();
    assert!(
        gone.is_empty(),
        "docs/man/ringsmtpd.8 describes {gone:?}, which `ringsmtpd --help` does not know"
    );
    // The commands (`usage: ringsmtpd tls-cert ...`) each have an item of their own.
    let tags = items(&roff);
    for line in usage.lines() {
        let Some(command) = line.strip_prefix("usage: ringsmtpd ") else {
            continue;
        };
        let word = command.split_whitespace().next().unwrap();
        if !word.starts_with('[') {
            assert!(
                tags.lines().any(|t| t.starts_with(word)),
                "docs/man/ringsmtpd.8 has no item for the command '{word}'"
            );
        }
    }
    let version = format!("\"ringsmtpd {}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        roff.lines()
            .any(|l| l.starts_with(".TH") && l.contains(&version)),
        "docs/man/ringsmtpd.8's .TH line should say {version}"
    );
}

#[test]
fn the_checker_sees_a_missing_option() {
    let roff = ".TP\n\\fB\\-\\-config\\fR \\fIDIR\\fR\nuse \\-\\-config\n";
    assert_eq!(
        long_options(&plain(roff)),
        BTreeSet::from(["--config".to_string()])
    );
    assert!(!long_options(&plain(roff)).contains("--join"));
    assert_eq!(items(roff), "--config DIR");
    assert_eq!(
        long_options("a --x-y, [--dir DIR] -- --"),
        BTreeSet::from(["--x-y".to_string(), "--dir".to_string()])
    );
}

#[test]
fn help_prints_the_generated_pages() {
    let (code, index, _) = run(&["help"]);
    assert_eq!(code, 0);
    assert!(index.contains("\n  queue/maildir "), "{index}");
    assert!(index.contains("\n  check_spamhelo "), "{index}");
    for (name, page) in [
        ("rcpt_ok", "rcpt_ok.md"),
        ("queue/smtp-forward:2", "queue/smtp-forward.md"),
        ("check_badmailfrom", "badmailfrom.md"),
    ] {
        let (code, text, _) = run(&["help", name]);
        assert_eq!(code, 0, "{name}");
        let file =
            std::fs::read_to_string(Path::new(ROOT).join("docs/plugins").join(page)).unwrap();
        let (_, body) = file.split_once("-->\n\n").unwrap();
        assert_eq!(text, body, "ringsmtpd help {name} and docs/plugins/{page}");
    }
    let (code, out, err) = run(&["help", "no_such_plugin"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.contains("no plugin 'no_such_plugin' (`ringsmtpd help` lists them)"),
        "{err}"
    );
    let (code, _, err) = run(&["help", "maildir"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean queue/maildir?"), "{err}");
}
