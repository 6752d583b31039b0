//! Header fields of a message (RFC 5322 §2.2, §3.6) and its date-time (§3.3, §4.3).
//!
//! [`fields`] walks a header section (`txn.body.header_bytes()`) without allocating: each item
//! is a [`Field`] borrowing the bytes, or a [`Malformed`] line. Folded values are unfolded only
//! when asked for ([`Field::value`]), and only a folded (or non-UTF-8) value allocates.
//! [`parse_date`] reads a `Date:` value, with the obsolete forms a receiver must accept (§4.3).
//! [`write_field`] writes a field safely: nothing a client or a backend sends can end the
//! field early and start another one (header injection).
//!
//! The walk is strict about what a field is: a name of printable ASCII without `:` (§3.6.8,
//! `ftext`), optional white space before the colon (§4.5.8, obsolete), then the value and its
//! continuation lines (lines starting with SP or HTAB, §2.2.3). Anything else is reported as
//! [`Malformed`], with its continuation lines, and the walk goes on with the next line. The
//! header section ends at the first empty line or at the end of the input. Lines end in CRLF
//! (the core's form); a bare LF is accepted as a line end too.

use std::borrow::Cow;
use std::fmt;

/// Writes the header field `name: value` and its CRLF into `out`, safely: a character that
/// could end the field or corrupt the message (CR, LF, NUL and the other C0 controls but
/// HTAB, and DEL) becomes a space in the value, so text from a client, DNS or a backend cannot
/// start a header of its own; a name character outside RFC 5322's `ftext` (printable ASCII
/// but `:`) becomes `-`. Non-ASCII text in the value stays (RFC 6532). The value is not
/// folded.
pub fn write_field(out: &mut String, name: &str, value: &str) {
    write_folded_field(out, name, &[value]);
}

/// Writes a field folded where the caller chose: `name: lines[0]`, then CRLF TAB before each
/// further line (RFC 5322 §2.2.3), each line as safe as [`write_field`]'s value; empty lines
/// are left out. For long values such as a DKIM-Signature.
pub fn write_folded_field(out: &mut String, name: &str, lines: &[&str]) {
    out.reserve(name.len() + lines.iter().map(|l| l.len() + 3).sum::<usize>() + 2);
    out.extend(name.chars().map(|c| {
        if c.is_ascii_graphic() && c != ':' {
            c
        } else {
            '-'
        }
    }));
    out.push_str(": ");
    let mut first = true;
    for line in lines.iter().filter(|l| !l.is_empty()) {
        if !first {
            out.push_str("\r\n\t");
        }
        first = false;
        push_value(out, line);
    }
    out.push_str("\r\n");
}

/// Appends `value` to a header value being written, with the characters [`write_field`]
/// refuses turned into spaces.
pub fn push_value(out: &mut String, value: &str) {
    if !value.chars().any(unsafe_in_value) {
        out.push_str(value);
        return;
    }
    out.extend(
        value
            .chars()
            .map(|c| if unsafe_in_value(c) { ' ' } else { c }),
    );
}

/// A character that may not stand in a header value as given: it could end the field or the
/// header section (CR, LF), or is a control character that mail software mishandles.
fn unsafe_in_value(c: char) -> bool {
    (c.is_ascii_control() && c != '\t') || c == '\u{7f}'
}

/// One header field, borrowing the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    name: &'a str,
    raw: &'a [u8],
    line: u32,
}

impl<'a> Field<'a> {
    /// The field name as written (`Message-Id`), without the colon or white space before it.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// True if the name is `name`, compared case-insensitively (RFC 5322 §1.2.2).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The value as it stands after the colon: folds (CRLF + WSP) kept, the final line end not.
    pub fn raw_value(&self) -> &'a [u8] {
        self.raw
    }

    /// The 1-based line of the message where the field starts.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// The value unfolded (every line break before white space removed, §2.2.3) and trimmed
    /// of white space at both ends. Borrowed unless the value was folded or is not UTF-8
    /// (invalid bytes become U+FFFD).
    pub fn value(&self) -> Cow<'a, str> {
        let raw = trim_wsp(self.raw);
        if !raw.contains(&b'\n') {
            return String::from_utf8_lossy(raw);
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            match raw[i] {
                b'\r' if raw.get(i + 1) == Some(&b'\n') => i += 2,
                b'\n' => i += 1,
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        match String::from_utf8(out) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// True if the value holds nothing but white space and line breaks.
    pub fn is_empty(&self) -> bool {
        self.raw
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    }
}

/// A line of the header section that is not a field: no colon, a character outside `ftext`
/// in the name, an empty name, or a continuation line with no field before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed<'a> {
    /// The line (and its continuation lines), without the final line end.
    pub text: &'a [u8],
    /// Its 1-based line number in the message.
    pub line: u32,
}

