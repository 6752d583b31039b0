//! Editing the header fields of a message: remove, change, insert, prepend, append
//! ([`Transaction::edit_headers`]).
//!
//! The header a message is queued with is the fields this server added
//! ([`Transaction::added_headers`]: Received, and what plugins added), then the message's own
//! header section. An edit sees both as one list of fields, in that order, the way a milter or
//! a content scanner saw the message: the 2nd `Received` field is the 2nd one from the top,
//! whichever part holds it. Fields are named case-insensitively (RFC 5322 §1.2.2).
//!
//! | edit | does |
//! |---|---|
//! | [`Edit::Remove`] | removes every field of a name, the n-th, or the n-th from the end ([`Which`]) |
//! | [`Edit::Change`] | replaces the n-th field of a name; no new field deletes it; no n-th field: the new one is appended (sendmail's `smfi_chgheader`) |
//! | [`Edit::Insert`] | puts a field before the n-th field (0: at the top); past the last: appended (`smfi_insheader`) |
//! | [`Edit::Prepend`], [`Edit::Append`] | at the top, after the last field |
//!
//! New fields are [`NewField`]s, built only by constructors that write them safely: a name
//! character outside RFC 5322's `ftext` becomes `-`, CR, LF, NUL and the other control
//! characters in a value become spaces (as [`crate::headers::write_field`] does), so a name or
//! value a client or a backend sent cannot end the field early and add one of its own.
//!
//! Edits that touch only the added fields change a string. Edits that touch the message's own
//! header section rewrite it: in memory for a small message; for a spooled one (above the
//! core's `size_threshold`) a new spool file is written on the blocking pool (the new header
//! section, then the old file's body, a chunk at a time) and renamed over the old one, so the
//! worker never reads or writes a file and the message is never whole in memory. The edits of
//! one call are applied together, with at most one rewrite.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::context::{blocking, Services, SpoolFile, Transaction};
use crate::headers::{fields, push_value, write_field, write_folded_field};

/// Bytes copied from the old spool file at a time.
const CHUNK: usize = 64 * 1024;

/// A header field ready to be written (`Name: value` and its CRLF), safe by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewField(String);

impl NewField {
    /// `name: value`, written by [`crate::headers::write_field`] (not folded).
    pub fn new(name: &str, value: &str) -> NewField {
        let mut s = String::new();
        write_field(&mut s, name, value);
        NewField(s)
    }

    /// A value folded where the caller chose ([`crate::headers::write_folded_field`]).
    pub fn folded(name: &str, lines: &[&str]) -> NewField {
        let mut s = String::new();
        write_folded_field(&mut s, name, lines);
        NewField(s)
    }

    /// A value with its folds (LF or CRLF, then white space) kept as they are, as a milter
    /// sends them, so a signature over the field (DKIM's `simple` canonicalization) still
    /// holds: a line break without white space after it gets a TAB, a line of white space only
    /// is dropped, one space after the colon is not doubled, and every other control
    /// character becomes a space. The field cannot end early.
    pub fn keeping_folds(name: &str, value: &str) -> NewField {
        let mut field = String::new();
        write_field(&mut field, name, "");
        field.truncate(field.len() - 2); // "name: " without its CRLF
        let value = value.strip_prefix(' ').unwrap_or(value);
        for (i, line) in value.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if i > 0 {
                if line.trim_start_matches([' ', '\t']).is_empty() {
                    continue;
                }
                field.push_str(if line.starts_with([' ', '\t']) {
                    "\r\n"
                } else {
                    "\r\n\t"
                });
            }
            push_value(&mut field, line);
        }
        field.push_str("\r\n");
        NewField(field)
    }

    /// The field as written, with its CRLF.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The field's name.
    pub fn name(&self) -> &str {
        self.0.split(':').next().unwrap_or_default()
    }
}

/// Which fields of a name an [`Edit::Remove`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    All,
    /// The n-th from the top, from 1 (0 is none).
    Nth(usize),
    /// The n-th from the end, from 1 (0 is none).
    NthFromEnd(usize),
}

