//! `ringsmtpd dkim-keygen DOMAIN SELECTOR [--ed25519] [--bits N] [--force] [--config DIR]`
//! (qpsmtpd's `dkim_key_gen.sh`): a new key in `DIR/dkim/DOMAIN/private` (mode 0600), its
//! `selector`, and the DNS record to publish, printed and written to `DIR/dkim/DOMAIN/dns`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::private::SigningKey;
use super::signature::dns_name;

/// RSA key size when `--bits` is not given.
pub const DEFAULT_BITS: usize = 2048;
/// Bytes of one character-string in a TXT record at most (RFC 1035 §3.3).
const TXT_STRING: usize = 255;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub config: PathBuf,
    pub domain: String,
    pub selector: String,
    /// `None`: Ed25519; `Some(bits)`: RSA.
    pub rsa_bits: Option<usize>,
    pub force: bool,
}

/// What was generated: the files written and the zone file line.
#[derive(Debug)]
pub struct Generated {
    pub files: Vec<PathBuf>,
    pub record: String,
}

/// The zone file line for `record` at `SELECTOR._domainkey.DOMAIN.`, its text split into
/// strings of at most 255 bytes (a key record for RSA-2048 is about 410).
pub fn zone_line(domain: &str, selector: &str, record: &str) -> String {
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(TXT_STRING)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        strings.join("\n\t")
    )
}

/// Writes `text` to `path` with `mode` through a temporary file renamed into place.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Generates the key and writes the files.
pub fn generate(req: &Request) -> Result<Generated, String> {
    let domain = req.domain.trim_end_matches('.').to_ascii_lowercase();
    if !dns_name(&domain) || !domain.contains('.') {
        return Err(format!("'{}' is not a domain name", req.domain));
    }
    let selector = req.selector.to_ascii_lowercase();
    if !dns_name(&selector) {
        return Err(format!("'{}' is not a selector (DNS labels)", req.selector));
    }
    let dir = req.config.join("dkim").join(&domain);
    let private = dir.join("private");
    if private.exists() && !req.force {
        return Err(format!(
            "{} exists: a key is replaced only with --force (publish the new record first, under a new selector)",
            private.display()
        ));
    }
    let (key, pem) = match req.rsa_bits {
        Some(bits) => SigningKey::generate_rsa(bits)?,
        None => SigningKey::generate_ed25519()?,
    };
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_file(&private, &pem, 0o600)?;
    let selector_file = dir.join("selector");
    write_file(&selector_file, &format!("{selector}\n"), 0o644)?;
    let record = zone_line(&domain, &selector, &key.record());
    let dns = dir.join("dns");
    write_file(&dns, &format!("{record}\n"), 0o644)?;
    Ok(Generated {
        files: vec![private, selector_file, dns],
        record,
    })
}

/// Parses the command line after `dkim-keygen`; `config` is the default config directory.
pub fn parse_args(args: &[String], config: PathBuf) -> Result<Request, String> {
    let mut req = Request {
        config,
        domain: String::new(),
        selector: String::new(),
        rsa_bits: Some(DEFAULT_BITS),
        force: false,
    };
    let (mut ed25519, mut bits) = (false, None);
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--ed25519" => ed25519 = true,
            "--force" => req.force = true,
            "--bits" => {
                let v = it.next().ok_or("--bits needs a value")?;
                bits = Some(v.parse().map_err(|_| "--bits takes a number")?);
            }
            "--config" => req.config = it.next().ok_or("--config needs a value")?.into(),
            a if a.starts_with('-') => return Err(format!("unknown argument '{a}'")),
            a => positional.push(a.to_string()),
        }
    }
    let [domain, selector] = <[String; 2]>::try_from(positional)
        .map_err(|_| "DOMAIN and SELECTOR are required (and nothing else)")?;
    if ed25519 && bits.is_some() {
        return Err("--bits is for RSA keys, not with --ed25519".into());
    }
    req.rsa_bits = match ed25519 {
        true => None,
        false => Some(bits.unwrap_or(DEFAULT_BITS)),
    };
    req.domain = domain;
    req.selector = selector;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::TempDir;
    use std::os::unix::fs::PermissionsExt;

    fn args(line: &str) -> Result<Request, String> {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse_args(&words, "config".into())
    }

    #[test]
    fn arguments() {
        let r = args("example.org s1").unwrap();
        assert_eq!(
            (r.rsa_bits, r.force, r.config),
            (Some(2048), false, "config".into())
        );
        let r = args("--ed25519 example.org s1 --force --config /etc/x").unwrap();
        assert_eq!((r.rsa_bits, r.force), (None, true));
        assert_eq!(r.config, PathBuf::from("/etc/x"));
        assert_eq!(
            args("example.org s1 --bits 1024").unwrap().rsa_bits,
            Some(1024)
        );
        for bad in [
            "example.org",
            "a b c",
            "a b --bits",
            "a b --bits x",
            "a b --ed25519 --bits 2048",
            "a b --what",
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zone_lines_split_at_255_bytes() {
        let record = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
        let line = zone_line("example.org", "s1", &record);
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 255);
        assert_eq!(strings.concat(), record);
        assert!(line.starts_with("s1._domainkey.example.org. IN TXT ( \"v=DKIM1; k=rsa; p=AAA"));
        assert!(line.ends_with("\" )"));
    }

    #[test]
    fn writes_the_layout_and_refuses_to_overwrite() {
        let t = TempDir::new("keygen");
        let req = Request {
            config: t.path().to_path_buf(),
            domain: "Example.org.".into(),
            selector: "s1".into(),
            rsa_bits: None,
            force: false,
        };
        let g = generate(&req).unwrap();
        let private = t.path().join("dkim/example.org/private");
        assert_eq!(g.files[0], private);
        let mode = fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fs::read_to_string(t.path().join("dkim/example.org/selector")).unwrap(),
            "s1\n"
        );
        assert!(g
            .record
            .starts_with("s1._domainkey.example.org. IN TXT ( \"v=DKIM1; k=ed25519; p="));
        let before = fs::read(&private).unwrap();
        let e = generate(&req).unwrap_err();
        assert!(
            e.contains("exists: a key is replaced only with --force"),
            "{e}"
        );
        assert_eq!(fs::read(&private).unwrap(), before);
        let forced = Request {
            force: true,
            rsa_bits: Some(1024),
            ..req.clone()
        };
        let g = generate(&forced).unwrap();
        assert_ne!(fs::read(&private).unwrap(), before);
        assert!(
            g.record
                .contains("k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ"),
            "{}",
            g.record
        );
        let bad = Request {
            domain: "not a domain".into(),
            ..req.clone()
        };
        assert!(generate(&bad).is_err());
        let bad = Request {
            selector: "s 1".into(),
            ..req
        };
        assert!(generate(&bad).is_err());
    }
}
