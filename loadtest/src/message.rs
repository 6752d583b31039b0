//! The messages sent: generated ones of an exact size, or samples from a directory.
//!
//! Every message starts with a unique `Message-ID` and an `X-Loadtest-Seq` header (the same
//! number, zero-padded to [`SEQ_DIGITS`] digits so a generated message has exactly `--size`
//! bytes), so a test can check which messages arrived. Everything after those two headers is
//! built once at start; per message only the two header lines are formatted.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Body, Config, SEQ_DIGITS};

/// Largest sample file read from `--messages-dir`.
const MAX_SAMPLE: u64 = 64 << 20;
/// Most sample files read.
const MAX_SAMPLES: usize = 10_000;

pub struct Messages {
    run_id: String,
    /// The rest of each message after our two headers: CRLF line ends, dot-stuffed, ending in
    /// `\r\n.\r\n`.
    templates: Vec<Vec<u8>>,
}

impl Messages {
    pub fn new(cfg: &Config) -> Result<Messages, String> {
        let run_id = run_id();
        let templates = match &cfg.body {
            Body::Size(size) => vec![generated(cfg, &run_id, *size)],
            Body::Dir(dir) => load_dir(dir)?,
        };
        Ok(Messages { run_id, templates })
    }

    /// Writes message `seq` (DATA content including the final dot) into `out`.
    pub fn build(&self, seq: u64, out: &mut Vec<u8>) {
        use std::io::Write;
        let t = &self.templates[(seq % self.templates.len() as u64) as usize];
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "Message-ID: <{seq:0w$}.{}@smtp-loadtest>\r\nX-Loadtest-Seq: {seq:0w$}\r\n",
            self.run_id,
            w = SEQ_DIGITS
        );
        out.extend_from_slice(t);
    }

    /// This run's id, part of every Message-ID.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }
}

/// Unique enough across runs on one machine: time and pid.
fn run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}.{:x}", now.as_micros(), std::process::id())
}

const FILLER: &[u8] =
    b"The quick brown fox jumps over the lazy dog while smtp-loadtest measures the \
server. ";

fn generated(cfg: &Config, run_id: &str, size: usize) -> Vec<u8> {
    let mut t = format!(
        "From: <{}>\r\nTo: <rcpt0@{}>\r\nSubject: smtp-loadtest message\r\nDate: {}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        cfg.from,
        cfg.to_domain,
        rfc5322_date(SystemTime::now())
    )
    .into_bytes();
    let ours = format!(
        "Message-ID: <{:0w$}.{run_id}@smtp-loadtest>\r\nX-Loadtest-Seq: {:0w$}\r\n",
        0,
        0,
        w = SEQ_DIGITS
    )
    .len();
    let mut left = size.saturating_sub(ours + t.len());
    let mut k = 0;
    // Lines of 78 characters plus CRLF; none starts with a dot, so no stuffing is needed.
    while left >= 2 {
        let n = (left - 2).min(78);
        for _ in 0..n {
            t.push(FILLER[k % FILLER.len()]);
            k += 1;
        }
        t.extend_from_slice(b"\r\n");
        left -= n + 2;
    }
    t.extend_from_slice(b".\r\n");
    t
}

fn load_dir(dir: &Path) -> Result<Vec<Vec<u8>>, String> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| format!("--messages-dir {}: {e}", dir.display()))?;
    let mut paths: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("eml")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("--messages-dir {}: no *.eml files", dir.display()));
    }
    if paths.len() > MAX_SAMPLES {
        return Err(format!("--messages-dir: more than {MAX_SAMPLES} files"));
    }
    paths
        .iter()
        .map(|p| {
            let len = std::fs::metadata(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .len();
            if len > MAX_SAMPLE {
                return Err(format!("{}: larger than {MAX_SAMPLE} bytes", p.display()));
            }
            let raw = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(prepare_sample(&raw))
        })
        .collect()
}

/// CRLF line ends, our headers' names removed from the header section, dot-stuffed, and the
/// terminating dot.
pub fn prepare_sample(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20 + 8);
    let mut in_header = true;
    let mut skipping = false;
    let mut lines = raw.split(|&b| b == b'\n').peekable();
    while let Some(mut line) = lines.next() {
        if lines.peek().is_none() && line.is_empty() {
            break; // the file ended with a newline
        }
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        if in_header {
            if line.is_empty() {
                in_header = false;
            } else if line[0] == b' ' || line[0] == b'\t' {
                if skipping {
                    continue; // continuation of a dropped field
                }
            } else {
                let name = line.split(|&b| b == b':').next().unwrap_or(&[]);
                skipping = name.eq_ignore_ascii_case(b"Message-ID")
                    || name.eq_ignore_ascii_case(b"X-Loadtest-Seq");
                if skipping {
                    continue;
                }
            }
        }
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// `Thu, 01 Jan 1970 00:00:00 +0000` (RFC 5322 §3.3), in UTC.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        d,
        MO[(m - 1) as usize],
        y,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn generated_messages_have_the_exact_size_and_unique_ids() {
        for size in [300, 1024, 1025, 100 * 1024] {
            let mut cfg = Config::new("127.0.0.1:25".parse().unwrap());
            cfg.body = Body::Size(size);
            let m = Messages::new(&cfg).unwrap();
            let mut a = Vec::new();
            m.build(7, &mut a);
            assert!(a.ends_with(b"\r\n.\r\n"));
            let content = a.len() - 3;
            assert!(content == size || content == size + 1, "{size}: {content}");
            let mut b = Vec::new();
            m.build(8, &mut b);
            assert_eq!(a.len(), b.len());
            assert_ne!(a, b);
            let text = String::from_utf8(a).unwrap();
            assert!(text.contains("X-Loadtest-Seq: 0000000007\r\n"));
            assert!(text.contains(&format!("Message-ID: <0000000007.{}@", m.run_id())));
            // Nothing that could end DATA early or be refused as a bare line end.
            assert_eq!(text.matches("\r\n.\r\n").count(), 1);
            assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
        }
    }

    #[test]
    fn sizes_below_the_headers_give_headers_only() {
        let mut cfg = Config::new("127.0.0.1:25".parse().unwrap());
        cfg.body = Body::Size(64);
        let mut a = Vec::new();
        Messages::new(&cfg).unwrap().build(1, &mut a);
        assert!(a.ends_with(b"\r\n\r\n.\r\n") && a.len() < 400);
    }

    #[test]
    fn samples_are_normalized() {
        let raw = b"Subject: hi\nMessage-ID: <old@x>\n  continued\nFrom: a\n\n.dot line\nend\n";
        let got = prepare_sample(raw);
        assert_eq!(
            got,
            b"Subject: hi\r\nFrom: a\r\n\r\n..dot line\r\nend\r\n.\r\n"
        );
        // A Message-ID in the body is content, not a header.
        let got = prepare_sample(b"A: b\r\n\r\nMessage-ID: x\r\n");
        assert_eq!(got, b"A: b\r\n\r\nMessage-ID: x\r\n.\r\n");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199); // 2024-02-29 23:59:59
        assert_eq!(rfc5322_date(t), "Thu, 29 Feb 2024 23:59:59 +0000");
    }
}