impl Which {
    /// rspamd's form: 0 every field, n > 0 the n-th, n < 0 the n-th from the end.
    pub fn from_signed(n: i64) -> Which {
        match n {
            0 => Which::All,
            n if n > 0 => Which::Nth(usize::try_from(n).unwrap_or(usize::MAX)),
            n => Which::NthFromEnd(usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX)),
        }
    }
}

/// One edit of the header (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Remove {
        name: String,
        which: Which,
    },
    /// The `nth` (from 1) field called `name` becomes `field`, or goes when `field` is `None`.
    Change {
        name: String,
        nth: usize,
        field: Option<NewField>,
    },
    /// `field` before the `index`-th field (from 0), or after the last one.
    Insert {
        index: usize,
        field: NewField,
    },
    Prepend(NewField),
    Append(NewField),
}

impl Edit {
    /// [`Edit::Remove`] of `which` fields called `name`.
    pub fn remove(name: &str, which: Which) -> Edit {
        Edit::Remove {
            name: name.to_string(),
            which,
        }
    }

    /// [`Edit::Change`] with sendmail's convention: an empty `value` deletes the field.
    pub fn change(name: &str, nth: usize, value: &str) -> Edit {
        Edit::Change {
            name: name.to_string(),
            nth,
            field: (!value.is_empty()).then(|| NewField::new(name, value)),
        }
    }
}

/// Why edits were not applied (nothing was changed then).
#[derive(Debug)]
pub enum EditError {
    /// The message is spooled and its header section is longer than the part the core keeps
    /// in memory, so its fields are not all known.
    HeaderNotInMemory,
    /// Writing the new spool file failed.
    Spool(io::Error),
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditError::HeaderNotInMemory => f.write_str("the header section is not all in memory"),
            EditError::Spool(e) => write!(f, "rewriting the spool file: {e}"),
        }
    }
}

impl std::error::Error for EditError {}

/// Where a field is: in the fields this server added, or in the message's own section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Added,
    Message,
}

/// One line (and its continuation lines) of a header section, with its line end.
#[derive(Clone, Copy)]
struct Item<'a> {
    part: Part,
    bytes: &'a [u8],
    /// The field's name; `None` for a line that is not a field (kept where it is).
    name: Option<&'a str>,
}

impl Item<'_> {
    fn is(&self, name: &str) -> bool {
        self.name.is_some_and(|n| n.eq_ignore_ascii_case(name))
    }
}

