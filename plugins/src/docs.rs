//! The plugins' manual pages: the `//!` header of each plugin's source file, extracted at build
//! time by `plugins/build.rs` (only the headers are in the binary). `ringsmtpd help NAME`
//! prints one, and `docs/plugins/NAME.md` holds each as a file; a test here fails when a
//! registered plugin has no header or a page in `docs/plugins/` is missing, stray or out of
//! date, and rewrites them with [`WRITE_COMMAND`].

include!(concat!(env!("OUT_DIR"), "/plugin_docs.rs"));

/// How to regenerate `docs/plugins/` (run from the workspace root).
pub const WRITE_COMMAND: &str =
    "RINGSMTPD_WRITE_DOCS=1 cargo test -p ringsmtpd-plugins --lib docs::";

/// A plugin's header: source file (`plugins/src/...`) and Markdown text, for a registered
/// name (no alias, no `:N`). `queue/exim-bsmtp` lives in `queue/exim_bsmtp.rs`.
pub(crate) fn header(name: &str) -> Option<(&'static str, &'static str)> {
    let module = name.replace('-', "_");
    HEADERS
        .iter()
        .find(|(m, _, _)| *m == module)
        .map(|(_, file, text)| (*file, *text))
}

/// The one-line summary of a header: what follows `—` in its title `# NAME — summary`.
pub(crate) fn summary(text: &str) -> Option<&str> {
    let title = text.lines().next()?.strip_prefix("# ")?;
    let (_, summary) = title.split_once(" — ")?;
    Some(summary.trim()).filter(|s| !s.is_empty())
}

/// `ringsmtpd help`'s list: every plugin this build knows, with its summary, then the aliases.
pub fn index() -> String {
    let mut out = String::from(
        "Plugins, as named in config/plugins (config/logging for logging/*); a name may take\n\
         an instance suffix :N. `ringsmtpd help NAME` prints a plugin's manual page.\n\n",
    );
    let docs = crate::docs();
    let width = docs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, summary) in docs {
        out.push_str(&format!("  {name:<width$}  {summary}\n"));
    }
    out.push_str("\nDebian's compatibility names, each the plugin it names:\n\n");
    for (alias, target) in crate::aliases() {
        out.push_str(&format!("  {alias:<width$}  {target}\n"));
    }
    out
}

