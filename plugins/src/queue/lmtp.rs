//! # queue/lmtp — deliver over LMTP (Dovecot, Cyrus, ...)
//!
//! ## Synopsis
//!
//! ```text
//! queue/lmtp <host>:<port>|/path/to/socket [xforward] [tls [may|require]]
//!            [tls_verify none|system|cafile:<path>] [tls_name <name>]
//!            [timeout S] [connect_timeout S] [data_timeout S]
//!            [pool N] [pool_idle S] [pool_uses N] [loglevel N]
//! queue/lmtp /var/run/dovecot/lmtp
//! queue/lmtp 127.0.0.1:24
//! queue/lmtp [::1]:24
//! ```
//!
//! ## Description
//!
//! Delivers with LMTP (RFC 2033) to a message store: `LHLO`, then MAIL, RCPT, DATA as in SMTP
//! (pipelined when offered, which RFC 2033 §5 requires servers to do), and after the final dot
//! **one reply per accepted recipient**. Our client gets one reply for the message:
//!
//! | LMTP replies after the dot | our client gets |
//! |---|---|
//! | all 2xx | `250` with the last recipient's text |
//! | any 4xx | `DenySoft` with the first 4xx text and recipient: the client retries the whole message, so recipients that got a 250 get it again (SMTP's at-least-once; the alternative, a 250, would lose it for the 4xx ones) |
//! | only 5xx among the failures | `Deny` with the first 5xx text and recipient, plus "(delivered to N of M recipients)" if some got a 250: the sender's bounce says who did not get it. (A `DenySoft` here would redeliver to the 250 recipients at every retry for days, and still end in a bounce.) |
//! | the connection lost or a timeout before all replies | `DenySoft` `4.4.2 ...` (duplicates for those already accepted, logged) |
//!
//! Recipients refused at RCPT time, refusals of MAIL and DATA, connection failures and
//! timeouts are handled as in `queue/smtp-forward` (see there): nothing is delivered when any
//! RCPT is refused, `DenySoft` if any refusal is temporary, else `Deny`.
//!
//! The message is sent as `queue/smtp-forward` sends it (added headers first, dot-stuffed,
//! CRLF). The pool, STARTTLS and XFORWARD work as there; XCLIENT is an SMTP server feature and
//! is refused here. Over a Unix socket the pool works the same; `tls` is possible but rarely
//! useful there (`tls_name` defaults to `localhost` for a socket).
//!
//! ## Arguments
//!
//! As `queue/smtp-forward`, with the destination `<host>:<port>` (IPv6 as `[addr]:port`) or an
//! absolute socket path instead of `<host> [<port>]`, and without `xclient`.
//!
//! ## Config files
//!
//! None; `me` is the name in our LHLO.
//!
//! ## Hooks
//!
//! `queue`.
//!
//! ## Notes
//!
//! None read or written.
//!
//! ## Standards
//!
//! RFC 2033 (LMTP: §4.1 LHLO, §4.2 one reply per recipient after the dot), RFC 5321, RFC 2920,
//! RFC 3463.
//!
//! ## Security
//!
//! As `queue/smtp-forward`: strict reply parsing, every wait bounded, relayed texts checked.

use ringsmtpd_plugin_api::{ConfigError, Plugin, PluginInit};

use super::smtp_client::{plugin, Settings};

