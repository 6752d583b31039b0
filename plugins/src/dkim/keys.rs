//! The signing keys in qpsmtpd's layout, read when the config loads:
//! `config/dkim/DOMAIN/private` (a PEM private key) and `config/dkim/DOMAIN/selector` (its
//! selector). A `DOMAIN` that is a symbolic link to another domain's directory signs with
//! that key and that domain (`d=` is the name of the directory the link points to, as in
//! qpsmtpd). Plain files in `config/dkim/` (qpsmtpd keeps `dkim_key_gen.sh` there) and names
//! starting with a dot are ignored.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringsmtpd_plugin_api::ConfigError;

use super::private::SigningKey;
use super::signature::dns_name;

/// A private key file is larger than this only by mistake (an RSA-4096 PEM is about 3.3 KiB).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The key a domain signs with.
#[derive(Debug)]
pub struct DomainKey {
    /// `d=`: the domain directory's name (the link's target for a link).
    pub domain: String,
    /// `s=`.
    pub selector: String,
    pub key: Arc<SigningKey>,
}

/// Every domain with a key, by lowercase name.
#[derive(Debug, Default)]
pub struct KeyDir {
    by_domain: HashMap<String, Arc<DomainKey>>,
}

fn error(path: &Path, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        file: path.display().to_string(),
        line: 0,
        reason: reason.into(),
    }
}

impl KeyDir {
    /// Reads `dir` (`config/dkim`); a missing directory has no keys. Any unusable key,
    /// selector or domain directory is an error naming the file.
    pub fn load(dir: &Path) -> Result<KeyDir, ConfigError> {
        let mut keys = KeyDir::default();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(error(dir, format!("cannot read the key directory: {e}"))),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| error(dir, format!("cannot read: {e}")))?;
            names.push(entry.file_name());
        }
        names.sort();
        // Keys by the directory they are in, so a linked domain shares its target's key.
        let mut loaded: HashMap<PathBuf, Arc<DomainKey>> = HashMap::new();
        for name in names {
            let path = dir.join(&name);
            let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else {
                continue;
            };
            let link = fs::symlink_metadata(&path)
                .map_err(|e| error(&path, format!("cannot read: {e}")))?
                .file_type()
                .is_symlink();
            let meta =
                fs::metadata(&path).map_err(|e| error(&path, format!("cannot follow: {e}")))?;
            if !meta.is_dir() {
                continue;
            }
            if !dns_name(name) {
                return Err(error(&path, "a key directory must be named after a domain"));
            }
            let target = match link {
                true => fs::canonicalize(&path).map_err(|e| error(&path, format!("{e}")))?,
                false => path.clone(),
            };
            let key = match loaded.get(&target) {
                Some(k) => k.clone(),
                None => {
                    let domain = match link {
                        true => target
                            .file_name()
                            .and_then(|n| n.to_str())
                            .filter(|n| dns_name(n))
                            .ok_or_else(|| {
                                error(&path, "links to a directory not named after a domain")
                            })?
                            .to_ascii_lowercase(),
                        false => name.to_ascii_lowercase(),
                    };
                    let k = Arc::new(load_domain(&target, domain)?);
                    loaded.insert(target, k.clone());
                    k
                }
            };
            keys.by_domain.insert(name.to_ascii_lowercase(), key);
        }
        Ok(keys)
    }

    /// The key for `domain`, or else for its nearest parent with one (as qpsmtpd: mail from
    /// `host.example.org` is signed with `example.org`'s key), down to two labels.
    pub fn find(&self, domain: &str) -> Option<&DomainKey> {
        let mut name = domain.trim_end_matches('.').to_ascii_lowercase();
        loop {
            if let Some(k) = self.by_domain.get(&name) {
                return Some(k);
            }
            let (_, parent) = name.split_once('.')?;
            if !parent.contains('.') {
                return None;
            }
            name = parent.to_string();
        }
    }
}

