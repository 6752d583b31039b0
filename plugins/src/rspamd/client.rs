//! One HTTP/1.1 exchange with rspamd on a stream the shared scanner client opened
//! ([`crate::helpers::scanner::Scanner::call`], which also holds the slot and the deadline):
//! `POST /checkv2` with the envelope as request headers and the message streamed after them
//! ([`BodyChunks`]: from memory, or from the spool file in chunks read on the blocking pool),
//! then the answer read with bounds: a status line and header section of at most
//! [`MAX_HEAD`], a body of at most [`MAX_BODY`] delimited by `Content-Length`, chunked coding,
//! or the end of the connection (we send `Connection: close`).

use ringsmtpd_plugin_api::net::Stream;
use ringsmtpd_plugin_api::{Services, Transaction};

use crate::helpers::scanner::BodyChunks;

/// The longest status line and header section accepted from rspamd.
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest JSON answer accepted: a real one is a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// Sends `head` (request line and header fields, ending in the empty line; its
/// Content-Length is [`BodyChunks::total`]), then the message as it will be queued, and
/// returns the answer's body.
pub async fn exchange(
    svc: &dyn Services,
    mut stream: Box<dyn Stream>,
    head: Vec<u8>,
    txn: &Transaction,
) -> Result<Vec<u8>, String> {
    let sent = |e: std::io::Error| format!("cannot send to rspamd: {e}");
    let mut chunks = BodyChunks::new(txn).map_err(|e| format!("cannot read the message: {e}"))?;
    let (res, mut buf) = stream.write_all(head).await;
    res.map_err(sent)?;
    loop {
        buf = chunks
            .next(svc, buf)
            .await
            .map_err(|e| format!("cannot read the message: {e}"))?;
        if buf.is_empty() {
            break;
        }
        let (res, b) = stream.write_all(buf).await;
        res.map_err(sent)?;
        buf = b;
    }
    read_answer(&mut *stream).await
}

/// Reads the answer: `200` status, then its body as its framing says.
async fn read_answer(stream: &mut dyn Stream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(8 * 1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("answer header over {MAX_HEAD} bytes"));
        }
        if fill(stream, &mut buf).await? == 0 {
            return Err("connection closed before the answer's header ended".into());
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "answer header not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .ok_or_else(|| format!("bad status line '{}'", super::reply::clean(status, 80)))?;
    if code != "200" {
        return Err(format!("HTTP status '{}'", super::reply::clean(status, 80)));
    }
    let mut length = None;
    let mut chunked = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or("bad answer header line")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| "bad Content-Length")?;
            if n > MAX_BODY {
                return Err(format!("answer of {n} bytes, over {MAX_BODY}"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err("unknown Transfer-Encoding".into());
            }
        }
    }
    let mut body = buf.split_off(head_end);
    if chunked {
        return read_chunked(stream, body).await;
    }
    match length {
        Some(n) => {
            while body.len() < n {
                if fill(stream, &mut body).await? == 0 {
                    return Err("connection closed in the answer's body".into());
                }
            }
            body.truncate(n);
        }
        // No length: the body ends with the connection.
        None => while fill(stream, &mut body).await? > 0 {},
    }
    if body.len() > MAX_BODY {
        return Err(format!("answer over {MAX_BODY} bytes"));
    }
    Ok(body)
}

/// A chunked body (RFC 9112 §7.1): `size[;ext] CRLF data CRLF`..., `0 CRLF` [trailers] CRLF.
async fn read_chunked(stream: &mut dyn Stream, mut raw: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let line_end = loop {
            if let Some(i) = raw[at..].windows(2).position(|w| w == b"\r\n") {
                break at + i;
            }
            if raw.len() - at > 1024 {
                return Err("chunk size line too long".into());
            }
            if fill(stream, &mut raw).await? == 0 {
                return Err("connection closed in a chunked answer".into());
            }
        };
        let line = std::str::from_utf8(&raw[at..line_end]).map_err(|_| "bad chunk size")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| "bad chunk size")?;
        if size > MAX_BODY || out.len() + size > MAX_BODY {
            return Err(format!("answer over {MAX_BODY} bytes"));
        }
        at = line_end + 2;
        if size == 0 {
            // Trailer fields are not used; the body is complete.
            return Ok(out);
        }
        while raw.len() < at + size + 2 {
            if fill(stream, &mut raw).await? == 0 {
                return Err("connection closed in a chunk".into());
            }
        }
        out.extend_from_slice(&raw[at..at + size]);
        if &raw[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk not ended by CRLF".into());
        }
        at += size + 2;
    }
}

/// Reads more into `buf`; refuses to grow it past the bounds.
async fn fill(stream: &mut dyn Stream, buf: &mut Vec<u8>) -> Result<usize, String> {
    if buf.len() > MAX_HEAD + 2 * MAX_BODY {
        return Err(format!("answer over {MAX_BODY} bytes"));
    }
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    let (res, b) = stream.read(std::mem::take(buf)).await;
    *buf = b;
    res.map_err(|e| format!("read: {e}"))
}
