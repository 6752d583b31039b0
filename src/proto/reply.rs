//! The reply writer: SMTP replies as bytes (RFC 5321 §4.2), one line or several, with the
//! enhanced status code (RFC 2034) on every line, and never a control character from a
//! plugin's text on the wire. Replies are appended to one buffer that the session sends once
//! per pipelined batch.

/// Appends one reply to `out`. `text` may hold several lines separated by `\n`
/// (multi-line reply, RFC 5321 §4.2.1). `enhanced` is put before the text of every line
/// (RFC 2034 §3), unless it is empty (greeting, EHLO and 354 replies carry none).
pub fn write(out: &mut Vec<u8>, code: u16, enhanced: &str, text: &str) {
    let mut lines = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .peekable();
    let code = code_digits(code);
    while let Some(line) = lines.next() {
        out.extend_from_slice(&code);
        out.push(if lines.peek().is_some() { b'-' } else { b' ' });
        if !enhanced.is_empty() {
            out.extend_from_slice(enhanced.as_bytes());
            out.push(b' ');
        }
        // A reply never carries a control character from a plugin's text into the stream.
        for &b in line.as_bytes() {
            out.push(if b < 0x20 && b != b'\t' { b'?' } else { b });
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends a one-line reply whose text is formatted straight into `out`: no allocation, which
/// keeps the per-command path allocation-free. Control characters in the text become `?`.
pub fn line(out: &mut Vec<u8>, code: u16, enhanced: &str, text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    out.extend_from_slice(&code_digits(code));
    out.push(b' ');
    if !enhanced.is_empty() {
        out.extend_from_slice(enhanced.as_bytes());
        out.push(b' ');
    }
    let start = out.len();
    let _ = out.write_fmt(text); // writing to a Vec cannot fail
    for b in &mut out[start..] {
        if *b < 0x20 && *b != b'\t' {
            *b = b'?';
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn code_digits(code: u16) -> [u8; 3] {
    let code = code.clamp(200, 599);
    [
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(code: u16, enh: &str, text: &str) -> String {
        let mut out = Vec::new();
        write(&mut out, code, enh, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn single_and_multi_line() {
        assert_eq!(written(250, "2.0.0", "OK"), "250 2.0.0 OK\r\n");
        assert_eq!(written(220, "", "mx ESMTP"), "220 mx ESMTP\r\n");
        assert_eq!(
            written(214, "2.0.0", "a\nb\nc"),
            "214-2.0.0 a\r\n214-2.0.0 b\r\n214 2.0.0 c\r\n"
        );
    }

    #[test]
    fn control_chars_never_reach_the_wire() {
        assert_eq!(written(550, "5.7.1", "a\rb\x00c"), "550 5.7.1 a?b?c\r\n");
    }
}