/// Reads `dir/selector` and `dir/private`.
fn load_domain(dir: &Path, domain: String) -> Result<DomainKey, ConfigError> {
    let file = dir.join("selector");
    let text = fs::read_to_string(&file).map_err(|e| error(&file, format!("cannot read: {e}")))?;
    let selector = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| error(&file, "no selector in the file"))?;
    if !dns_name(selector) {
        return Err(error(
            &file,
            "the selector must be DNS labels (letters, digits, '-', '_', '.')",
        ));
    }
    let selector = selector.to_ascii_lowercase();
    let file = dir.join("private");
    let meta = fs::metadata(&file).map_err(|e| error(&file, format!("cannot read: {e}")))?;
    let mode = meta.permissions().mode();
    if mode & 0o027 != 0 {
        return Err(error(
            &file,
            format!(
                "the private key is readable or writable by others (mode {:04o}): chmod 600 or 400",
                mode & 0o7777
            ),
        ));
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(error(&file, "larger than 64 KiB: not a key"));
    }
    let text = fs::read_to_string(&file).map_err(|e| error(&file, format!("cannot read: {e}")))?;
    let key = SigningKey::from_pem(&text).map_err(|e| error(&file, e))?;
    Ok(DomainKey {
        domain,
        selector,
        key: Arc::new(key),
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::dkim::private::tests::{ED25519_PKCS8, RSA2048_PKCS8};
    use ringsmtpd_plugin_api::testing::TempDir;

    /// Writes `config/dkim/DOMAIN/{private,selector}` under `root` with mode 0600.
    pub fn write_key(root: &Path, domain: &str, selector: &str, pem: &str) {
        let dir = root.join("dkim").join(domain);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("selector"), format!("{selector}\n")).unwrap();
        let private = dir.join("private");
        fs::write(&private, pem).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn layout_links_and_parents() {
        let t = TempDir::new("dkimkeys");
        assert!(KeyDir::load(&t.path().join("dkim"))
            .unwrap()
            .by_domain
            .is_empty());
        write_key(t.path(), "example.org", "may2013", RSA2048_PKCS8);
        write_key(t.path(), "Ed.Example", "e1", ED25519_PKCS8);
        let dkim = t.path().join("dkim");
        std::os::unix::fs::symlink("example.org", dkim.join("client.com")).unwrap();
        fs::write(dkim.join("dkim_key_gen.sh"), "#!/bin/sh\n").unwrap();
        fs::create_dir(dkim.join(".hidden")).unwrap();
        let keys = KeyDir::load(&dkim).unwrap();
        assert_eq!(keys.by_domain.len(), 3);
        let k = keys.find("example.org").unwrap();
        assert_eq!(
            (k.domain.as_str(), k.selector.as_str()),
            ("example.org", "may2013")
        );
        let client = keys.find("CLIENT.com").unwrap();
        assert_eq!(client.domain, "example.org", "a link signs as its target");
        assert!(Arc::ptr_eq(&client.key, &k.key), "one key, loaded once");
        let sub = keys.find("mail.host.example.org.").unwrap();
        assert_eq!(sub.domain, "example.org");
        assert_eq!(
            keys.find("ed.example").unwrap().key.algorithm_name(),
            "ed25519-sha256"
        );
        assert!(keys.find("example.net").is_none());
        assert!(keys.find("org").is_none());
        assert!(keys.find("").is_none());
    }

    #[test]
    fn unusable_keys_are_config_errors() {
        let t = TempDir::new("dkimkeys");
        let dkim = t.path().join("dkim");
        write_key(t.path(), "example.org", "s1", RSA2048_PKCS8);
        let private = dkim.join("example.org/private");
        fs::set_permissions(&private, fs::Permissions::from_mode(0o644)).unwrap();
        let e = KeyDir::load(&dkim).unwrap_err();
        assert_eq!(e.file, private.display().to_string());
        assert!(
            e.reason
                .contains("readable or writable by others (mode 0644)"),
            "{e}"
        );
        fs::set_permissions(&private, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(
            KeyDir::load(&dkim).is_ok(),
            "group-readable is allowed (chown smtpd:smtpd)"
        );
        fs::write(&private, "garbage").unwrap();
        let e = KeyDir::load(&dkim).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: not a PEM file (no -----BEGIN line)", private.display())
        );
        write_key(t.path(), "example.org", "bad selector", RSA2048_PKCS8);
        let e = KeyDir::load(&dkim).unwrap_err();
        assert!(e.file.ends_with("example.org/selector"), "{e}");
        fs::remove_file(dkim.join("example.org/selector")).unwrap();
        let e = KeyDir::load(&dkim).unwrap_err();
        assert!(e.to_string().contains("selector: cannot read"), "{e}");
        fs::remove_dir_all(dkim.join("example.org")).unwrap();
        fs::create_dir_all(dkim.join("not a domain")).unwrap();
        let e = KeyDir::load(&dkim).unwrap_err();
        assert!(e.reason.contains("named after a domain"), "{e}");
        fs::remove_dir_all(dkim.join("not a domain")).unwrap();
        std::os::unix::fs::symlink("nowhere.example", dkim.join("broken.example")).unwrap();
        let e = KeyDir::load(&dkim).unwrap_err();
        assert!(e.reason.starts_with("cannot follow"), "{e}");
    }
}
