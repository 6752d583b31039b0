//! `docs/man/smtp-loadtest.1` names every option `smtp-loadtest --help` prints, and describes
//! no option it does not know, so the two cannot drift silently.

use std::path::Path;
use std::process::Command;

#[path = "../../tests/support/man.rs"]
mod man;

use man::{items, long_options, plain};

#[test]
fn the_man_page_names_every_option_and_no_other() {
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-loadtest"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let usage = String::from_utf8(out.stdout).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man/smtp-loadtest.1");
    let roff = std::fs::read_to_string(path).unwrap();
    let offered = long_options(&usage);
    assert!(offered.len() >= 25, "{offered:?}");
    let documented = long_options(&plain(&roff));
    let missing: Vec<_> = offered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/man/smtp-loadtest.1 lacks {missing:?}, which `smtp-loadtest --help` prints"
    );
    // The options the page describes: the tags of its `.TP` items.
    let listed = long_options(&items(&roff));
    assert!(listed.len() >= 25, "{listed:?}");
    let gone: Vec<_> = listed.difference(&offered).collect();
    assert!(
        gone.is_empty(),
        "docs/man/smtp-loadtest.1 describes {gone:?}, which `smtp-loadtest --help` does not know"
    );
    let version = format!("\"smtp-loadtest {}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        roff.lines()
            .any(|l| l.starts_with(".TH") && l.contains(&version)),
        "the .TH line of docs/man/smtp-loadtest.1 should say {version}"
    );
}
