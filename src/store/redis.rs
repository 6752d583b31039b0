//! The Redis backend: RESP2 ([`super::resp`]) over the worker's own sockets
//! (`crate::net::connect`, io_uring or epoll; no second runtime).
//!
//! Each worker has its own small pool: up to `pool` connections, reused; a batch beyond that
//! waits for one to come back. A batch is one pipelined write and its replies: one round trip.
//! Every batch (waiting for a connection, connecting, authenticating, writing, reading) runs
//! under `timeout`; past it the batch fails with `Timeout` and its connection is dropped.
//!
//! Redis down: a connection that cannot be opened marks the server down for a backoff (0.1 s,
//! doubling to 5 s), during which batches fail at once with `Unavailable`, without a connect
//! attempt; the first connection that works again resets it. A pooled connection that fails
//! before any reply (Redis restarted, an idle timeout) is retried once on a fresh one.
//! Nothing here logs per batch: the plugins' fail policies log, once per interval.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use ringsmtpd_plugin_api::net::Stream;
use ringsmtpd_plugin_api::store::{Batch, Op, Replies, Reply, StoreError, MAX_BATCH};

use super::resp::{self, Value};
use super::settings::RedisConfig;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The most reply bytes one batch may buffer.
const MAX_READ: usize = MAX_BATCH * (resp::MAX_BULK + 64);

/// One worker's connections to Redis.
pub struct Redis {
    cfg: RedisConfig,
    idle: RefCell<Vec<Box<dyn Stream>>>,
    /// Connections out of the pool (in use), at most `cfg.pool`.
    busy: Cell<usize>,
    /// Batches waiting for a connection.
    waiting: RefCell<VecDeque<oneshot::Sender<()>>>,
    /// Down until then (no connect attempt before), and the next backoff.
    down: Cell<Option<Instant>>,
    backoff: Cell<Duration>,
}

impl Redis {
    pub fn new(cfg: RedisConfig) -> Rc<Redis> {
        Rc::new(Redis {
            cfg,
            idle: RefCell::default(),
            busy: Cell::new(0),
            waiting: RefCell::default(),
            down: Cell::new(None),
            backoff: Cell::new(BACKOFF_MIN),
        })
    }

