//! The config file `state_store`: which backend the state store uses, and its settings
//! (read by `config.rs` with the other core settings; the backends in `embedded.rs` and
//! `redis.rs` take them from here).

use std::path::PathBuf;
use std::time::Duration;

use ringsmtpd_plugin_api::net::Endpoint;
use ringsmtpd_plugin_api::{ConfigError, ConfigSource};

/// The default directory of the embedded store (relative to the working directory).
pub const DEFAULT_STATE_DIR: &str = "./state";
/// The default bound of the embedded store.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// Config `state_store`: which backend, and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// `embedded [dir PATH] [max_entries N]`.
    Embedded { dir: PathBuf, max_entries: usize },
    /// `redis ADDR [db N] [user NAME] [password_file PATH] [timeout S] [pool N]`.
    Redis(RedisConfig),
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig::Embedded {
            dir: PathBuf::from(DEFAULT_STATE_DIR),
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

impl StoreConfig {
    /// Reads `state_store` (one line; absent: the embedded store in `./state`).
    pub fn load(cfg: &dyn ConfigSource) -> Result<StoreConfig, ConfigError> {
        let Some(lines) = cfg.lines("state_store")? else {
            return Ok(StoreConfig::default());
        };
        let Some(line) = lines.first() else {
            return Ok(StoreConfig::default());
        };
        if let Some(extra) = lines.get(1) {
            return Err(extra.error("state_store takes one line"));
        }
        StoreConfig::parse(&line.text).map_err(|e| line.error(e))
    }

    fn parse(text: &str) -> Result<StoreConfig, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (kind, rest) = words.split_first().ok_or("empty state_store line")?;
        match *kind {
            "embedded" => {
                if rest.len() % 2 != 0 {
                    return Err(format!("'{}' needs a value", rest[rest.len() - 1]));
                }
                let pairs = rest.chunks(2).map(|kv| (kv[0], kv[1]));
                let (mut dir, mut max) = (PathBuf::from(DEFAULT_STATE_DIR), DEFAULT_MAX_ENTRIES);
                for (k, v) in pairs {
                    match k {
                        "dir" => dir = PathBuf::from(v),
                        "max_entries" => {
                            max = v
                                .parse()
                                .ok()
                                .filter(|n| (1..=100_000_000).contains(n))
                                .ok_or_else(|| {
                                    format!("max_entries must be 1..100000000, not '{v}'")
                                })?
                        }
                        _ => return Err(format!("unknown embedded store setting '{k}'")),
                    }
                }
                Ok(StoreConfig::Embedded {
                    dir,
                    max_entries: max,
                })
            }
            "redis" => Ok(StoreConfig::Redis(RedisConfig::parse(rest)?)),
            other => Err(format!("unknown state store '{other}' (embedded or redis)")),
        }
    }
}

/// The default `timeout` of a batch.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default connections per worker.
pub const DEFAULT_POOL: usize = 4;

/// Config `state_store` with `redis ADDR [db N] [user NAME] [password_file PATH] [timeout S]
/// [pool N]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub endpoint: Endpoint,
    pub db: u32,
    pub user: Option<String>,
    pub password: Option<String>,
    pub timeout: Duration,
    pub pool: usize,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("RedisConfig")
            .field("endpoint", &self.endpoint)
            .field("db", &self.db)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "..."))
            .field("timeout", &self.timeout)
            .field("pool", &self.pool)
            .finish()
    }
}

impl RedisConfig {
    /// Parses the words after `redis`. A host name is resolved here (on the main thread, at
    /// config load); a path (`/run/redis.sock` or `unix:PATH`) is a Unix socket.
    pub fn parse(words: &[&str]) -> Result<RedisConfig, String> {
        let (addr, rest) = words.split_first().ok_or("redis needs an address")?;
        let endpoint = if let Some(path) = addr
            .strip_prefix("unix:")
            .or(addr.starts_with('/').then_some(*addr))
        {
            Endpoint::Unix(PathBuf::from(path))
        } else {
            use std::net::ToSocketAddrs;
            let a = addr
                .to_socket_addrs()
                .map_err(|e| format!("redis address '{addr}': {e}"))?
                .next()
                .ok_or_else(|| format!("redis address '{addr}' resolves to nothing"))?;
            Endpoint::Tcp(a)
        };
        if rest.len() % 2 != 0 {
            return Err(format!("'{}' needs a value", rest[rest.len() - 1]));
        }
        let mut cfg = RedisConfig {
            endpoint,
            db: 0,
            user: None,
            password: None,
            timeout: DEFAULT_TIMEOUT,
            pool: DEFAULT_POOL,
        };
        for kv in rest.chunks(2) {
            let (k, v) = (kv[0], kv[1]);
            match k {
                "db" => {
                    cfg.db = v
                        .parse()
                        .ok()
                        .filter(|&n| n < 10_000)
                        .ok_or_else(|| format!("db must be a number, not '{v}'"))?
                }
                "user" => cfg.user = Some(v.to_string()),
                "password_file" => {
                    let text = std::fs::read_to_string(v)
                        .map_err(|e| format!("redis password_file {v}: {e}"))?;
                    let pw = text.lines().next().unwrap_or("").trim_end().to_string();
                    if pw.is_empty() {
                        return Err(format!("redis password_file {v} is empty"));
                    }
                    cfg.password = Some(pw);
                }
                "timeout" => {
                    cfg.timeout = v
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s > 0.0 && *s <= 60.0)
                        .map(Duration::from_secs_f64)
                        .ok_or_else(|| format!("timeout must be seconds, 0 to 60, not '{v}'"))?
                }
                "pool" => {
                    cfg.pool = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| format!("pool must be 1..256, not '{v}'"))?
                }
                _ => return Err(format!("unknown redis setting '{k}'")),
            }
        }
        if cfg.user.is_some() && cfg.password.is_none() {
            return Err("redis user needs a password_file".into());
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines() {
        assert_eq!(StoreConfig::parse("embedded"), Ok(StoreConfig::default()));
        assert_eq!(
            StoreConfig::parse("embedded dir /var/lib/x max_entries 5"),
            Ok(StoreConfig::Embedded {
                dir: "/var/lib/x".into(),
                max_entries: 5
            })
        );
        for bad in [
            "embedded dir",
            "embedded max_entries 0",
            "embedded size 3",
            "memcached",
        ] {
            assert!(StoreConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