impl fmt::Display for Malformed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = String::from_utf8_lossy(&self.text[..self.text.len().min(60)])
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        write!(f, "line {}: not a header field: '{shown}'", self.line)
    }
}

/// The fields of a header section, in order. See the module documentation.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: u32,
}

/// Walks the header section `header` (it may go on into the body: the walk stops at the
/// first empty line).
pub fn fields(header: &[u8]) -> Fields<'_> {
    Fields {
        bytes: header,
        pos: 0,
        line: 1,
    }
}

impl<'a> Fields<'a> {
    /// The end of the line starting at `from` (index of its CR or LF, or the input's end) and
    /// the start of the next line.
    fn line_end(&self, from: usize) -> (usize, usize) {
        match self.bytes[from..].iter().position(|&b| b == b'\n') {
            Some(n) => {
                let lf = from + n;
                let end = if lf > from && self.bytes[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                (end, lf + 1)
            }
            None => (self.bytes.len(), self.bytes.len()),
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, Malformed<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let start = self.pos;
        let first_line = self.line;
        let (mut end, mut next) = self.line_end(start);
        if end == start {
            // The empty line: the header section is over.
            self.pos = self.bytes.len();
            return None;
        }
        self.line += 1;
        // Continuation lines belong to this item.
        while next < self.bytes.len() && matches!(self.bytes[next], b' ' | b'\t') {
            let (e, n) = self.line_end(next);
            end = e;
            next = n;
            self.line += 1;
        }
        self.pos = next;
        let item = &self.bytes[start..end];
        let malformed = Malformed {
            text: item,
            line: first_line,
        };
        let name_len = item
            .iter()
            .position(|&b| !(33..=126).contains(&b) || b == b':')
            .unwrap_or(item.len());
        if name_len == 0 {
            return Some(Err(malformed));
        }
        let mut colon = name_len;
        while colon < item.len() && matches!(item[colon], b' ' | b'\t') {
            colon += 1; // obs-optional: WSP before the colon (§4.5.8)
        }
        if item.get(colon) != Some(&b':') {
            return Some(Err(malformed));
        }
        // `ftext` is ASCII, so the name is valid UTF-8.
        let Ok(name) = std::str::from_utf8(&item[..name_len]) else {
            return Some(Err(malformed));
        };
        Some(Ok(Field {
            name,
            raw: &item[colon + 1..],
            line: first_line,
        }))
    }
}

/// The first well-formed field named `name` (any case).
pub fn first<'a>(header: &'a [u8], name: &str) -> Option<Field<'a>> {
    fields(header).flatten().find(|f| f.is(name))
}

/// How many well-formed fields have one of `names` (any case).
pub fn count(header: &[u8], names: &[&str]) -> usize {
    fields(header)
        .flatten()
        .filter(|f| names.iter().any(|n| f.is(n)))
        .count()
}

fn trim_wsp(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if matches!(first, b' ' | b'\t' | b'\r' | b'\n') {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if matches!(last, b' ' | b'\t' | b'\r' | b'\n') {
            b = rest;
        } else {
            break;
        }
    }
    b
}

// ---------------------------------------------------------------------------------------------
// Date and time (RFC 5322 §3.3 and the obsolete forms of §4.3).

/// A date-time from a `Date:` (or `Resent-Date:`) field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Seconds since 1970-01-01 00:00:00 UTC (a leap second `:60` counts as the next second).
    pub timestamp: i64,
    /// The zone's offset from UTC in minutes (`-0600` is -360). Obsolete zone names give their
    /// offset (`EST` -300); military letters and unknown zones give 0, as §4.3 asks.
    pub offset_minutes: i32,
}