/// The items of `section` and what follows them (the empty line ending it, if any).
fn items(section: &[u8], part: Part) -> (Vec<Item<'_>>, &[u8]) {
    let base = section.as_ptr() as usize;
    let mut out: Vec<Item<'_>> = Vec::new();
    let mut starts = Vec::new();
    let mut text_end = 0;
    for item in fields(section) {
        let (start, end, name) = match item {
            Ok(f) => {
                let raw = f.raw_value();
                let start = f.name().as_ptr() as usize - base;
                (
                    start,
                    raw.as_ptr() as usize - base + raw.len(),
                    Some(f.name()),
                )
            }
            Err(m) => {
                let start = m.text.as_ptr() as usize - base;
                (start, start + m.text.len(), None)
            }
        };
        starts.push((start, name));
        text_end = end;
    }
    // Items are consecutive lines: each one ends where the next starts; the last one ends
    // after its line end.
    let mut last_end = text_end;
    if !starts.is_empty() {
        last_end += section[text_end..]
            .iter()
            .take(2)
            .position(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
    }
    for (i, &(start, name)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(last_end, |n| n.0);
        out.push(Item {
            part,
            bytes: &section[start..end],
            name,
        });
    }
    let tail = if starts.is_empty() {
        section
    } else {
        &section[last_end..]
    };
    (out, tail)
}

/// The list after `edits`, and how many fields they touched.
fn apply<'a>(list: &mut Vec<Item<'a>>, edits: &'a [Edit]) -> usize {
    let mut touched = 0;
    for edit in edits {
        match edit {
            Edit::Remove { name, which } => {
                let at: Vec<usize> = (0..list.len()).filter(|&i| list[i].is(name)).collect();
                let chosen: Vec<usize> = match *which {
                    Which::All => at,
                    Which::Nth(n) => n
                        .checked_sub(1)
                        .and_then(|i| at.get(i))
                        .copied()
                        .into_iter()
                        .collect(),
                    Which::NthFromEnd(n) => (n > 0)
                        .then(|| at.len().checked_sub(n))
                        .flatten()
                        .map(|i| at[i])
                        .into_iter()
                        .collect(),
                };
                touched += chosen.len();
                for i in chosen.into_iter().rev() {
                    list.remove(i);
                }
            }
            Edit::Change { name, nth, field } => {
                let found = (0..list.len())
                    .filter(|&i| list[i].is(name))
                    .nth(nth.saturating_sub(1))
                    .filter(|_| *nth > 0);
                match (found, field) {
                    (Some(i), Some(f)) => {
                        list[i].bytes = f.as_str().as_bytes();
                        list[i].name = Some(f.name());
                        touched += 1;
                    }
                    (Some(i), None) => {
                        list.remove(i);
                        touched += 1;
                    }
                    (None, Some(f)) => {
                        insert(list, list.len(), f);
                        touched += 1;
                    }
                    (None, None) => {}
                }
            }
            Edit::Insert { index, field } => {
                let at = (0..list.len())
                    .filter(|&i| list[i].name.is_some())
                    .nth(*index)
                    .unwrap_or(list.len());
                insert(list, at, field);
                touched += 1;
            }
            Edit::Prepend(field) => {
                insert(list, 0, field);
                touched += 1;
            }
            Edit::Append(field) => {
                insert(list, list.len(), field);
                touched += 1;
            }
        }
    }
    touched
}

/// Puts `field` at `at`: among the added fields when the one before it is one of them (or it
/// goes first), so the order is the same and no message rewrite is needed.
fn insert<'a>(list: &mut Vec<Item<'a>>, at: usize, field: &'a NewField) {
    let part = match at.checked_sub(1).map(|i| list[i].part) {
        Some(Part::Message) => Part::Message,
        _ => Part::Added,
    };
    list.insert(
        at,
        Item {
            part,
            bytes: field.as_str().as_bytes(),
            name: Some(field.name()),
        },
    );
}

/// The items of `part` in order, then `tail`; a line end is added after an item without one.
fn join(list: &[Item<'_>], part: Part, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in list.iter().filter(|i| i.part == part) {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(item.bytes);
    }
    if !tail.is_empty() && !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(tail);
    out
}

/// Whether the items of `part` differ from those in `before`.
fn changed(list: &[Item<'_>], part: Part, before: &[Item<'_>]) -> bool {
    let mut now = list.iter().filter(|i| i.part == part).map(|i| i.bytes);
    let mut was = before.iter().filter(|i| i.part == part).map(|i| i.bytes);
    !now.by_ref().eq(was.by_ref())
}

impl Transaction {
    /// Applies `edits` in order to the header the message will be queued with (see the
    /// [module documentation](crate::header_edit)); returns how many fields they removed,
    /// changed or added. On an error nothing is changed.
    pub async fn edit_headers(
        &mut self,
        svc: &dyn Services,
        edits: &[Edit],
    ) -> Result<usize, EditError> {
        let body = &self.body;
        let header_len = match (body.header_end, &body.spool) {
            (Some(end), _) => end.min(body.mem.len()),
            (None, None) => body.mem.len(),
            (None, Some(_)) => return Err(EditError::HeaderNotInMemory),
        };
        let (mut list, added_tail) = items(self.added_headers.as_bytes(), Part::Added);
        let (own, own_tail) = items(&body.mem[..header_len], Part::Message);
        list.extend(own);
        let before = list.clone();
        let touched = apply(&mut list, edits);
        let new = |part, tail| changed(&list, part, &before).then(|| join(&list, part, tail));
        let (new_added, new_own) = (new(Part::Added, added_tail), new(Part::Message, own_tail));
        if let Some(head) = new_own {
            self.replace_header_section(svc, header_len, head).await?;
        }
        if let Some(added) = new_added {
            // Whole lines of a string and whole new fields: still UTF-8.
            self.added_headers = String::from_utf8(added)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        }
        Ok(touched)
    }