/// Builds `queue/lmtp` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    plugin(init, Settings::lmtp)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use ringsmtpd_plugin_api::testing::{build, TempDir};
    use ringsmtpd_plugin_api::{Outcome, Plugin};

    use super::super::smtp_client::fake::{self, FakeServer, Script, TestSvc};

    const BODY: &[u8] = b"Subject: t\r\n\r\n.dot\r\nbody\r\n";

    fn plugin(server: &FakeServer) -> Box<dyn Plugin> {
        let dest = format!("127.0.0.1:{}", server.addr.port());
        build(super::new, &format!("queue/lmtp {dest}"), &[]).unwrap()
    }

    fn send(p: &dyn Plugin, rcpts: &[&str]) -> Outcome {
        let svc = Rc::new(TestSvc::default());
        let mut cx = fake::context(&svc);
        let mut t = fake::txn(rcpts, BODY);
        fake::queue(p, &mut cx, &mut t)
    }

    const THREE: [&str; 3] = ["a@x.test", "b@x.test", "c@x.test"];

    #[test]
    fn all_recipients_accepted() {
        let server = FakeServer::start(Script {
            dot: vec![
                "250 2.0.0 <a@x.test> saved".into(),
                "250 2.0.0 <b@x.test> saved".into(),
                "250 2.0.0 <c@x.test> saved".into(),
            ],
            ..Script::lmtp()
        });
        let p = plugin(&server);
        assert_eq!(
            send(&*p, &THREE),
            Outcome::Ok(Some("2.0.0 <c@x.test> saved".into()))
        );
        let cmds = server.commands();
        assert_eq!(cmds[0], "LHLO mx.example.test");
        assert_eq!(cmds.iter().filter(|c| c.starts_with("RCPT")).count(), 3);
        assert_eq!(server.pipelined(), [true]);
        assert_eq!(
            server.messages(),
            [
                b"Received: from client.example\r\nSubject: t\r\n\r\n..dot\r\nbody\r\n.\r\n"
                    .to_vec()
            ]
        );
        // The pooled connection carries the next message, after RSET.
        assert!(matches!(send(&*p, &["a@x.test"]), Outcome::Ok(_)));
        assert_eq!(server.conns(), 1);
    }

    #[test]
    fn a_temporary_failure_for_one_recipient_defers_all() {
        let server = FakeServer::start(Script {
            dot: vec![
                "250 2.0.0 ok".into(),
                "452 4.2.2 <b@x.test> mailbox full".into(),
                "550 5.1.1 <c@x.test> gone".into(),
            ],
            ..Script::lmtp()
        });
        assert_eq!(
            send(&*plugin(&server), &THREE),
            Outcome::DenySoft(Some(
                "4.2.2 <b@x.test>: <b@x.test> mailbox full (delivered to 1 of 3 recipients)".into()
            ))
        );
    }

    #[test]
    fn permanent_failures() {
        // Some delivered, the others refused for good: Deny naming who did not get it.
        let server = FakeServer::start(Script {
            dot: vec![
                "250 2.0.0 ok".into(),
                "550 5.1.1 gone".into(),
                "250 2.0.0 ok".into(),
            ],
            ..Script::lmtp()
        });
        assert_eq!(
            send(&*plugin(&server), &THREE),
            Outcome::Deny(Some(
                "5.1.1 <b@x.test>: gone (delivered to 2 of 3 recipients)".into()
            ))
        );
        // All refused.
        let server = FakeServer::start(Script {
            dot: vec!["552 5.2.2 over quota".into()],
            ..Script::lmtp()
        });
        assert_eq!(
            send(&*plugin(&server), &["a@x.test"]),
            Outcome::Deny(Some("5.2.2 <a@x.test>: over quota".into()))
        );
    }

    #[test]
    fn a_lost_connection_between_replies_is_temporary() {
        let server = FakeServer::start(Script {
            drop_after_replies: Some(1),
            ..Script::lmtp()
        });
        let svc = Rc::new(TestSvc::default());
        let mut cx = fake::context(&svc);
        let mut t = fake::txn(&THREE, BODY);
        let o = fake::queue(&*plugin(&server), &mut cx, &mut t);
        assert!(matches!(o, Outcome::DenySoft(_)), "{o:?}");
        assert!(o.msg().unwrap().starts_with("4.4.2 "), "{o:?}");
        assert!(svc.logged("connection lost after 1 of 3 LMTP replies"));
    }

    #[test]
    fn refused_rcpt_means_no_data() {
        let server = FakeServer::start(Script {
            rcpt: vec![("b@x.test".into(), "550 5.1.1 no such user".into())],
            ..Script::lmtp()
        });
        let o = send(&*plugin(&server), &THREE);
        assert_eq!(
            o,
            Outcome::Deny(Some(
                "5.1.1 <b@x.test>: no such user (not delivered to any recipient)".into()
            ))
        );
        assert!(server.messages().is_empty());
    }

    #[test]
    fn over_a_unix_socket() {
        use std::io::{BufRead, BufReader, Write};
        let dir = TempDir::new("lmtp");
        let path = dir.path().join("lmtp.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let mut w = sock.try_clone().unwrap();
            let mut r = BufReader::new(sock);
            let mut seen = Vec::new();
            w.write_all(b"220 store LMTP\r\n").unwrap();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let cmd = line.trim_end().to_string();
                line.clear();
                seen.push(cmd.clone());
                let reply: &[u8] = match cmd.split(' ').next().unwrap_or("") {
                    "LHLO" => b"250-store\r\n250 PIPELINING\r\n",
                    "DATA" => {
                        w.write_all(b"354 go\r\n").unwrap();
                        loop {
                            let mut l = String::new();
                            r.read_line(&mut l).unwrap();
                            if l == ".\r\n" {
                                break;
                            }
                        }
                        b"250 2.0.0 <a@x.test> stored\r\n"
                    }
                    "QUIT" => return seen,
                    _ => b"250 ok\r\n",
                };
                w.write_all(reply).unwrap();
            }
            seen
        });
        let p = build(
            super::new,
            &format!("queue/lmtp {} pool 0", path.display()),
            &[],
        )
        .unwrap();
        assert_eq!(
            send(&*p, &["a@x.test"]),
            Outcome::Ok(Some("2.0.0 <a@x.test> stored".into()))
        );
        let seen = server.join().unwrap();
        assert_eq!(seen[0], "LHLO mx.example.test");
        assert_eq!(seen.last().unwrap(), "QUIT");
    }
}
