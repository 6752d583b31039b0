//! One SMTP command line to a [`Command`], without I/O and without allocating.
//!
//! The caller (the session) has already cut the line at its CRLF and refused bare CR/LF and
//! over-long lines (DESIGN §3); this module only looks at the words. Paths and ESMTP
//! parameters are split off here but validated elsewhere: paths by
//! [`ringsmtpd_plugin_api::address::parse_path`], parameters by [`super::params`].
//!
//! Decisions where the RFCs leave room:
//! - An empty line (or one of only blanks) is a 500 syntax error, like an unknown verb.
//! - Blanks (SP or HTAB) between the verb and its argument may be several, and trailing blanks
//!   are ignored, so `DATA ` is DATA. A line starting with a blank has no verb: 500.
//! - `MAIL FROM: <a@b>` (blanks after the colon) is accepted, as Postfix and qpsmtpd do,
//!   although RFC 5321 §4.1.1.2 has no space there. `MAIL FROM :<a@b>` is not.

/// One SMTP command line, borrowing from the read buffer. `line` is without the CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// HELO and EHLO (RFC 5321 §4.1.1.1): the first word of the argument, a domain or address
    /// literal as sent. Only checked to be present; policy belongs to the helo plugin.
    Helo(&'a str),
    Ehlo(&'a str),
    /// `MAIL FROM:<path> [params]` (RFC 5321 §4.1.1.2). `path` is exactly as sent, brackets
    /// included (or missing, for the path parser to refuse); `params` is the trimmed rest.
    Mail {
        path: &'a str,
        params: &'a str,
    },
    /// `RCPT TO:<path> [params]` (RFC 5321 §4.1.1.3), split like [`Command::Mail`].
    Rcpt {
        path: &'a str,
        params: &'a str,
    },
    /// DATA (RFC 5321 §4.1.1.4).
    Data,
    /// `BDAT size [LAST]` (RFC 3030 §2).
    Bdat {
        size: u64,
        last: bool,
    },
    /// RSET (RFC 5321 §4.1.1.5).
    Rset,
    /// NOOP, whose argument is allowed and ignored (RFC 5321 §4.1.1.9).
    Noop,
    /// QUIT (RFC 5321 §4.1.1.10).
    Quit,
    /// VRFY with its trimmed, possibly empty, argument (RFC 5321 §4.1.1.6).
    Vrfy(&'a str),
    /// HELP with its trimmed, possibly empty, argument (RFC 5321 §4.1.1.8).
    Help(&'a str),
    /// STARTTLS (RFC 3207 §4).
    StartTls,
    /// AUTH with its trimmed argument, mechanism and initial response (RFC 4954 §4).
    Auth(&'a str),
    /// Any other well-formed verb (EXPN, ETRN, ...), as sent; the engine lowercases it for the
    /// unrecognized_command hook.
    Unknown {
        verb: &'a str,
        args: &'a str,
    },
}

/// A line that is not a usable command; `text` begins with an enhanced status code (RFC 3463)
/// and says the expected syntax, and becomes the reply text after `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntaxError {
    pub code: u16,
    pub text: &'static str,
}

/// 500 for lines that are not a command at all (RFC 5321 §4.2.4: "command unrecognized").
const fn unrecognized(text: &'static str) -> SyntaxError {
    SyntaxError { code: 500, text }
}

/// 501 for a known verb with a bad argument (RFC 5321 §4.2.4: "Syntax error in parameters or
/// arguments").
const fn usage(text: &'static str) -> SyntaxError {
    SyntaxError { code: 501, text }
}

const NOT_UTF8: SyntaxError = unrecognized("5.5.2 Syntax error, command is not valid UTF-8");
const CONTROL: SyntaxError = unrecognized("5.5.2 Syntax error, control character in command");
const UNRECOGNIZED: SyntaxError = unrecognized("5.5.2 Syntax error, command unrecognized");
const MAIL_SYNTAX: SyntaxError = usage("5.5.4 Syntax: MAIL FROM:<address> [parameters]");
const RCPT_SYNTAX: SyntaxError = usage("5.5.4 Syntax: RCPT TO:<address> [parameters]");
const BDAT_SYNTAX: SyntaxError = usage("5.5.4 Syntax: BDAT size [LAST]");

/// The longest verb we recognise as a word; longer ones are garbage, not commands (qpsmtpd
/// treats such lines as unrecognized too). STARTTLS, the longest real verb, has 8 letters.
const MAX_VERB: usize = 12;

/// SP and HTAB separate words; RFC 5321 says SP, HTAB is tolerated like Postfix does.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses one command line (without its CRLF). Never allocates; every `&str` in the result
/// borrows from `line`.
///
/// - Not UTF-8 (RFC 6531 allows UTF-8, nothing else) or a control character other than HTAB
///   (NUL, CR, LF, DEL, ...): 500 5.5.2.
/// - Verb not `[A-Za-z0-9]{1,12}`, or an empty line: 500 5.5.2. Verbs are case-insensitive
///   (RFC 5321 §2.4).
/// - DATA, RSET, QUIT, STARTTLS with an argument, HELO/EHLO without one, a MAIL/RCPT without
///   `FROM:`/`TO:` and a path, a BDAT without a valid size: 501 5.5.4 with the syntax.
pub fn parse(line: &[u8]) -> Result<Command<'_>, SyntaxError> {
    let line = std::str::from_utf8(line).map_err(|_| NOT_UTF8)?;
    if line.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(CONTROL);
    }
    let (verb, args) = line.split_once(is_blank).unwrap_or((line, ""));
    let args = args.trim_matches(is_blank);
    if verb.is_empty() || verb.len() > MAX_VERB || !verb.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(UNRECOGNIZED);
    }
    let mut lower = [0u8; MAX_VERB];
    let lower = lower.get_mut(..verb.len()).ok_or(UNRECOGNIZED)?;
    lower.copy_from_slice(verb.as_bytes());
    lower.make_ascii_lowercase();
    let bare = |cmd, err| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(usage(err))
        }
    };
    match &*lower {
        b"helo" => hello(args, "5.5.4 Syntax: HELO hostname").map(Command::Helo),
        b"ehlo" => hello(args, "5.5.4 Syntax: EHLO hostname").map(Command::Ehlo),
        b"mail" => path_and_params(args, "FROM:")
            .map(|(path, params)| Command::Mail { path, params })
            .ok_or(MAIL_SYNTAX),
        b"rcpt" => path_and_params(args, "TO:")
            .map(|(path, params)| Command::Rcpt { path, params })
            .ok_or(RCPT_SYNTAX),
        b"data" => bare(Command::Data, "5.5.4 Syntax: DATA"),
        b"bdat" => bdat(args).ok_or(BDAT_SYNTAX),
        b"rset" => bare(Command::Rset, "5.5.4 Syntax: RSET"),
        b"noop" => Ok(Command::Noop),
        b"quit" => bare(Command::Quit, "5.5.4 Syntax: QUIT"),
        b"vrfy" => Ok(Command::Vrfy(args)),
        b"help" => Ok(Command::Help(args)),
        b"starttls" => bare(Command::StartTls, "5.5.4 Syntax: STARTTLS"),
        b"auth" => Ok(Command::Auth(args)),
        _ => Ok(Command::Unknown { verb, args }),
    }
}