    /// The message's header section (its first `old_len` bytes) becomes `head`.
    async fn replace_header_section(
        &mut self,
        svc: &dyn Services,
        old_len: usize,
        head: Vec<u8>,
    ) -> Result<(), EditError> {
        let body = &mut self.body;
        let new_len = head.len();
        match &body.spool {
            None => {
                body.mem.splice(..old_len, head);
            }
            Some(spool) => {
                let old = spool.file.try_clone().map_err(EditError::Spool)?;
                let path = spool.path.clone();
                let new = head.clone();
                let file = blocking(svc, move || rewrite(&old, &path, &new, old_len as u64))
                    .await
                    .unwrap_or_else(|| Err(io::Error::other("the rewrite job panicked")))
                    .map_err(EditError::Spool)?;
                let path = spool.path.clone();
                // The old file is gone (renamed over): dropping its SpoolFile only closes it.
                body.spool = Some(SpoolFile { path, file });
                body.mem = head;
            }
        }
        if body.header_end.is_some() {
            body.header_end = Some(new_len);
        }
        body.len = body.len - old_len as u64 + new_len as u64;
        Ok(())
    }
}

/// Blocking: writes `head`, then `old` from `from` on, into a new file beside `path`, renames
/// it over `path`, and returns it open for reading and writing (as the core opens spool
/// files). On an error the new file is removed and `path` is untouched.
fn rewrite(old: &File, path: &Path, head: &[u8], from: u64) -> io::Result<File> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".edit");
    let mut new = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let copied = (|| {
        new.write_all(head)?;
        let mut buf = vec![0u8; CHUNK];
        let mut at = from;
        loop {
            let n = match old.read_at(&mut buf, at) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            new.write_all(&buf[..n])?;
            at += n as u64;
        }
    })()
    .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{block_on, set_message, spool, FakeServices, TempDir};

    const MESSAGE: &str = "From: a@example.test\r\nX-Spam: forged\r\nSubject: hi\r\n\
        Received: one\r\nX-Spam: forged 2\r\n\r\nbody\r\n";
    const ADDED: &str = "Received: ours\r\nX-Added: 1\r\n";

    /// A transaction with MESSAGE (in memory, or spooled under `dir`) and ADDED.
    fn txn(dir: Option<&TempDir>) -> Transaction {
        let mut t = Transaction::default();
        t.added_headers = ADDED.into();
        match dir {
            None => set_message(&mut t, MESSAGE),
            Some(d) => spool(&mut t.body, &d.path().join("1.2.3"), MESSAGE.as_bytes()),
        }
        t
    }

    /// The message as it would be queued: added fields, then the message (read back from
    /// the spool file when spooled).
    fn queued(t: &Transaction) -> String {
        let message = match &t.body.spool {
            None => t.body.mem.clone(),
            Some(s) => {
                let mut v = vec![0; t.body.len as usize];
                s.file
                    .read_exact_at(&mut v, 0)
                    .expect("read the spool file");
                let on_disk = std::fs::read(&s.path).expect("the spool file by name");
                assert_eq!(on_disk, v, "the open file is the one at the path");
                assert_eq!(
                    &v[..t.body.mem.len()],
                    &t.body.mem[..],
                    "memory holds the header"
                );
                v
            }
        };
        assert_eq!(t.body.len as usize, message.len());
        let end = t.body.header_end.expect("a header end");
        assert!(message[..end].ends_with(b"\r\n\r\n"));
        format!("{}{}", t.added_headers, String::from_utf8(message).unwrap())
    }

    /// Runs `edits` on the message in memory and spooled: both must give `want` (the header
    /// fields as queued, before the empty line) and touch `n` fields.
    fn check(edits: &[Edit], n: usize, want: &str) {
        let svc = FakeServices::new("mx.test");
        let dir = TempDir::new("header-edit");
        for d in [None, Some(&dir)] {
            let mut t = txn(d);
            let got = block_on(t.edit_headers(&*svc, edits)).expect("edited");
            let all = queued(&t);
            let (head, body) = all.split_once("\r\n\r\n").expect("an empty line");
            assert_eq!((got, head), (n, want), "spooled: {}", d.is_some());
            assert_eq!(body, "body\r\n");
            if d.is_some() {
                let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
                assert_eq!(left.len(), 1, "no temporary file left");
                t.body.spool = None;
            }
        }
    }

    #[test]
    fn remove_all_nth_and_nth_from_end() {
        check(
            &[Edit::remove("x-spam", Which::All)],
            2,
            "Received: ours\r\nX-Added: 1\r\nFrom: a@example.test\r\nSubject: hi\r\nReceived: one",
        );
        // The 2nd Received counts ours first.
        check(
            &[Edit::remove("RECEIVED", Which::Nth(2))],
            1,
            "Received: ours\r\nX-Added: 1\r\nFrom: a@example.test\r\nX-Spam: forged\r\nSubject: hi\r\nX-Spam: forged 2",
        );
        check(
            &[Edit::remove("Received", Which::NthFromEnd(2))],
            1,
            "X-Added: 1\r\nFrom: a@example.test\r\nX-Spam: forged\r\nSubject: hi\r\nReceived: one\r\nX-Spam: forged 2",
        );
        for (which, name) in [
            (Which::Nth(3), "Received"),
            (Which::NthFromEnd(3), "Received"),
            (Which::Nth(0), "Received"),
            (Which::All, "Nope"),
        ] {
            check(
                &[Edit::remove(name, which)],
                0,
                &format!("{ADDED}{}", MESSAGE.split_once("\r\n\r\n").unwrap().0),
            );
        }
        assert_eq!(Which::from_signed(0), Which::All);
        assert_eq!(Which::from_signed(2), Which::Nth(2));
        assert_eq!(Which::from_signed(-1), Which::NthFromEnd(1));
    }

    #[test]
    fn change_replaces_deletes_or_appends() {
        check(
            &[Edit::change("Subject", 1, "[SPAM] hi")],
            1,
            "Received: ours\r\nX-Added: 1\r\nFrom: a@example.test\r\nX-Spam: forged\r\nSubject: [SPAM] hi\r\nReceived: one\r\nX-Spam: forged 2",
        );
        check(
            &[Edit::change("X-Spam", 2, "")],
            1,
            "Received: ours\r\nX-Added: 1\r\nFrom: a@example.test\r\nX-Spam: forged\r\nSubject: hi\r\nReceived: one",
        );
        // Only in the added part: no message rewrite, same result.
        check(
            &[Edit::change("X-Added", 1, "2")],
            1,
            "Received: ours\r\nX-Added: 2\r\nFrom: a@example.test\r\nX-Spam: forged\r\nSubject: hi\r\nReceived: one\r\nX-Spam: forged 2",
        );
        // No 3rd X-Spam: appended; nothing to delete: nothing done.
        check(
            &[Edit::change("X-Spam", 3, "new"), Edit::change("X-Other", 1, "")],
            1,
            "Received: ours\r\nX-Added: 1\r\nFrom: a@example.test\r\nX-Spam: forged\r\nSubject: hi\r\nReceived: one\r\nX-Spam: forged 2\r\nX-Spam: new",
        );
    }

    #[test]
    fn insert_prepend_append() {
        check(
            &[
                Edit::Insert { index: 3, field: NewField::new("X-Three", "3") },
                Edit::Prepend(NewField::new("X-Top", "t")),
                Edit::Append(NewField::new("X-End", "e")),
                Edit::Insert { index: 99, field: NewField::new("X-Far", "f") },
            ],
            4,
            "X-Top: t\r\nReceived: ours\r\nX-Added: 1\r\nFrom: a@example.test\r\nX-Three: 3\r\nX-Spam: forged\r\nSubject: hi\r\nReceived: one\r\nX-Spam: forged 2\r\nX-End: e\r\nX-Far: f",
        );
        // Prepending touches only the added part.
        let svc = FakeServices::new("mx.test");
        let mut t = txn(None);
        block_on(t.edit_headers(&*svc, &[Edit::Prepend(NewField::new("X-Top", "t"))])).unwrap();
        assert_eq!(t.added_headers, format!("X-Top: t\r\n{ADDED}"));
        assert_eq!(t.body.mem, MESSAGE.as_bytes());
    }

    #[test]
    fn hostile_names_and_values_cannot_add_fields() {
        let evil = "x\r\nBcc: victim@example.test\0\r\n\r\nbody";
        check(
            &[
                Edit::change("Subject", 1, evil),
                Edit::Append(NewField::new("X-Evil:\r\nBcc", evil)),
                Edit::Insert { index: 0, field: NewField::keeping_folds("X-Fold", "a\r\n b\nBcc: c\r\n\r\n") },
            ],
            3,
            "X-Fold: a\r\n b\r\n\tBcc: c\r\nReceived: ours\r\nX-Added: 1\r\nFrom: a@example.test\r\nX-Spam: forged\r\nSubject: x  Bcc: victim@example.test     body\r\nReceived: one\r\nX-Spam: forged 2\r\nX-Evil---Bcc: x  Bcc: victim@example.test     body",
        );
    }

    #[test]
    fn edits_of_a_header_without_body_or_fields() {
        let svc = FakeServices::new("mx.test");
        // A message that is all header, without a final line end.
        let mut t = Transaction::default();
        t.body.mem = b"Subject: a".to_vec();
        t.body.len = 10;
        block_on(t.edit_headers(&*svc, &[Edit::Append(NewField::new("X-A", "1"))])).unwrap();
        assert_eq!(t.body.mem, b"Subject: a\r\nX-A: 1\r\n");
        assert_eq!(t.body.len, 20);
        // A message without header fields: appended before its empty line.
        let mut t = Transaction::default();
        set_message(&mut t, "\r\nbody\r\n");
        block_on(t.edit_headers(&*svc, &[Edit::Append(NewField::new("X-A", "1"))])).unwrap();
        assert_eq!(
            t.added_headers, "X-A: 1\r\n",
            "nothing before it: among the added"
        );
        assert_eq!(t.body.mem, b"\r\nbody\r\n");
        // Malformed lines stay where they are.
        let mut t = Transaction::default();
        set_message(&mut t, "From a@b\r\nSubject: s\r\n\r\nb");
        block_on(t.edit_headers(&*svc, &[Edit::remove("subject", Which::All)])).unwrap();
        assert_eq!(t.body.mem, b"From a@b\r\n\r\nb");
        assert_eq!(t.body.header_end, Some(12));
    }

    #[test]
    fn a_spooled_header_not_all_in_memory_is_left_alone() {
        let svc = FakeServices::new("mx.test");
        let dir = TempDir::new("header-edit-long");
        let mut t = txn(Some(&dir));
        t.body.header_end = None;
        let err = block_on(t.edit_headers(&*svc, &[Edit::remove("x-spam", Which::All)]));
        assert!(matches!(err, Err(EditError::HeaderNotInMemory)));
        assert_eq!(t.added_headers, ADDED);
        t.body.spool = None;
    }

    #[test]
    fn a_failed_spool_rewrite_changes_nothing() {
        let svc = FakeServices::new("mx.test");
        let dir = TempDir::new("header-edit-fail");
        let mut t = txn(Some(&dir));
        // The temporary file's name is taken: the rewrite fails before touching anything.
        std::fs::write(dir.path().join("1.2.3.edit"), "x").unwrap();
        let err = block_on(t.edit_headers(
            &*svc,
            &[
                Edit::remove("x-spam", Which::All),
                Edit::Prepend(NewField::new("X-T", "t")),
            ],
        ));
        assert!(matches!(err, Err(EditError::Spool(_))), "{err:?}");
        assert_eq!(t.added_headers, ADDED);
        assert_eq!(queued(&t), format!("{ADDED}{MESSAGE}"));
        t.body.spool = None;
    }
}
