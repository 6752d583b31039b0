//! Reading a roff man page against a program's `--help`, for the tests that keep them in step
//! (`tests/docs.rs` for ringsmtpd, `loadtest/tests/man_page.rs` for smtp-loadtest, which
//! includes this file by path).

use std::collections::BTreeSet;

/// The text of a roff page with the escapes that hide option names removed: `\-` is `-`,
/// font changes go.
pub fn plain(roff: &str) -> String {
    let mut s = roff.replace("\\-", "-");
    for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        s = s.replace(font, "");
    }
    s
}

/// Every `--long-option` in `text`.
pub fn long_options(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let name: String = rest[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        if name.starts_with(|c: char| c.is_ascii_lowercase()) {
            found.insert(format!("--{}", name.trim_end_matches('-')));
        }
        rest = &rest[at + 2 + name.len()..];
    }
    found
}

/// The tag lines of the page's `.TP` items (the option or command each describes).
pub fn items(roff: &str) -> String {
    let lines: Vec<&str> = roff.lines().collect();
    let tags = lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .map(|w| w[1])
        .collect::<Vec<_>>();
    plain(&tags.join("\n"))
}
