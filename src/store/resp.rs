//! RESP2, the Redis protocol, as far as the store needs it: commands out as arrays of bulk
//! strings (binary-safe: a key or value holding `\r\n` or `*3` stays data), and the replies
//! those commands give back (simple strings, errors, integers, bulk strings). Strict and
//! bounded: a reply line is at most [`MAX_LINE`] bytes, a bulk string at most
//! [`MAX_BULK`], an array (no command we send answers one) is a protocol error.

use ringsmtpd_plugin_api::store::MAX_VALUE;

/// The longest simple string, error or integer line, without CRLF.
pub const MAX_LINE: usize = 4096;
/// The largest bulk string.
pub const MAX_BULK: usize = MAX_VALUE;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    /// `None`: the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
}

/// Appends the command `args` (e.g. `["SET", key, value]`) to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply at the start of `buf`: `Ok(None)` if more bytes are needed, else the
/// reply and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    let Some((line, after)) = line(buf)? else {
        return Ok(None);
    };
    let (kind, rest) = match line.split_first() {
        Some((k, rest)) => (*k, rest),
        None => return Err("empty reply line".into()),
    };
    Ok(Some(match kind {
        b'+' => (Value::Simple(rest.to_vec()), after),
        b'-' => (Value::Error(rest.to_vec()), after),
        b':' => (Value::Int(int(rest)?), after),
        b'$' => {
            let len = int(rest)?;
            if len == -1 {
                return Ok(Some((Value::Bulk(None), after)));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= MAX_BULK)
                .ok_or_else(|| format!("bulk length {len} out of bounds"))?;
            let end = after + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("bulk string not followed by CRLF".into());
            }
            (Value::Bulk(Some(buf[after..end].to_vec())), end + 2)
        }
        other => return Err(format!("unexpected reply type {:?}", other as char)),
    }))
}

/// The line at the start of `buf` without its CRLF, and where the next begins.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    let window = &buf[..buf.len().min(MAX_LINE + 2)];
    match memchr::memchr(b'\n', window) {
        Some(0) => Err("bare LF in a reply".into()),
        Some(i) if window[i - 1] == b'\r' => Ok(Some((&buf[..i - 1], i + 1))),
        Some(_) => Err("bare LF in a reply".into()),
        None if buf.len() > MAX_LINE + 1 => Err("reply line too long".into()),
        None => Ok(None),
    }
}

/// A RESP integer: an optional `-` and digits, nothing else.
fn int(s: &[u8]) -> Result<i64, String> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("bad integer {:?}", s.escape_ascii().to_string()));
    }
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("bad integer {:?}", s.escape_ascii().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_binary_safe() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k\r\n*1\r\n$4\r\nPING", b""]);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$15\r\nk\r\n*1\r\n$4\r\nPING\r\n$0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn replies() {
        let p = |b: &[u8]| parse(b);
        assert_eq!(p(b"+OK\r\n"), Ok(Some((Value::Simple(b"OK".to_vec()), 5))));
        assert_eq!(
            p(b"-ERR no\r\n+OK"),
            Ok(Some((Value::Error(b"ERR no".to_vec()), 9)))
        );
        assert_eq!(p(b":-12\r\n"), Ok(Some((Value::Int(-12), 6))));
        assert_eq!(p(b"$-1\r\n"), Ok(Some((Value::Bulk(None), 5))));
        // Leading zeros are digits like any (found by the fuzz target, which had assumed
        // the null bulk is always 5 bytes: fuzz/corpus/resp_reply/null-bulk-with-leading-zero).
        assert_eq!(p(b"$-01\r\n"), Ok(Some((Value::Bulk(None), 6))));
        assert_eq!(
            p(b"$5\r\na\r\nbc\r\n"),
            Ok(Some((Value::Bulk(Some(b"a\r\nbc".to_vec())), 11)))
        );
        // incomplete: wait for more
        for partial in [
            &b""[..],
            b"+O",
            b"+OK\r",
            b"$5\r\na\r\nb",
            b"$5\r\na\r\nbc\r",
        ] {
            assert_eq!(p(partial), Ok(None), "{partial:?}");
        }
        // hostile or broken
        for bad in [
            &b"*1\r\n:1\r\n"[..],
            b"\r\n",
            b"+OK\n",
            b":12a\r\n",
            b":\r\n",
            b":99999999999999999999\r\n",
            b"$-2\r\n",
            b"$5\r\nabcdeXY",
            b"$99999999\r\n",
            b"?\r\n",
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
        let long = vec![b'+'; MAX_LINE + 10];
        assert!(p(&long).is_err());
    }
}
