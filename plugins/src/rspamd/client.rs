//! One HTTP/1.1 exchange with rspamd on the worker's sockets: `POST /checkv2` with the envelope
//! as request headers and the message streamed after them (from memory, or from the spool file
//! in chunks read on the blocking pool), then the answer read with bounds: a status line and
//! header section of at most [`MAX_HEAD`], a body of at most [`MAX_BODY`] delimited by
//! `Content-Length`, chunked coding, or the end of the connection (we send
//! `Connection: close`). Every step runs under what is left of one deadline.

use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use ringsmtpd_plugin_api::net::{Endpoint, Stream};
use ringsmtpd_plugin_api::{blocking, Body, Services};

use crate::helpers::deadline::within;

/// The longest status line and header section accepted from rspamd.
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest JSON answer accepted: a real one is a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;
/// Bytes read from a spool file at a time.
const CHUNK: usize = 64 * 1024;

/// The time left of one scan.
pub struct Deadline {
    end: SystemTime,
}

impl Deadline {
    pub fn new(svc: &dyn Services, limit: Duration) -> Deadline {
        Deadline {
            end: svc.now() + limit,
        }
    }

    fn left(&self, svc: &dyn Services) -> Duration {
        self.end.duration_since(svc.now()).unwrap_or_default()
    }

    /// `fut` within the time left; `None` when the time is up.
    pub async fn wait<T>(
        &self,
        svc: &dyn Services,
        fut: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        within(svc, self.left(svc), fut).await
    }

    /// `fut` within the time left; the error names `what` was cut off.
    async fn run<T>(
        &self,
        svc: &dyn Services,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        self.wait(svc, fut)
            .await
            .unwrap_or_else(|| Err(format!("timeout {what}")))
    }
}

/// Sends `head` (request line and header fields, ending in the empty line), then `added` and
/// `body` (their length is in `head`'s Content-Length), and returns the answer's body.
pub async fn exchange(
    svc: &dyn Services,
    to: &Endpoint,
    deadline: &Deadline,
    head: Vec<u8>,
    added: &[u8],
    body: &Body,
) -> Result<Vec<u8>, String> {
    let connect = async {
        svc.connect(to, deadline.left(svc))
            .await
            .map_err(|e| format!("cannot connect: {e}"))
    };
    let mut stream = deadline.run(svc, "connecting", connect).await?;
    let stream = &mut *stream;
    let mut first = head;
    first.extend_from_slice(added);
    match body.in_memory() {
        Some(mem) => {
            first.extend_from_slice(mem);
            send(svc, deadline, stream, first).await?;
        }
        None => {
            send(svc, deadline, stream, first).await?;
            stream_spool(svc, deadline, stream, body).await?;
        }
    }
    deadline
        .run(svc, "reading the answer", read_answer(stream))
        .await
}

async fn send(
    svc: &dyn Services,
    deadline: &Deadline,
    stream: &mut dyn Stream,
    buf: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let write = async {
        let (res, buf) = stream.write_all(buf).await;
        res.map(|()| buf).map_err(|e| format!("write: {e}"))
    };
    deadline.run(svc, "sending the message", write).await
}

/// The spooled message, a chunk at a time: each read runs on the blocking pool, each write
/// under the deadline; one buffer goes back and forth.
async fn stream_spool(
    svc: &dyn Services,
    deadline: &Deadline,
    stream: &mut dyn Stream,
    body: &Body,
) -> Result<(), String> {
    let Some(spool) = &body.spool else {
        return Ok(());
    };
    let file = spool
        .file
        .try_clone()
        .map_err(|e| format!("spool file: {e}"))?;
    let file = std::sync::Arc::new(file);
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < body.len {
        let f = file.clone();
        let (n, b) = blocking(svc, move || {
            let mut b = buf;
            b.resize(CHUNK, 0);
            let n = f.read_at(&mut b, at);
            (n, b)
        })
        .await
        .ok_or("spool read failed")?;
        let n = n.map_err(|e| format!("spool file: {e}"))?;
        if n == 0 {
            return Err("spool file shorter than the message".into());
        }
        let mut b = b;
        b.truncate(n);
        buf = send(svc, deadline, stream, b).await?;
        at += n as u64;
    }
    Ok(())
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