/// HELO/EHLO (RFC 5321 §4.1.1.1): the first word is the client's name; anything after it is
/// ignored, as qpsmtpd does. The name's form is the helo plugin's business.
fn hello<'a>(args: &'a str, syntax: &'static str) -> Result<&'a str, SyntaxError> {
    match args.split(is_blank).next() {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(usage(syntax)),
    }
}

/// `FROM:<path> params` / `TO:<path> params`: the keyword (case-insensitive), optional blanks,
/// then the path up to the first blank outside a quoted string (a quoted local part may hold
/// spaces, RFC 5321 §4.1.2), then the trimmed parameters. `None` if the keyword or path is
/// missing. Whatever sticks to the path (`<a@b>x`) stays in it for the path parser to refuse.
fn path_and_params<'a>(args: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args.get(keyword.len()..)?.trim_start_matches(is_blank);
    let (mut quoted, mut escaped) = (false, false);
    let end = rest
        .char_indices()
        .find(|&(_, c)| {
            match (quoted, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, false, '"') => quoted = !quoted,
                (false, _, c) if is_blank(c) => return true,
                _ => {}
            }
            false
        })
        .map_or(rest.len(), |(i, _)| i);
    let (path, params) = rest.split_at(end);
    if path.is_empty() {
        return None;
    }
    Some((path, params.trim_matches(is_blank)))
}