    /// Sends a batch: one pipelined round trip, within the timeout.
    pub async fn send(self: Rc<Self>, batch: Batch) -> Result<Replies, StoreError> {
        let (cmds, expected) = commands(&batch);
        match monoio::time::timeout(self.cfg.timeout, self.exchange(&batch, &cmds, expected)).await
        {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn exchange(
        &self,
        batch: &Batch,
        cmds: &[u8],
        expected: usize,
    ) -> Result<Replies, StoreError> {
        self.check_down()?;
        let mut slot = self.acquire().await;
        let reused = match self.idle.borrow_mut().pop() {
            Some(conn) => {
                slot.conn = Some(conn);
                true
            }
            None => false,
        };
        if !reused {
            slot.conn = Some(self.open().await?);
        }
        let mut result = roundtrip(slot.conn.as_deref_mut(), cmds, expected).await;
        if reused && matches!(result, Err(Failure::Io(_))) {
            // A pooled connection Redis closed meanwhile: once more on a fresh one.
            slot.conn = Some(self.open().await?);
            result = roundtrip(slot.conn.as_deref_mut(), cmds, expected).await;
        }
        match result {
            Ok(values) => {
                if let Some(conn) = slot.conn.take() {
                    self.idle.borrow_mut().push(conn);
                }
                replies(batch, values)
            }
            Err(Failure::Io(e)) => {
                slot.conn = None;
                Err(StoreError::Unavailable(format!(
                    "redis at {}: {e}",
                    self.cfg.endpoint
                )))
            }
            Err(Failure::Protocol(e)) => {
                slot.conn = None;
                Err(StoreError::Protocol(format!(
                    "redis at {}: {e}",
                    self.cfg.endpoint
                )))
            }
        }
    }

    fn check_down(&self) -> Result<(), StoreError> {
        match self.down.get() {
            Some(until) if Instant::now() < until => Err(StoreError::Unavailable(format!(
                "redis at {} is down; next try in {} ms",
                self.cfg.endpoint,
                until.saturating_duration_since(Instant::now()).as_millis()
            ))),
            _ => Ok(()),
        }
    }

    /// A place in the pool; waits while `pool` connections are in use.
    async fn acquire(&self) -> Slot<'_> {
        while self.busy.get() >= self.cfg.pool {
            let (tx, rx) = oneshot::channel();
            self.waiting.borrow_mut().push_back(tx);
            let _ = rx.await;
        }
        self.busy.set(self.busy.get() + 1);
        Slot {
            redis: self,
            conn: None,
        }
    }

    /// A new connection, authenticated and on the right database.
    async fn open(&self) -> Result<Box<dyn Stream>, StoreError> {
        let failed = |e: String| {
            let wait = self.backoff.get();
            self.down.set(Some(Instant::now() + wait));
            self.backoff.set((wait * 2).min(BACKOFF_MAX));
            StoreError::Unavailable(format!("redis at {}: {e}", self.cfg.endpoint))
        };
        let mut conn = crate::net::connect(&self.cfg.endpoint, self.cfg.timeout)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut hello = Vec::new();
        let mut n = 0;
        if let Some(pw) = &self.cfg.password {
            match &self.cfg.user {
                Some(user) => resp::encode(&mut hello, &[b"AUTH", user.as_bytes(), pw.as_bytes()]),
                None => resp::encode(&mut hello, &[b"AUTH", pw.as_bytes()]),
            }
            n += 1;
        }
        if self.cfg.db != 0 {
            resp::encode(&mut hello, &[b"SELECT", self.cfg.db.to_string().as_bytes()]);
            n += 1;
        }
        if n > 0 {
            let values = roundtrip(Some(&mut *conn), &hello, n)
                .await
                .map_err(|e| match e {
                    Failure::Io(e) => failed(e.to_string()),
                    Failure::Protocol(e) => failed(e),
                })?;
            if let Some(Value::Error(e)) = values.iter().find(|v| matches!(v, Value::Error(_))) {
                return Err(failed(format!("refused: {}", e.escape_ascii())));
            }
        }
        self.down.set(None);
        self.backoff.set(BACKOFF_MIN);
        Ok(conn)
    }
}

/// A connection's place in the pool; given back (and a waiter woken) when dropped, also when
/// the batch is abandoned at its timeout.
struct Slot<'a> {
    redis: &'a Redis,
    conn: Option<Box<dyn Stream>>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.redis.busy.set(self.redis.busy.get().saturating_sub(1));
        while let Some(w) = self.redis.waiting.borrow_mut().pop_front() {
            if w.send(()).is_ok() {
                break;
            }
        }
    }
}

enum Failure {
    Io(io::Error),
    Protocol(String),
}