/// Why a date-time did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateError {
    /// Not the grammar of §3.3/§4.3; the text says where it failed.
    Syntax(&'static str),
    /// Well formed, but a field is out of range (day 31 in April, hour 24, year before 1900).
    Range(&'static str),
    /// The day of the week is not the one of the date (§3.3: it MUST be).
    Weekday,
}

impl fmt::Display for DateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DateError::Syntax(what) => write!(f, "syntax: {what}"),
            DateError::Range(what) => write!(f, "out of range: {what}"),
            DateError::Weekday => f.write_str("day of week does not match the date"),
        }
    }
}

impl std::error::Error for DateError {}

const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Parses an RFC 5322 `date-time`:
///
/// ```text
/// [ day-of-week "," ] day month year hour ":" minute [ ":" second ] zone
/// Fri, 21 Nov 1997 09:55:06 -0600
/// ```
///
/// Comments and folding white space are allowed wherever §4.3 allows them (between all
/// tokens, e.g. a trailing `(CST)`); month and day names in any case; two- and three-digit
/// years (§4.3: `49` is 2049, `50` is 1950, `103` is 2003); the obsolete zones `UT`, `GMT`,
/// `EST`/`EDT`, `CST`/`CDT`, `MST`/`MDT`, `PST`/`PDT` and the military letters (as +0000).
/// Refused: anything after the zone but comments, a day-of-week that does not match the
/// date, a year before 1900 or after 9999, a second above 60.
pub fn parse_date(text: &str) -> Result<DateTime, DateError> {
    let mut p = Cursor {
        s: text.as_bytes(),
        i: 0,
    };
    p.cfws()?;
    let mut weekday = None;
    if p.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
        let name = p.alpha();
        let day = lookup(&DAY_NAMES, name).ok_or(DateError::Syntax("day of week"))?;
        weekday = Some(day as i64);
        p.cfws()?;
        if !p.eat(b',') {
            return Err(DateError::Syntax("',' after the day of week"));
        }
        p.cfws()?;
    }
    let day = p.digits(1, 2).ok_or(DateError::Syntax("day"))?;
    p.cfws()?;
    let month = lookup(&MONTH_NAMES, p.alpha()).ok_or(DateError::Syntax("month"))? as u32 + 1;
    p.cfws()?;
    let year_start = p.i;
    let year = p.digits(2, 9).ok_or(DateError::Syntax("year"))?;
    let year = match p.i - year_start {
        2 if year < 50 => year + 2000, // §4.3
        2 | 3 => year + 1900,
        _ => year,
    };
    p.cfws()?;
    let hour = p.digits(2, 2).ok_or(DateError::Syntax("hour"))?;
    p.cfws()?;
    if !p.eat(b':') {
        return Err(DateError::Syntax("':' after the hour"));
    }
    p.cfws()?;
    let minute = p.digits(2, 2).ok_or(DateError::Syntax("minute"))?;
    p.cfws()?;
    let mut second = 0;
    if p.eat(b':') {
        p.cfws()?;
        second = p.digits(2, 2).ok_or(DateError::Syntax("second"))?;
        p.cfws()?;
    }
    let offset_minutes = p.zone()?;
    p.cfws()?;
    if p.i != p.s.len() {
        return Err(DateError::Syntax("text after the zone"));
    }
    if !(1900..=9999).contains(&year) {
        return Err(DateError::Range("year"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(DateError::Range("day"));
    }
    if hour > 23 {
        return Err(DateError::Range("hour"));
    }
    if minute > 59 {
        return Err(DateError::Range("minute"));
    }
    if second > 60 {
        return Err(DateError::Range("second"));
    }
    let days = days_from_civil(year as i64, month, day);
    if let Some(wd) = weekday {
        // 1970-01-01 was a Thursday (4).
        if (days + 4).rem_euclid(7) != wd {
            return Err(DateError::Weekday);
        }
    }
    let local = days * 86_400 + hour as i64 * 3_600 + minute as i64 * 60 + second as i64;
    Ok(DateTime {
        timestamp: local - offset_minutes as i64 * 60,
        offset_minutes,
    })
}

fn lookup(names: &[&str], word: &[u8]) -> Option<usize> {
    names
        .iter()
        .position(|n| n.as_bytes().eq_ignore_ascii_case(word))
}

fn is_leap(y: u32) -> bool {
    y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Skips white space, line breaks (of a value not unfolded) and comments, which nest and
    /// may hold quoted pairs (§3.2.2).
    fn cfws(&mut self) -> Result<(), DateError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.i += 1,
                Some(b'(') => {
                    let mut depth = 0u32;
                    loop {
                        match self.peek() {
                            None => return Err(DateError::Syntax("unclosed comment")),
                            Some(b'\\') => self.i += 2,
                            Some(b'(') => {
                                depth += 1;
                                self.i += 1;
                            }
                            Some(b')') => {
                                depth -= 1;
                                self.i += 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            Some(_) => self.i += 1,
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn alpha(&mut self) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A run of `min..=max` digits, not followed by another digit.
    fn digits(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        let run = &self.s[start..self.i];
        if run.len() < min || run.len() > max {
            return None;
        }
        run.iter().try_fold(0u32, |n, &d| {
            n.checked_mul(10)?.checked_add((d - b'0') as u32)
        })
    }

    /// `("+" / "-") 4DIGIT` or an obsolete zone name (§4.3).
    fn zone(&mut self) -> Result<i32, DateError> {
        let sign = match self.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(b) if b.is_ascii_alphabetic() => {
                let name = self.alpha().to_ascii_uppercase();
                return match name.as_slice() {
                    b"UT" | b"GMT" => Ok(0),
                    b"EDT" => Ok(-4 * 60),
                    b"EST" | b"CDT" => Ok(-5 * 60),
                    b"CST" | b"MDT" => Ok(-6 * 60),
                    b"MST" | b"PDT" => Ok(-7 * 60),
                    b"PST" => Ok(-8 * 60),
                    // Military zones: their signs were defined backwards in RFC 822, so §4.3
                    // says to take them as "-0000" (no information). J is not a zone.
                    [c] if *c != b'J' => Ok(0),
                    _ => Err(DateError::Syntax("zone")),
                };
            }
            _ => return Err(DateError::Syntax("zone")),
        };
        self.i += 1;
        let hhmm = self.digits(4, 4).ok_or(DateError::Syntax("zone"))?;
        let (hh, mm) = (hhmm / 100, hhmm % 100);
        if mm > 59 {
            return Err(DateError::Range("zone minutes"));
        }
        Ok(sign * (hh * 60 + mm) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_field_never_lets_a_value_start_a_field() {
        let mut out = String::new();
        write_field(
            &mut out,
            "X-Test",
            "a\r\nBcc: victim@example.com\0\x7f end\ttab é",
        );
        assert_eq!(out, "X-Test: a  Bcc: victim@example.com   end\ttab é\r\n");
        let mut out = String::new();
        write_field(&mut out, "Bad Name:\r\n", "v");
        assert_eq!(out, "Bad-Name---: v\r\n");
        let parsed: Vec<_> = fields(out.as_bytes()).collect();
        assert_eq!(parsed.len(), 1);
    }

    #[test]
    fn folded_fields_fold_only_where_asked() {
        let mut out = String::new();
        write_folded_field(&mut out, "X-Long", &["a=1;", "", "b=2\r\nBcc: x", "c=3"]);
        assert_eq!(out, "X-Long: a=1;\r\n\tb=2  Bcc: x\r\n\tc=3\r\n");
        let parsed: Vec<_> = fields(out.as_bytes()).flatten().collect();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].value(), "a=1;\tb=2  Bcc: x\tc=3", "unfolded");
    }

    #[test]
    fn a_transaction_adds_only_the_fields_it_is_asked_to() {
        let mut txn = crate::Transaction::default();
        txn.append_header("X-URIBL-Match", "evil.example\r\nX-Spam-Flag: NO");
        txn.prepend_header("X-HELO", "host\nReceived: forged");
        let names: Vec<String> = fields(txn.added_headers.as_bytes())
            .map(|f| f.expect("well formed").name().to_string())
            .collect();
        assert_eq!(names, ["X-HELO", "X-URIBL-Match"]);
    }

    fn names(h: &[u8]) -> Vec<String> {
        fields(h)
            .map(|f| match f {
                Ok(f) => f.name().to_string(),
                Err(m) => format!("!{}", m.line),
            })
            .collect()
    }

    #[test]
    fn walks_fields_and_stops_at_the_empty_line() {
        let h = b"From: a@b\r\nSubject: hi\r\n\r\nBody: not a header\r\n";
        assert_eq!(names(h), vec!["From", "Subject"]);
        let f = first(h, "subject").unwrap();
        assert_eq!(f.value(), "hi");
        assert!(matches!(f.value(), Cow::Borrowed(_)));
        assert_eq!(f.line(), 2);
        assert!(first(h, "Body").is_none());
    }

    #[test]
    fn unfolds_continuation_lines() {
        let h = b"Subject: one\r\n two\r\n\tthree\r\nTo: x\r\n\r\n";
        let f = first(h, "SUBJECT").unwrap();
        assert_eq!(f.raw_value(), b" one\r\n two\r\n\tthree");
        assert_eq!(f.value(), "one two\tthree");
        assert_eq!(first(h, "to").unwrap().line(), 4);
        // Bare LF line ends too.
        let h = b"Subject: a\n b\nTo: x\n\n";
        assert_eq!(first(h, "subject").unwrap().value(), "a b");
        assert_eq!(names(h), vec!["Subject", "To"]);
    }

    #[test]
    fn malformed_lines_are_reported_and_skipped() {
        let h = b" leading continuation\r\nFrom a@b\r\n: no name\r\nBad\x01Name: x\r\n\
                  Good: y\r\nNoColon\r\n more\r\nLast: z\r\n";
        assert_eq!(names(h), vec!["!1", "!2", "!3", "!4", "Good", "!6", "Last"]);
        let bad = fields(h).nth(1).unwrap().unwrap_err();
        assert_eq!(bad.text, b"From a@b");
        assert_eq!(bad.to_string(), "line 2: not a header field: 'From a@b'");
        let last = fields(h).last().unwrap().unwrap();
        assert_eq!((last.name(), last.line()), ("Last", 8));
    }

    #[test]
    fn obsolete_space_before_colon() {
        let h = b"Subject : x\r\nDate\t: y\r\n";
        assert_eq!(names(h), vec!["Subject", "Date"]);
        assert_eq!(first(h, "date").unwrap().value(), "y");
    }

    #[test]
    fn empty_values_and_counts() {
        let h = b"From:\r\nTo:  \r\n \r\nReceived: a\r\nreceived: b\r\nDelivered-To: c\r\n";
        assert!(first(h, "from").unwrap().is_empty());
        assert!(first(h, "to").unwrap().is_empty());
        assert!(!first(h, "received").unwrap().is_empty());
        assert_eq!(count(h, &["Received", "Delivered-To"]), 3);
        assert_eq!(count(b"", &["x"]), 0);
        assert_eq!(fields(b"\r\nFrom: x\r\n").count(), 0);
    }

    #[test]
    fn non_utf8_value_is_lossy() {
        let h = b"Subject: caf\xe9\r\n";
        assert_eq!(first(h, "subject").unwrap().value(), "caf\u{fffd}");
    }

    fn ts(s: &str) -> i64 {
        parse_date(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .timestamp
    }

    #[test]
    fn dates_of_rfc5322_appendix_a() {
        // A.1.1: 1997-11-21 15:55:06 UTC.
        assert_eq!(ts("Fri, 21 Nov 1997 09:55:06 -0600"), 880127706);
        assert_eq!(ts("Tue, 1 Jul 2003 10:52:37 +0200"), 1057049557);
        assert_eq!(ts("Thu, 13 Feb 1969 23:32:54 -0330"), -27723426);
        // A.5: comments and folding everywhere.
        assert_eq!(
            ts("Thu,\r\n  13\r\n    Feb\r\n      1969\r\n  23:32\r\n  -0330 (Newfoundland Time)"),
            -27723426 - 54 // no seconds
        );
        // A.6.2: two-digit year and an obsolete zone.
        assert_eq!(ts("21 Nov 97 09:55:06 GMT"), 880106106);
        // A.6.3: white space around the colons.
        assert_eq!(
            ts("Fri, 21 Nov 1997 09(comment):   55  :  06 -0600"),
            880127706
        );
        assert_eq!(ts("1 Jan 1970 00:00 +0000"), 0);
        assert_eq!(ts("Thu, 01 Jan 1970 00:00:00 (x (nested \\) y)) UT"), 0);
    }

    #[test]
    fn obsolete_years_zones_and_case() {
        assert_eq!(ts("1 jan 49 00:00 +0000"), ts("1 Jan 2049 00:00 +0000"));
        assert_eq!(ts("1 JAN 50 00:00 +0000"), ts("1 Jan 1950 00:00 +0000"));
        assert_eq!(ts("1 Jan 103 00:00 +0000"), ts("1 Jan 2003 00:00 +0000"));
        assert_eq!(ts("1 Jan 2000 00:00 EST"), ts("1 Jan 2000 05:00 +0000"));
        assert_eq!(ts("1 Jan 2000 00:00 pdt"), ts("1 Jan 2000 07:00 +0000"));
        assert_eq!(ts("1 Jan 2000 00:00 Z"), ts("1 Jan 2000 00:00 +0000"));
        assert_eq!(ts("1 Jan 2000 00:00 A"), ts("1 Jan 2000 00:00 +0000"));
        assert_eq!(ts("21Nov97 09:55:06 GMT"), 880106106);
        assert_eq!(
            parse_date("1 Jan 2000 00:00 -0130").unwrap().offset_minutes,
            -90
        );
        assert_eq!(
            ts("31 Dec 1999 23:59:60 +0000"),
            ts("1 Jan 2000 00:00 +0000")
        );
        assert_eq!(ts("29 Feb 2000 12:00 +0000"), 951825600);
    }

    #[test]
    fn bad_dates_are_refused() {
        use DateError::*;
        for (s, want) in [
            ("", Syntax("day")),
            (
                "Fri 21 Nov 1997 09:55:06 -0600",
                Syntax("',' after the day of week"),
            ),
            ("Fry, 21 Nov 1997 09:55:06 -0600", Syntax("day of week")),
            ("21 Novem 1997 09:55:06 -0600", Syntax("month")),
            ("123 Nov 1997 09:55:06 -0600", Syntax("day")),
            ("21 Nov 1 09:55:06 -0600", Syntax("year")),
            ("21 Nov 1997 9:55:06 -0600", Syntax("hour")),
            ("21 Nov 1997 09.55 -0600", Syntax("':' after the hour")),
            ("21 Nov 1997 09:55:06", Syntax("zone")),
            ("21 Nov 1997 09:55:06 -060", Syntax("zone")),
            ("21 Nov 1997 09:55:06 -06000", Syntax("zone")),
            ("21 Nov 1997 09:55:06 J", Syntax("zone")),
            ("21 Nov 1997 09:55:06 CEST", Syntax("zone")),
            (
                "21 Nov 1997 09:55:06 -0600 x",
                Syntax("text after the zone"),
            ),
            (
                "21 Nov 1997 09:55:06 -0600 (open",
                Syntax("unclosed comment"),
            ),
            ("31 Apr 1997 09:55:06 -0600", Range("day")),
            ("29 Feb 1900 09:55:06 -0600", Range("day")),
            ("0 Feb 1997 09:55:06 -0600", Range("day")),
            ("21 Nov 1899 09:55:06 -0600", Range("year")),
            ("21 Nov 1997 24:00:00 -0600", Range("hour")),
            ("21 Nov 1997 23:60:00 -0600", Range("minute")),
            ("21 Nov 1997 23:59:61 -0600", Range("second")),
            ("21 Nov 1997 23:59:59 -0660", Range("zone minutes")),
            ("Sat, 21 Nov 1997 09:55:06 -0600", Weekday),
            // asctime(3), what Perl's Date::Parse also took: not RFC 5322.
            (
                "Fri Nov 21 09:55:06 1997",
                Syntax("',' after the day of week"),
            ),
        ] {
            assert_eq!(parse_date(s), Err(want), "{s}");
        }
    }
}
