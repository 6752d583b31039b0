//! Extracts each plugin's documentation header into `$OUT_DIR/plugin_docs.rs`, the table
//! `src/docs.rs` includes: `ringsmtpd help NAME` prints it and `docs/plugins/NAME.md` is it.
//!
//! A plugin's header is the run of `//!` lines that opens its source file and whose first line
//! is its title, `//! # NAME — summary`. Files that open otherwise (family `mod.rs`, shared
//! helpers) have no page. Only the header goes into the binary, never the code.
//!
//! The lines lose their `//! ` prefix (they are Markdown already) and rustdoc's intra-doc
//! links, which mean nothing outside rustdoc, become plain code: ``[`Iprev`]`` and
//! ``[`Connection::concurrent`](ringsmtpd_plugin_api::Connection)`` become `` `Iprev` `` and
//! `` `Connection::concurrent` ``. Links to web pages and to Markdown files are kept.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let src = Path::new("src");
    println!("cargo:rerun-if-changed=src");
    let mut files = Vec::new();
    walk(src, &mut files);
    files.sort();
    let mut table = String::from(
        "/// (module path, source file, header as Markdown), sorted by module path.\n\
         pub(crate) static HEADERS: &[(&str, &str, &str)] = &[\n",
    );
    for file in files {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let Some(markdown) = header(&text) else {
            continue;
        };
        let rel = file
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let module = rel.trim_end_matches(".rs").trim_end_matches("/mod");
        writeln!(
            table,
            "    ({module:?}, {:?}, {markdown:?}),",
            format!("plugins/src/{rel}")
        )
        .unwrap();
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("plugin_docs.rs"), table).expect("write plugin_docs.rs");
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("read_dir").path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The header of a plugin source as Markdown, if the file opens with a `//! # ` title.
fn header(source: &str) -> Option<String> {
    if !source.starts_with("//! # ") {
        return None;
    }
    let mut out = String::new();
    let mut fenced = false;
    for line in source.lines() {
        let Some(rest) = line.strip_prefix("//!") else {
            break;
        };
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        if rest.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            out.push_str(rest);
        } else {
            out.push_str(&plain_links(rest));
        }
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    Some(out)
}

/// ``[`X`]`` and ``[`X`](rust::path)`` become `` `X` ``; other links stay.
fn plain_links(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find("[`") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find("`]") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let code = &after[..end + 1];
        let tail = &after[end + 2..];
        if let Some(target) = tail.strip_prefix('(') {
            match target.find(')') {
                Some(close) if is_rust_path(&target[..close]) => {
                    out.push_str(code);
                    rest = &target[close + 1..];
                }
                _ => {
                    out.push('[');
                    out.push_str(code);
                    out.push(']');
                    rest = tail;
                }
            }
        } else if tail.starts_with('[') {
            out.push('[');
            out.push_str(code);
            out.push(']');
            rest = tail;
        } else {
            out.push_str(code);
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// `crate::x::Y`, `Connection`, `super::eval`: a rustdoc target, not a URL or a file.
fn is_rust_path(target: &str) -> bool {
    !target.is_empty()
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}