/// Writes `cmds` and reads `expected` replies.
async fn roundtrip(
    conn: Option<&mut (dyn Stream + 'static)>,
    cmds: &[u8],
    expected: usize,
) -> Result<Vec<Value>, Failure> {
    let conn = conn.ok_or_else(|| Failure::Io(io::ErrorKind::NotConnected.into()))?;
    let (res, _) = conn.write_all(cmds.to_vec()).await;
    res.map_err(Failure::Io)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut pos = 0;
    let mut values = Vec::with_capacity(expected);
    while values.len() < expected {
        match resp::parse(&buf[pos..]).map_err(Failure::Protocol)? {
            Some((v, used)) => {
                values.push(v);
                pos += used;
                continue;
            }
            None if buf.len() >= MAX_READ => {
                return Err(Failure::Protocol("replies too large".into()))
            }
            None => {}
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let (res, b) = conn.read(buf).await;
        buf = b;
        if res.map_err(Failure::Io)? == 0 {
            return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
    if pos != buf.len() {
        return Err(Failure::Protocol("more replies than commands".into()));
    }
    Ok(values)
}

/// The pipelined commands of a batch, and how many replies they give.
fn commands(batch: &Batch) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(64 * batch.ops.len());
    let mut n = 0;
    let ms = |ttl: Duration| ttl.as_millis().clamp(1, u128::from(u64::MAX)).to_string();
    for op in &batch.ops {
        let k = op.key().as_bytes();
        match op {
            Op::Get(_) => resp::encode(&mut out, &[b"GET", k]),
            Op::Set { value, ttl, .. } | Op::SetNx { value, ttl, .. } => {
                let mut args: Vec<&[u8]> = vec![b"SET", k, value];
                let px;
                if let Some(ttl) = ttl {
                    px = ms(*ttl);
                    args.extend([b"PX".as_slice(), px.as_bytes()]);
                }
                if matches!(op, Op::SetNx { .. }) {
                    args.push(b"NX");
                }
                resp::encode(&mut out, &args);
            }
            Op::Incr { by, ttl, .. } => {
                if let Some(ttl) = ttl {
                    // Creates the key with its expiry if absent; INCRBY keeps the expiry.
                    resp::encode(
                        &mut out,
                        &[b"SET", k, b"0", b"PX", ms(*ttl).as_bytes(), b"NX"],
                    );
                    n += 1;
                }
                resp::encode(&mut out, &[b"INCRBY", k, by.to_string().as_bytes()]);
            }
            Op::Del(_) => resp::encode(&mut out, &[b"DEL", k]),
            Op::Expire { ttl, .. } => resp::encode(&mut out, &[b"PEXPIRE", k, ms(*ttl).as_bytes()]),
        }
        n += 1;
    }
    (out, n)
}

/// The replies of a batch from Redis' answers (as many as [`commands`] said).
fn replies(batch: &Batch, values: Vec<Value>) -> Result<Replies, StoreError> {
    let mut it = values.into_iter();
    let mut out = Vec::with_capacity(batch.ops.len());
    let mut refused = None;
    let bad =
        |what: &str, v: &Value| StoreError::Protocol(format!("unexpected reply to {what}: {v:?}"));
    for op in &batch.ops {
        if matches!(op, Op::Incr { ttl: Some(_), .. }) {
            it.next(); // the SET NX that gave a new counter its expiry
        }
        let v = it
            .next()
            .ok_or_else(|| StoreError::Protocol("missing reply".into()))?;
        if let Value::Error(e) = &v {
            refused.get_or_insert_with(|| StoreError::Refused(e.escape_ascii().to_string()));
            continue;
        }
        out.push(match (op, &v) {
            (Op::Get(_), Value::Bulk(b)) => Reply::Value(b.clone()),
            (Op::Set { .. } | Op::SetNx { .. }, Value::Simple(s)) if s == b"OK" => {
                Reply::Stored(true)
            }
            (Op::SetNx { .. }, Value::Bulk(None)) => Reply::Stored(false),
            (Op::Incr { .. }, Value::Int(n)) => Reply::Int(*n),
            (Op::Del(_) | Op::Expire { .. }, Value::Int(n)) => Reply::Existed(*n > 0),
            (Op::Get(_), _) => return Err(bad("GET", &v)),
            (Op::Set { .. } | Op::SetNx { .. }, _) => return Err(bad("SET", &v)),
            (Op::Incr { .. }, _) => return Err(bad("INCRBY", &v)),
            (Op::Del(_), _) => return Err(bad("DEL", &v)),
            (Op::Expire { .. }, _) => return Err(bad("PEXPIRE", &v)),
        });
    }
    match refused {
        Some(e) => Err(e),
        None => Ok(Replies(out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{run_on, Driver};
    use ringsmtpd_plugin_api::net::Endpoint;
    use ringsmtpd_plugin_api::store::Key;

    fn key(s: &str) -> Key {
        Key::new("t", &[s.as_bytes()]).unwrap()
    }

    #[test]
    fn a_batch_is_one_pipelined_write() {
        let mut b = Batch::new();
        b.get(key("a"));
        b.set_nx(key("b"), "1", Some(Duration::from_secs(2)));
        b.incr(key("c"), 3, Some(Duration::from_millis(1500)));
        b.incr(key("d"), -1, None);
        b.expire(key("e"), Duration::from_secs(1));
        b.del(key("f"));
        let (cmds, n) = commands(&b);
        assert_eq!(n, 7);
        let text = String::from_utf8(cmds).unwrap();
        assert!(
            text.starts_with("*2\r\n$3\r\nGET\r\n$6\r\n1:t1:a\r\n"),
            "{text}"
        );
        assert!(text.contains(
            "$3\r\nSET\r\n$6\r\n1:t1:b\r\n$1\r\n1\r\n$2\r\nPX\r\n$4\r\n2000\r\n$2\r\nNX\r\n"
        ));
        assert!(text.contains("$1\r\n0\r\n$2\r\nPX\r\n$4\r\n1500\r\n$2\r\nNX\r\n*3\r\n$6\r\nINCRBY\r\n$6\r\n1:t1:c\r\n$1\r\n3\r\n"));
        let values = vec![
            Value::Bulk(None),
            Value::Simple(b"OK".to_vec()),
            Value::Bulk(None),
            Value::Int(3),
            Value::Int(-1),
            Value::Int(0),
            Value::Int(1),
        ];
        assert_eq!(
            replies(&b, values).unwrap().0,
            vec![
                Reply::Value(None),
                Reply::Stored(true),
                Reply::Int(3),
                Reply::Int(-1),
                Reply::Existed(false),
                Reply::Existed(true)
            ]
        );
        let mut g = Batch::new();
        g.incr(key("s"), 1, None);
        let err = replies(
            &g,
            vec![Value::Error(b"ERR value is not an integer\r\n".to_vec())],
        );
        assert!(matches!(err, Err(StoreError::Refused(m)) if m.contains("not an integer\\r\\n")));
        assert!(matches!(
            replies(&g, vec![Value::Bulk(None)]),
            Err(StoreError::Protocol(_))
        ));
    }

    #[test]
    fn config_words() {
        let c = RedisConfig::parse(&["127.0.0.1:6380", "db", "2", "timeout", "0.5", "pool", "8"])
            .unwrap();
        assert_eq!(c.endpoint, Endpoint::Tcp("127.0.0.1:6380".parse().unwrap()));
        assert_eq!(
            (c.db, c.timeout, c.pool),
            (2, Duration::from_millis(500), 8)
        );
        let u = RedisConfig::parse(&["/run/redis/redis.sock"]).unwrap();
        assert_eq!(u.endpoint, Endpoint::Unix("/run/redis/redis.sock".into()));
        let u = RedisConfig::parse(&["unix:rel.sock"]).unwrap();
        assert_eq!(u.endpoint, Endpoint::Unix("rel.sock".into()));
        for bad in [
            &["127.0.0.1:6379", "db"][..],
            &["127.0.0.1:6379", "db", "x"],
            &["127.0.0.1:6379", "pool", "0"],
            &["127.0.0.1:6379", "timeout", "0"],
            &["127.0.0.1:6379", "password_file", "/nonexistent/pw"],
            &["127.0.0.1:6379", "user", "u"],
            &["127.0.0.1:6379", "colour", "red"],
            &["no port"],
            &[],
        ] {
            assert!(RedisConfig::parse(bad).is_err(), "{bad:?}");
        }
        let dir = ringsmtpd_plugin_api::testing::TempDir::new("redis-pw");
        let pw = dir.write("pw", "s3cret\n");
        let c = RedisConfig::parse(&["127.0.0.1:6379", "password_file", &pw]).unwrap();
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    /// Commands of `data` that are complete (arrays of bulk strings), and the bytes they take.
    fn complete_commands(data: &[u8]) -> usize {
        let (mut pos, mut n) = (0, 0);
        let line = |from: usize| {
            data[from..].windows(2).position(|w| w == b"\r\n").map(|i| {
                (
                    std::str::from_utf8(&data[from + 1..from + i])
                        .unwrap()
                        .parse::<usize>()
                        .unwrap(),
                    from + i + 2,
                )
            })
        };
        'cmds: while pos < data.len() {
            let Some((args, mut at)) = line(pos) else {
                break;
            };
            for _ in 0..args {
                let Some((len, start)) = line(at) else {
                    break 'cmds;
                };
                if data.len() < start + len + 2 {
                    break 'cmds;
                }
                at = start + len + 2;
            }
            pos = at;
            n += 1;
        }
        n
    }

    /// A fake Redis on a thread: answers `+OK` to each command, but only once the `expect`
    /// commands of a batch have all arrived (so a client that waited for each reply before
    /// sending the next would time out); closes the connection after the batches listed in
    /// `close_after`. Returns its address and the count of connections it accepted.
    fn fake_redis(
        batches: Vec<usize>,
        close_after: Vec<usize>,
    ) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<usize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut accepted = 0;
            let mut batch = 0;
            while batch < batches.len() {
                let (mut conn, _) = listener.accept().unwrap();
                accepted += 1;
                let mut data = Vec::new();
                while batch < batches.len() {
                    let mut buf = [0u8; 4096];
                    while complete_commands(&data) < batches[batch] {
                        let n = conn.read(&mut buf).unwrap();
                        assert!(n > 0, "client closed mid-batch");
                        data.extend_from_slice(&buf[..n]);
                    }
                    data.clear();
                    conn.write_all(&b"+OK\r\n".repeat(batches[batch])).unwrap();
                    batch += 1;
                    if close_after.contains(&batch) {
                        break;
                    }
                }
            }
            tx.send(accepted).unwrap();
        });
        (addr, rx)
    }

    #[test]
    fn batches_are_pipelined_on_a_pooled_connection_that_is_reopened_when_closed() {
        // three batches of 3 SETs; the server hangs up after the second
        let (addr, accepted) = fake_redis(vec![3, 3, 3], vec![2]);
        run_on(Driver::Epoll, || async move {
            let r = Redis::new(RedisConfig {
                endpoint: Endpoint::Tcp(addr),
                db: 0,
                user: None,
                password: None,
                timeout: Duration::from_secs(10),
                pool: 2,
            });
            for round in 0..3 {
                let mut b = Batch::new();
                for i in 0..3 {
                    b.set(key(&format!("{round}.{i}")), "v", None);
                }
                let replies = r.clone().send(b).await;
                assert_eq!(
                    replies,
                    Ok(Replies(vec![Reply::Stored(true); 3])),
                    "batch {round}"
                );
            }
        })
        .unwrap();
        // the first two batches shared one connection; the third needed a new one
        assert_eq!(accepted.recv_timeout(Duration::from_secs(20)), Ok(2));
    }

    /// Within `timeout`, and fast when the server is known down.
    #[test]
    fn a_silent_server_times_out_and_a_closed_port_fails_fast() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        run_on(Driver::Epoll, || async move {
            let cfg = |addr| RedisConfig {
                endpoint: Endpoint::Tcp(addr),
                db: 0,
                user: None,
                password: None,
                timeout: Duration::from_millis(300),
                pool: 2,
            };
            let mut b = Batch::new();
            b.get(key("a"));
            let r = Redis::new(cfg(silent_addr));
            assert_eq!(r.clone().send(b.clone()).await, Err(StoreError::Timeout));
            // the abandoned batch gave its place back
            assert_eq!(r.busy.get(), 0);

            let r = Redis::new(cfg(closed));
            let first = r.clone().send(b.clone()).await;
            assert!(
                matches!(&first, Err(StoreError::Unavailable(m)) if m.contains("refused")),
                "{first:?}"
            );
            let second = r.clone().send(b.clone()).await;
            assert!(
                matches!(&second, Err(StoreError::Unavailable(m)) if m.contains("is down")),
                "{second:?}"
            );
        })
        .unwrap();
        drop(silent);
    }
}