/// The generated file `docs/plugins/NAME.md`: a notice, then the header text.
#[cfg(test)]
fn page(file: &str, text: &str) -> String {
    format!(
        "<!-- Generated from the header of {file} by `{WRITE_COMMAND}`:\n     \
         edit the header there, not this file. -->\n\n{text}"
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;

    fn pages_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/plugins")
    }

    /// What `docs/plugins/` must hold: relative path -> contents, for every registered plugin
    /// (aliases excepted: they share their plugin's page). Problems go to `problems`.
    fn expected(problems: &mut Vec<String>) -> BTreeMap<String, String> {
        let mut pages = BTreeMap::new();
        for (name, _) in crate::registry() {
            if crate::ALIASES.iter().any(|(alias, _)| alias == name) {
                continue;
            }
            let Some((file, text)) = header(name) else {
                problems.push(format!(
                    "{name}: no documentation header (its source must open with \
                     `//! # {name} — summary`)"
                ));
                continue;
            };
            let title = text.lines().next().unwrap_or_default();
            if title.strip_prefix("# ").and_then(|t| t.split(" — ").next()) != Some(name) {
                problems.push(format!(
                    "{file}: the title is '{title}', not '# {name} — summary'"
                ));
            } else if summary(text).is_none() {
                problems.push(format!("{file}: the title has no '— summary'"));
            }
            pages.insert(format!("{name}.md"), page(file, text));
        }
        pages
    }

    /// The `.md` files under `dir`, relative to it.
    fn existing(dir: &Path, under: &Path, found: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                existing(&path, under, found);
            } else if path.extension().is_some_and(|e| e == "md") {
                let rel = path
                    .strip_prefix(under)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.insert(rel, std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }

    /// Every registered plugin has a header, and `docs/plugins/` holds exactly the pages
    /// generated from them, byte for byte. With `RINGSMTPD_WRITE_DOCS=1` it rewrites them.
    #[test]
    fn plugin_pages_are_up_to_date() {
        let mut problems = Vec::new();
        let want = expected(&mut problems);
        assert_eq!(
            problems,
            Vec::<String>::new(),
            "plugins without a proper header"
        );
        let dir = pages_dir();
        let mut have = BTreeMap::new();
        existing(&dir, &dir, &mut have);
        if std::env::var_os("RINGSMTPD_WRITE_DOCS").is_some_and(|v| v == "1") {
            for rel in have.keys().filter(|rel| !want.contains_key(*rel)) {
                std::fs::remove_file(dir.join(rel)).unwrap();
            }
            for (rel, text) in &want {
                let path = dir.join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                if have.get(rel) != Some(text) {
                    std::fs::write(&path, text).unwrap();
                }
            }
            return;
        }
        let mut stale = Vec::new();
        for (rel, text) in &want {
            match have.get(rel) {
                None => stale.push(format!("docs/plugins/{rel}: missing")),
                Some(old) if old != text => stale.push(format!("docs/plugins/{rel}: out of date")),
                Some(_) => {}
            }
        }
        for rel in have.keys().filter(|rel| !want.contains_key(*rel)) {
            stale.push(format!("docs/plugins/{rel}: no such plugin"));
        }
        assert!(
            stale.is_empty(),
            "{}\nregenerate the pages from the plugin headers: {WRITE_COMMAND}",
            stale.join("\n")
        );
    }

    #[test]
    fn headers_become_markdown() {
        let (file, text) = header("queue/exim-bsmtp").unwrap();
        assert_eq!(file, "plugins/src/queue/exim_bsmtp.rs");
        assert!(text.starts_with("# queue/exim-bsmtp — "), "{text}");
        assert!(!text.contains("//!"));
        assert!(text.ends_with('\n') && !text.ends_with("\n\n"));
        // A folder plugin's header is its mod.rs's; the folder's other files have none.
        let (file, text) = header("sender_permitted_from").unwrap();
        assert_eq!(file, "plugins/src/sender_permitted_from/mod.rs");
        assert!(header("sender_permitted_from/record").is_none());
        assert!(
            header("queue").is_none(),
            "a family's mod.rs is no plugin page"
        );
        // Intra-doc links are plain code outside rustdoc; web links stay links.
        assert!(!text.contains("[`record`]") && text.contains("`record` parses"));
        let (_, hosts) = header("hosts_allow").unwrap();
        assert!(!hosts.contains("](ringsmtpd_plugin_api"), "{hosts}");
        assert!(hosts.contains("(`Connection::concurrent`)"), "{hosts}");
        let (_, maildir) = header("queue/maildir").unwrap();
        assert!(maildir.contains("(<https://cr.yp.to/proto/maildir.html>)"));
        // Only headers are embedded, never code (every plugin has a `pub fn new`).
        for (_, file, text) in HEADERS {
            for code in [
                "\npub fn ",
                "\nuse ringsmtpd_plugin_api",
                "\n#[cfg(",
                "\nimpl ",
            ] {
                assert!(!text.contains(code), "{file}: code in the header: {code:?}");
            }
        }
    }

    #[test]
    fn the_index_lists_every_plugin_and_alias() {
        let index = index();
        for (name, _) in crate::registry() {
            assert!(
                index
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(name)),
                "{name} not in:\n{index}"
            );
        }
        assert!(index.contains("\n  check_spamhelo  "), "{index}");
        assert!(index.lines().any(|l| l.starts_with("  queue/maildir ")
            && l.ends_with("deliver each message into a Maildir")));
    }

    #[test]
    fn summaries_come_from_titles() {
        assert_eq!(
            summary("# rcpt_ok — accept recipients\n\nmore"),
            Some("accept recipients")
        );
        assert_eq!(summary("# require_auth\n"), None);
        assert_eq!(summary("no title"), None);
    }

    #[test]
    fn page_marks_the_file_generated() {
        let p = page("plugins/src/x.rs", "# x — y\n");
        assert!(p.starts_with("<!-- Generated from the header of plugins/src/x.rs"));
        assert!(p.contains(WRITE_COMMAND) && p.ends_with("-->\n\n# x — y\n"));
    }
}