/// `BDAT SP chunk-size [ SP end-marker ]`, chunk-size = 1*DIGIT, end-marker = "LAST"
/// (RFC 3030 §2). A size that does not fit u64 is a syntax error.
fn bdat(args: &str) -> Option<Command<'static>> {
    let mut words = args.split(is_blank).filter(|w| !w.is_empty());
    let size = words.next()?;
    // u64::from_str would accept a leading '+'; chunk-size is digits only.
    if !size.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let size = size.parse().ok()?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    match words.next() {
        None => Some(Command::Bdat { size, last }),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command<'_> {
        match parse(line.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{line:?} should parse, got {e:?}"),
        }
    }

    fn err(line: &[u8]) -> SyntaxError {
        match parse(line) {
            Ok(c) => panic!("{:?} should fail, got {c:?}", String::from_utf8_lossy(line)),
            Err(e) => e,
        }
    }

    /// True if `part` points into `whole` (a borrow, not a copy).
    fn borrows(whole: &str, part: &str) -> bool {
        let range = whole.as_bytes().as_ptr_range();
        part.is_empty() || (range.contains(&part.as_ptr()) && part.len() <= whole.len())
    }

    #[test]
    fn simple_verbs_any_case() {
        for (line, want) in [
            ("DATA", Command::Data),
            ("data", Command::Data),
            ("DaTa ", Command::Data),
            ("RSET", Command::Rset),
            ("QUIT", Command::Quit),
            ("quit\t", Command::Quit),
            ("STARTTLS", Command::StartTls),
            ("starttls", Command::StartTls),
            ("NOOP", Command::Noop),
            ("NOOP anything at all", Command::Noop),
        ] {
            assert_eq!(ok(line), want, "{line:?}");
        }
    }

    #[test]
    fn bare_verbs_refuse_arguments() {
        for (line, text) in [
            ("DATA x", "5.5.4 Syntax: DATA"),
            ("RSET now", "5.5.4 Syntax: RSET"),
            ("QUIT please", "5.5.4 Syntax: QUIT"),
            ("STARTTLS x", "5.5.4 Syntax: STARTTLS"),
        ] {
            assert_eq!(
                err(line.as_bytes()),
                SyntaxError { code: 501, text },
                "{line:?}"
            );
        }
    }

    #[test]
    fn helo_and_ehlo() {
        assert_eq!(ok("HELO mx.example.com"), Command::Helo("mx.example.com"));
        assert_eq!(ok("ehlo [192.0.2.1]"), Command::Ehlo("[192.0.2.1]"));
        assert_eq!(ok("EHLO   host  extra words "), Command::Ehlo("host"));
        assert_eq!(ok("EHLO\thost"), Command::Ehlo("host"));
        assert_eq!(err(b"HELO"), usage("5.5.4 Syntax: HELO hostname"));
        assert_eq!(err(b"EHLO "), usage("5.5.4 Syntax: EHLO hostname"));
        assert_eq!(err(b"EHLO \t "), usage("5.5.4 Syntax: EHLO hostname"));
    }

    #[test]
    fn mail_from() {
        let cases = [
            ("MAIL FROM:<a@b>", "<a@b>", ""),
            ("mail from:<a@b>", "<a@b>", ""),
            ("Mail From:<>", "<>", ""),
            ("MAIL FROM: <a@b>", "<a@b>", ""),
            (
                "MAIL FROM:   <a@b>   SIZE=100  BODY=8BITMIME  ",
                "<a@b>",
                "SIZE=100  BODY=8BITMIME",
            ),
            ("MAIL  FROM:<a@b> SMTPUTF8", "<a@b>", "SMTPUTF8"),
            (
                "MAIL FROM:<\"john doe\"@x> SIZE=1",
                "<\"john doe\"@x>",
                "SIZE=1",
            ),
            ("MAIL FROM:<\"a\\\" b\"@x> X", "<\"a\\\" b\"@x>", "X"),
            ("MAIL FROM:a@b SIZE=1", "a@b", "SIZE=1"),
            ("MAIL FROM:<a@b>x SIZE=1", "<a@b>x", "SIZE=1"),
            ("MAIL FROM:<a@b SIZE=1", "<a@b", "SIZE=1"),
            ("MAIL FROM:<\"open@x> SIZE=1", "<\"open@x> SIZE=1", ""),
            (
                "MAIL FROM:<用户@例子.广告> SMTPUTF8",
                "<用户@例子.广告>",
                "SMTPUTF8",
            ),
        ];
        for (line, path, params) in cases {
            assert_eq!(ok(line), Command::Mail { path, params }, "{line:?}");
        }
        for line in [
            "MAIL",
            "MAIL FROM:",
            "MAIL FROM:   ",
            "MAIL TO:<a@b>",
            "MAIL FROM <a@b>",
            "MAIL FROM :<a@b>",
            "MAIL <a@b>",
            "MAIL FRO",
        ] {
            assert_eq!(err(line.as_bytes()), MAIL_SYNTAX, "{line:?}");
        }
        assert_eq!(MAIL_SYNTAX.code, 501);
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(
            ok("RCPT TO:<a@b>"),
            Command::Rcpt {
                path: "<a@b>",
                params: ""
            }
        );
        assert_eq!(
            ok("rcpt to: <postmaster> NOTIFY=NEVER"),
            Command::Rcpt {
                path: "<postmaster>",
                params: "NOTIFY=NEVER"
            }
        );
        assert_eq!(
            ok("RCPT To:<@r:a@b> ORCPT=rfc822;a@b"),
            Command::Rcpt {
                path: "<@r:a@b>",
                params: "ORCPT=rfc822;a@b"
            }
        );
        for line in [
            "RCPT",
            "RCPT TO:",
            "RCPT FROM:<a@b>",
            "RCPT T",
            "RCPT TO <a@b>",
        ] {
            assert_eq!(err(line.as_bytes()), RCPT_SYNTAX, "{line:?}");
        }
    }

    #[test]
    fn bdat() {
        assert_eq!(
            ok("BDAT 0"),
            Command::Bdat {
                size: 0,
                last: false
            }
        );
        assert_eq!(
            ok("BDAT 1000 LAST"),
            Command::Bdat {
                size: 1000,
                last: true
            }
        );
        assert_eq!(
            ok("bdat 5  last "),
            Command::Bdat {
                size: 5,
                last: true
            }
        );
        assert_eq!(
            ok("BDAT 18446744073709551615"),
            Command::Bdat {
                size: u64::MAX,
                last: false
            }
        );
        for line in [
            "BDAT",
            "BDAT LAST",
            "BDAT -1",
            "BDAT +5",
            "BDAT 1e3",
            "BDAT 5 FIRST",
            "BDAT 5 LAST x",
            "BDAT 18446744073709551616",
            "BDAT 5LAST",
        ] {
            assert_eq!(err(line.as_bytes()), BDAT_SYNTAX, "{line:?}");
        }
    }

    #[test]
    fn arguments_kept_trimmed() {
        assert_eq!(ok("VRFY"), Command::Vrfy(""));
        assert_eq!(ok("VRFY  postmaster "), Command::Vrfy("postmaster"));
        assert_eq!(ok("HELP"), Command::Help(""));
        assert_eq!(ok("help mail"), Command::Help("mail"));
        assert_eq!(
            ok("AUTH PLAIN AGZvbwBiYXI="),
            Command::Auth("PLAIN AGZvbwBiYXI=")
        );
        assert_eq!(ok("AUTH"), Command::Auth(""));
    }

    #[test]
    fn unknown_verbs_pass_through() {
        assert_eq!(
            ok("EXPN staff"),
            Command::Unknown {
                verb: "EXPN",
                args: "staff"
            }
        );
        assert_eq!(
            ok("Etrn  @example.com "),
            Command::Unknown {
                verb: "Etrn",
                args: "@example.com"
            }
        );
        assert_eq!(
            ok("XCLIENT2"),
            Command::Unknown {
                verb: "XCLIENT2",
                args: ""
            }
        );
        assert_eq!(
            ok("ABCDEFGHIJKL x"),
            Command::Unknown {
                verb: "ABCDEFGHIJKL",
                args: "x"
            }
        );
    }

    #[test]
    fn garbage_is_unrecognized() {
        for line in [
            &b""[..],
            b"   ",
            b" DATA",
            b"ABCDEFGHIJKLM",
            b"MAILFROM:<a@b>",
            b"GET/ HTTP/1.1",
            b"H\xc3\xa9LO x",
            b"-",
        ] {
            assert_eq!(
                err(line),
                UNRECOGNIZED,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(UNRECOGNIZED.code, 500);
        // A well-formed verb is the engine's to refuse (e.g. an HTTP client's "GET").
        assert_eq!(
            ok("GET / HTTP/1.1"),
            Command::Unknown {
                verb: "GET",
                args: "/ HTTP/1.1"
            }
        );
    }

    #[test]
    fn bytes_and_controls() {
        assert_eq!(err(b"HELO \xff"), NOT_UTF8);
        assert_eq!(err(b"MAIL FROM:<a\xc3@b>"), NOT_UTF8);
        for line in [
            &b"NOOP \0"[..],
            b"DA\0TA",
            b"HELO a\rb",
            b"RCPT TO:<a@b>\n",
            b"NOOP \x1b[2J",
            b"NOOP \x7f",
        ] {
            assert_eq!(err(line), CONTROL, "{:?}", String::from_utf8_lossy(line));
        }
        assert!(NOT_UTF8.text.starts_with("5.5.2 ") && CONTROL.code == 500);
        // A tab is not a control character here.
        assert_eq!(ok("NOOP\ta\tb"), Command::Noop);
    }

    #[test]
    fn results_borrow_from_the_line() {
        let line = "MAIL FROM:<a@b> SIZE=1 BODY=8BITMIME";
        let Command::Mail { path, params } = ok(line) else {
            panic!("not MAIL")
        };
        assert!(borrows(line, path) && borrows(line, params));
        assert_eq!(path.as_ptr(), line[10..].as_ptr());
        let line = "XYZ some args";
        let Command::Unknown { verb, args } = ok(line) else {
            panic!("not unknown")
        };
        assert_eq!(
            (verb.as_ptr(), args.as_ptr()),
            (line.as_ptr(), line[4..].as_ptr())
        );
        let line = "EHLO host";
        let Command::Ehlo(host) = ok(line) else {
            panic!("not EHLO")
        };
        assert_eq!(host.as_ptr(), line[5..].as_ptr());
    }

    use ringsmtpd_plugin_api::testing as counting;

    #[test]
    fn parse_does_not_allocate() {
        let lines: [&[u8]; 12] = [
            b"EHLO mx.example.com",
            b"MAIL FROM:<a@b.example> SIZE=12345 BODY=8BITMIME",
            b"RCPT TO:<\"x y\"@c.example> NOTIFY=NEVER",
            b"DATA",
            b"BDAT 100 LAST",
            b"DATA x",
            b"MAIL FROM",
            b"HELO",
            b"\xff",
            b"NOOP \0",
            b"XYZZY1234567890",
            b"EXPN list",
        ];
        let before = counting::allocations();
        let mut n = 0;
        for line in lines {
            n += usize::from(parse(line).is_ok());
        }
        assert_eq!(counting::allocations(), before);
        assert_eq!(n, 6);
    }
}
