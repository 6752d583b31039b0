//! # queue/smtp-forward — hand the message to another SMTP server
//!
//! ## Synopsis
//!
//! ```text
//! queue/smtp-forward <host> [<port>] [xclient] [xforward] [tls [may|require]]
//!                    [tls_verify none|system|cafile:<path>] [tls_name <name>]
//!                    [timeout S] [connect_timeout S] [data_timeout S]
//!                    [pool N] [pool_idle S] [pool_uses N] [loglevel N]
//! queue/smtp-forward 10.2.2.2
//! queue/smtp-forward 10.2.2.2 9025 xclient
//! queue/smtp-forward mx.internal.example 25 tls require tls_verify cafile:/etc/ssl/int-ca.pem
//! ```
//!
//! ## Description
//!
//! qpsmtpd's `queue/smtp-forward`: the message goes to the downstream MTA over SMTP, and our
//! client gets its answer only after the downstream answered the final dot (DESIGN.md §6):
//!
//! | downstream | our client gets |
//! |---|---|
//! | 250 to the dot | `250` with the downstream's text (`2.0.0 Ok: queued as 4Xyz`) |
//! | 4xx to MAIL, a RCPT, DATA or the dot | `DenySoft` with its text (452, or the downstream's enhanced code) |
//! | 5xx to MAIL, DATA or the dot | `Deny` with its text (552, or the downstream's enhanced code) |
//! | not reachable (refused, DNS, connect timeout) | `DenySoft` `4.4.1 Downstream not reachable (...)` |
//! | a timeout or a dropped connection after connecting, a malformed reply | `DenySoft` `4.4.2 Connection to downstream failed (...)` |
//! | a refused greeting, EHLO, XCLIENT | `DenySoft` `4.3.0 Downstream refused the session (...)`: our setup, not the message, is at fault |
//!
//! Never `OK` unless the downstream said 250 to the dot. A timeout while waiting for that
//! reply is a 4xx although the downstream may have taken the message: the client's retry may
//! then deliver it twice (SMTP's at-least-once, RFC 1047).
//!
//! **Recipients refused by the downstream.** Our client gets one reply for the whole message,
//! and a 250 would tell it every recipient got the message. So if the downstream refuses any
//! RCPT, nothing is delivered (the transaction is reset before DATA; if a pipelining
//! downstream already answered 354, the connection is closed, since a lone dot would deliver an
//! empty message): with any 4xx among the refusals our client gets `DenySoft` (it retries all
//! of them later), else `Deny` with the first refusal's text and the recipient, plus "(not
//! delivered to any recipient)" when others were accepted, so the sender's bounce says what
//! happened. No recipient is dropped silently, and nobody gets the message twice. (qpsmtpd
//! stops at the first refused RCPT and declines.)
//!
//! **Parameters.** `SIZE=` (the size as queued, with our added headers) when offered;
//! `BODY=8BITMIME` when the client sent it and the downstream offers 8BITMIME (when it does not,
//! the message goes without it, as Postfix does); `SMTPUTF8` when the client sent it; a message
//! that needs SMTPUTF8 to a downstream without it is refused (`5.6.7`, RFC 6531 §3.4); DSN
//! `RET`, `ENVID`, `NOTIFY`, `ORCPT` as the client sent them, when the downstream offers DSN.
//! `AUTH=` is not passed on (we do not authenticate to the downstream).
//!
//! **The message** goes as queued: the headers the core and plugins added (Received, ...)
//! first, then the message as received, streamed from memory or from the spool file (read on
//! the blocking pool in 64 KiB chunks), dot-stuffed, with CRLF line endings and a final CRLF
//! if it had none.
//!
//! **PIPELINING** (RFC 2920): when the downstream offers it, MAIL, all RCPTs and DATA go in one
//! write. Otherwise one command at a time, and DATA is not sent if no RCPT was accepted.
//!
//! **Connection pool.** Each worker keeps up to `pool` idle connections to the downstream,
//! each for at most `pool_idle` seconds and `pool_uses` messages (then QUIT). A delivery takes
//! the most recent idle connection and checks it with `RSET` (5 s at most); a connection that
//! fails that check, is closed by the downstream, or fails before MAIL was accepted, is
//! dropped and the message goes on a new connection, transparently. Idle connections are only
//! looked at when the next message comes: one the downstream closed meanwhile stays a closed
//! socket until then (at most `pool` per worker). `pool 0` opens a connection per message.
//!
//! **XCLIENT** (with `xclient`, Postfix XCLIENT_README): the downstream learns our client's
//! name (`[UNAVAILABLE]` if unknown), address (`IPV6:` prefixed for IPv6), port, HELO, protocol
//! (SMTP/ESMTP), SASL login and, if offered, our address and port (DESTADDR/DESTPORT), in the
//! attributes it lists in EHLO, xtext-encoded, in lines under 500 octets. It answers with a new
//! greeting; we send EHLO again with the client's HELO name (as qpsmtpd does). A pooled
//! connection gets a new XCLIENT only when the client differs. As in qpsmtpd, `xclient` with a
//! downstream that does not offer XCLIENT is a temporary failure: the downstream's policy would
//! otherwise judge us instead of the client. Postfix needs `smtpd_authorized_xclient_hosts`.
//!
//! **XFORWARD** (with `xforward`, Postfix XFORWARD_README): NAME, ADDR, PORT, PROTO, HELO,
//! IDENT (our transaction id) and SOURCE (LOCAL for a loopback client, else REMOTE) before
//! each MAIL, for the downstream's logs. Skipped if not offered. Postfix needs
//! `smtpd_authorized_xforward_hosts`.
//!
//! **STARTTLS** (RFC 3207): with `tls may`, used when the downstream offers it; if the
//! handshake fails, the message goes on a new plain connection (a log line says so). With
//! `tls require`, the downstream must offer STARTTLS and the handshake (certificate check
//! included) must succeed, or the client gets `DenySoft` `4.7.4`/`4.7.5`: no envelope or
//! message byte is ever sent in the clear. Plain text the downstream sends right behind its
//! 220 is refused (the STARTTLS injection of CVE-2011-0411).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `<host>` | required | IP address or host name (letters, digits, `-._`); a name is resolved (A, then AAAA) for each new connection, each address tried in turn; `localhost` is 127.0.0.1 |
//! | `<port>` | 25 | |
//! | `xclient` | off | send XCLIENT, see above |
//! | `xforward` | off | send XFORWARD, see above |
//! | `tls [may\|require]` | off | STARTTLS to the downstream; bare `tls` is `may` |
//! | `tls_verify` | `none` with `may`, `system` with `require` | `none`: no certificate check (opportunistic TLS, RFC 7435); `system`: the OS trust store (`ca-certificates`); `cafile:<path>`: only the CAs in that PEM file (checked to exist at start) |
//! | `tls_name` | `<host>` | the name the certificate must carry |
//! | `connect_timeout` | 10 | seconds to connect |
//! | `timeout` | 25 | seconds for each reply and each write |
//! | `data_timeout` | 25 | seconds for the reply to the final dot (RFC 5321 §4.5.3.2 suggests 10 minutes; raise `plugin_timeout` with it) |
//! | `pool` | 4 | idle connections kept per worker (0..1000) |
//! | `pool_idle` | 10 | seconds an idle connection is kept |
//! | `pool_uses` | 100 | messages per connection |
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect. |
//!
//! All timeouts run inside the engine's `plugin_timeout` (30 s by default), which bounds the
//! whole delivery: keep it above `connect_timeout` + `data_timeout` + a few `timeout`s.
//! qpsmtpd accepted any flag with a warning; an unknown argument here stops the server with
//! the `plugins` line.
//!
//! ## Config files
//!
//! None; `me` is the name in our EHLO.
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
//! RFC 5321 (SMTP; §4.5.2 dot-stuffing, §4.5.3.2 timeouts, §4.2 replies), RFC 2920
//! (PIPELINING), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3461 (DSN,
//! xtext), RFC 3207 (STARTTLS), RFC 7435 (opportunistic security), RFC 3463 (enhanced codes:
//! 4.4.1 no answer, 4.4.2 bad connection, 4.7.4/4.7.5 TLS), Postfix XCLIENT_README and
//! XFORWARD_README.
//!
//! ## Security
//!
//! Replies from the downstream are parsed strictly (CRLF lines, one code per reply, at most
//! 100 lines of 2,048 octets, no control characters) and every wait is bounded, so a broken
//! or hostile downstream costs a 4xx, never a hung worker. Relayed reply texts are printable
//! ASCII/UTF-8 only; a downstream enhanced code of another class than its reply code is
//! replaced by `x.0.0`. XCLIENT values are xtext-encoded, and HELO/NAME values that are not
//! plain tokens are sent as `[UNAVAILABLE]`. `tls may` protects only against passive
//! listeners; use `tls require` with `system` or `cafile:` when the path to the downstream is
//! not trusted.

use ringsmtpd_plugin_api::{ConfigError, Plugin, PluginInit};

use super::smtp_client::{plugin, Settings};

/// Builds `queue/smtp-forward` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    plugin(init, Settings::smtp)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use ringsmtpd_plugin_api::testing::{build, spool, TempDir};
    use ringsmtpd_plugin_api::{Outcome, Plugin};

    use super::super::smtp_client::fake::{self, FakeServer, Script, TestSvc};

    const BODY: &[u8] = b"Subject: t\r\n\r\n.leading dot\r\n..two\r\n.\r\nlast line without CRLF";

    fn plugin(server: &FakeServer, extra: &str) -> Box<dyn Plugin> {
        let line = format!(
            "queue/smtp-forward 127.0.0.1 {} {extra}",
            server.addr.port()
        );
        build(super::new, &line, &[]).unwrap()
    }

    /// One delivery of BODY to `rcpts`; the outcome and the services (for logs).
    fn send(p: &dyn Plugin, rcpts: &[&str]) -> (Outcome, Rc<TestSvc>) {
        let svc = Rc::new(TestSvc::default());
        let mut cx = fake::context(&svc);
        let mut t = fake::txn(rcpts, BODY);
        (fake::queue(p, &mut cx, &mut t), svc)
    }

    fn msg(o: &Outcome) -> String {
        o.msg().unwrap_or_default().to_string()
    }

    #[test]
    fn delivers_with_pipelining_and_dot_stuffing() {
        let server = FakeServer::start(Script::smtp());
        let p = plugin(&server, "");
        let (o, _) = send(&*p, &["b@example.com", "c@example.com"]);
        assert_eq!(o, Outcome::Ok(Some("2.0.0 Ok: queued as ABC123".into())));
        let cmds = server.commands();
        let size = "Received: from client.example\r\n".len() + BODY.len();
        assert_eq!(
            cmds,
            [
                "EHLO mx.example.test".to_string(),
                format!("MAIL FROM:<a@example.org> SIZE={size}"),
                "RCPT TO:<b@example.com>".into(),
                "RCPT TO:<c@example.com>".into(),
                "DATA".into(),
            ]
        );
        assert_eq!(server.pipelined(), [true]);
        assert_eq!(
            server.messages(),
            [b"Received: from client.example\r\nSubject: t\r\n\r\n..leading dot\r\n...two\r\n..\r\nlast line without CRLF\r\n.\r\n".to_vec()]
        );
    }

    #[test]
    fn without_pipelining_one_command_at_a_time() {
        let server = FakeServer::start(Script {
            caps: vec!["8BITMIME".into()],
            ..Script::smtp()
        });
        let p = plugin(&server, "");
        let (o, _) = send(&*p, &["b@example.com"]);
        assert!(matches!(o, Outcome::Ok(_)), "{o:?}");
        assert_eq!(server.pipelined(), [false]);
        // No SIZE offered: no SIZE parameter.
        assert_eq!(server.commands()[1], "MAIL FROM:<a@example.org>");
    }

    #[test]
    fn downstream_refusals_are_relayed() {
        type Check = fn(&Outcome) -> bool;
        let cases: Vec<(Script, Check, &str)> = vec![
            (
                Script {
                    mail: "451 4.3.0 try later".into(),
                    ..Script::smtp()
                },
                |o| matches!(o, Outcome::DenySoft(_)),
                "4.3.0 try later",
            ),
            (
                Script {
                    mail: "553 5.7.1 sender rejected".into(),
                    ..Script::smtp()
                },
                |o| matches!(o, Outcome::Deny(_)),
                "5.7.1 sender rejected",
            ),
            (
                Script {
                    data: "451 4.3.0 no DATA now".into(),
                    ..Script::smtp()
                },
                |o| matches!(o, Outcome::DenySoft(_)),
                "4.3.0 no DATA now",
            ),
            (
                Script {
                    dot: vec!["452 4.3.1 disk full".into()],
                    ..Script::smtp()
                },
                |o| matches!(o, Outcome::DenySoft(_)),
                "4.3.1 disk full",
            ),
            (
                Script {
                    dot: vec!["554 5.7.1 spam".into()],
                    ..Script::smtp()
                },
                |o| matches!(o, Outcome::Deny(_)),
                "5.7.1 spam",
            ),
            (
                Script {
                    greeting: "554 5.3.2 go away".into(),
                    ..Script::smtp()
                },
                |o| matches!(o, Outcome::DenySoft(_)),
                "4.3.0 Downstream refused the session (greeting 554 5.3.2 go away)",
            ),
        ];
        for (script, want, text) in cases {
            let server = FakeServer::start(script);
            let p = plugin(&server, "");
            let (o, _) = send(&*p, &["b@example.com"]);
            assert!(want(&o), "{o:?}");
            assert_eq!(msg(&o), text);
        }
    }

    #[test]
    fn a_refused_recipient_delivers_nothing() {
        // One 5xx among accepted ones, pipelined: the 354 came, so the connection is closed
        // without a dot; the message reached nobody and the client gets a 5xx naming him.
        let server = FakeServer::start(Script {
            rcpt: vec![("bad@example.com".into(), "550 5.1.1 no such user".into())],
            ..Script::smtp()
        });
        let p = plugin(&server, "");
        let (o, _) = send(&*p, &["b@example.com", "bad@example.com"]);
        assert_eq!(
            o,
            Outcome::Deny(Some(
                "5.1.1 <bad@example.com>: no such user (not delivered to any recipient)".into()
            ))
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(server.messages().is_empty(), "nothing may be delivered");
        // The next message opens a new connection (that one was closed mid-DATA).
        let (o, _) = send(&*p, &["b@example.com"]);
        assert!(matches!(o, Outcome::Ok(_)));
        assert_eq!(server.conns(), 2);

        // A 4xx among them: DenySoft (the client retries all), RSET, connection kept.
        let server = FakeServer::start(Script {
            rcpt: vec![("later@example.com".into(), "450 4.2.1 mailbox busy".into())],
            caps: vec![],
            ..Script::smtp()
        });
        let p = plugin(&server, "");
        let (o, _) = send(&*p, &["b@example.com", "later@example.com"]);
        assert_eq!(
            o,
            Outcome::DenySoft(Some(
                "4.2.1 <later@example.com>: mailbox busy (not delivered to any recipient)".into()
            ))
        );
        let cmds = server.commands();
        assert!(!cmds.contains(&"DATA".to_string()), "{cmds:?}");
        assert_eq!(cmds.last().unwrap(), "RSET");
        // All refused permanently: Deny, no DATA content.
        let server = FakeServer::start(Script {
            rcpt: vec![("x@example.com".into(), "550 5.1.1 unknown".into())],
            ..Script::smtp()
        });
        let p = plugin(&server, "");
        let (o, _) = send(&*p, &["x@example.com"]);
        assert_eq!(
            o,
            Outcome::Deny(Some("5.1.1 <x@example.com>: unknown".into()))
        );
        assert!(server.messages().is_empty());
    }

    #[test]
    fn multi_line_and_malformed_replies() {
        let server = FakeServer::start(Script {
            dot: vec!["250-2.0.0 first line\n250 2.0.0 queued as Q1".into()],
            ..Script::smtp()
        });
        let (o, _) = send(&*plugin(&server, ""), &["b@example.com"]);
        assert_eq!(
            o,
            Outcome::Ok(Some("2.0.0 first line\nqueued as Q1".into()))
        );
        for bad in ["250-2.0.0 a\n251 2.0.0 b", "25O ok", "250 ok\u{1}"] {
            let server = FakeServer::start(Script {
                dot: vec![bad.into()],
                ..Script::smtp()
            });
            let (o, _) = send(&*plugin(&server, ""), &["b@example.com"]);
            assert!(matches!(o, Outcome::DenySoft(_)), "{bad}: {o:?}");
            assert!(msg(&o).starts_with("4.4.2 "), "{bad}: {o:?}");
        }
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo() {
        let server = FakeServer::start(Script {
            ehlo: Some("502 5.5.2 what".into()),
            ..Script::smtp()
        });
        let (o, _) = send(&*plugin(&server, ""), &["b@example.com"]);
        assert!(matches!(o, Outcome::Ok(_)), "{o:?}");
        let cmds = server.commands();
        assert_eq!(&cmds[..2], ["EHLO mx.example.test", "HELO mx.example.test"]);
        assert_eq!(server.pipelined(), [false], "no PIPELINING without EHLO");
    }

    #[test]
    fn connection_failures_are_temporary() {
        // Nothing listens there.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port().to_string()
        };
        let p = build(
            super::new,
            &format!("queue/smtp-forward 127.0.0.1 {port}"),
            &[],
        )
        .unwrap();
        let (o, _) = send(&*p, &["b@example.com"]);
        assert!(matches!(o, Outcome::DenySoft(_)));
        assert!(
            msg(&o).starts_with("4.4.1 Downstream not reachable"),
            "{o:?}"
        );

        // Dropped in the middle of the message.
        let server = FakeServer::start(Script {
            drop_in_data: Some(10),
            ..Script::smtp()
        });
        let (o, _) = send(&*plugin(&server, ""), &["b@example.com"]);
        assert!(matches!(o, Outcome::DenySoft(_)));
        assert!(msg(&o).starts_with("4.4.2 "), "{o:?}");
        assert!(server.messages().is_empty());
    }

    #[test]
    fn slow_downstream_times_out() {
        let server = FakeServer::start(Script {
            dot_delay: Duration::from_secs(30),
            ..Script::smtp()
        });
        let p = plugin(&server, "data_timeout 1");
        let start = Instant::now();
        let (o, _) = send(&*p, &["b@example.com"]);
        assert!(
            start.elapsed() < Duration::from_secs(20), // the server would answer after 30 s
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            o,
            Outcome::DenySoft(Some(
                "4.4.2 Connection to downstream failed (reading the reply: timed out)".into()
            ))
        );
        // A slow greeting: `timeout`.
        let server = FakeServer::start(Script {
            mail_delay: Duration::from_secs(3),
            ..Script::smtp()
        });
        let p = plugin(&server, "timeout 1");
        let (o, _) = send(&*p, &["b@example.com"]);
        assert!(msg(&o).contains("timed out"), "{o:?}");
    }

    #[test]
    fn pooled_connection_is_reused_and_replaced() {
        let server = FakeServer::start(Script::smtp());
        let p = plugin(&server, "");
        for _ in 0..3 {
            let (o, _) = send(&*p, &["b@example.com"]);
            assert!(matches!(o, Outcome::Ok(_)), "{o:?}");
        }
        assert_eq!(server.conns(), 1);
        let cmds = server.commands();
        assert_eq!(cmds.iter().filter(|c| *c == "RSET").count(), 2, "{cmds:?}");
        assert_eq!(cmds.iter().filter(|c| c.starts_with("EHLO")).count(), 1);

        // The downstream closes after each message: the dead pooled connection is found by
        // its RSET and replaced, and no message fails.
        let server = FakeServer::start(Script {
            close_after_each: true,
            ..Script::smtp()
        });
        let p = plugin(&server, "");
        for _ in 0..3 {
            let (o, svc) = send(&*p, &["b@example.com"]);
            assert!(matches!(o, Outcome::Ok(_)), "{o:?} {:?}", svc.logs.borrow());
        }
        assert_eq!(server.conns(), 3);
        assert_eq!(server.messages().len(), 3);

        // pool 0: a connection per message, closed with QUIT.
        let server = FakeServer::start(Script::smtp());
        let p = plugin(&server, "pool 0");
        for _ in 0..2 {
            assert!(matches!(send(&*p, &["b@example.com"]).0, Outcome::Ok(_)));
        }
        assert_eq!(server.conns(), 2);
        std::thread::sleep(Duration::from_millis(50));
        assert!(server.commands().contains(&"QUIT".to_string()));

        // pool_uses 2: the third message needs a new connection.
        let server = FakeServer::start(Script::smtp());
        let p = plugin(&server, "pool_uses 2");
        for _ in 0..3 {
            assert!(matches!(send(&*p, &["b@example.com"]).0, Outcome::Ok(_)));
        }
        assert_eq!(server.conns(), 2);
    }

    #[test]
    fn idle_connections_expire() {
        let server = FakeServer::start(Script::smtp());
        let p = plugin(&server, "pool_idle 1");
        assert!(matches!(send(&*p, &["b@example.com"]).0, Outcome::Ok(_)));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(matches!(send(&*p, &["b@example.com"]).0, Outcome::Ok(_)));
        assert_eq!(server.conns(), 2);
    }

    #[test]
    fn xclient_dialogue() {
        let server = FakeServer::start(Script {
            caps: vec![
                "PIPELINING".into(),
                "XCLIENT NAME ADDR PORT PROTO HELO LOGIN".into(),
            ],
            ..Script::smtp()
        });
        let p = plugin(&server, "xclient");
        for _ in 0..2 {
            let (o, _) = send(&*p, &["b@example.com"]);
            assert!(matches!(o, Outcome::Ok(_)), "{o:?}");
        }
        let cmds = server.commands();
        assert_eq!(
            &cmds[..3],
            [
                "EHLO mx.example.test",
                "XCLIENT NAME=[UNAVAILABLE] ADDR=192.0.2.1 PORT=4242 HELO=client.example PROTO=ESMTP",
                "EHLO client.example",
            ]
        );
        // The second message is from the same client on the pooled connection: no new XCLIENT.
        assert_eq!(cmds.iter().filter(|c| c.starts_with("XCLIENT")).count(), 1);

        // A different client on the pooled connection gets its own XCLIENT.
        let svc = Rc::new(TestSvc::default());
        let mut cx = fake::context(&svc);
        cx.conn.remote = "[2001:db8::7]:5000".parse().unwrap();
        cx.conn.remote_host = Some("host.example".into());
        cx.conn.auth = Some(ringsmtpd_plugin_api::AuthInfo {
            user: "joe+x".into(),
            mechanism: "PLAIN".into(),
        });
        let mut t = fake::txn(&["b@example.com"], BODY);
        assert!(matches!(fake::queue(&*p, &mut cx, &mut t), Outcome::Ok(_)));
        assert!(server.commands().contains(
            &"XCLIENT NAME=host.example ADDR=IPV6:2001:db8::7 PORT=5000 HELO=client.example PROTO=ESMTP LOGIN=joe+2Bx".to_string()
        ));
        assert_eq!(server.conns(), 1);

        // Asked for but not offered: temporary failure, no MAIL sent.
        let server = FakeServer::start(Script::smtp());
        let (o, _) = send(&*plugin(&server, "xclient"), &["b@example.com"]);
        assert!(matches!(o, Outcome::DenySoft(_)), "{o:?}");
        assert!(
            msg(&o).contains("XCLIENT asked for but not offered"),
            "{o:?}"
        );
        assert!(!server.commands().iter().any(|c| c.starts_with("MAIL")));

        // Refused by the downstream (not authorized): temporary.
        let server = FakeServer::start(Script {
            caps: vec!["XCLIENT NAME ADDR".into()],
            xclient: "550 5.7.0 Error: insufficient authorization".into(),
            ..Script::smtp()
        });
        let (o, _) = send(&*plugin(&server, "xclient"), &["b@example.com"]);
        assert!(matches!(o, Outcome::DenySoft(_)), "{o:?}");
    }

    #[test]
    fn xforward_before_each_mail() {
        let server = FakeServer::start(Script {
            caps: vec!["XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT".into()],
            ..Script::smtp()
        });
        let p = plugin(&server, "xforward");
        for _ in 0..2 {
            assert!(matches!(send(&*p, &["b@example.com"]).0, Outcome::Ok(_)));
        }
        let xf: Vec<String> = server
            .commands()
            .into_iter()
            .filter(|c| c.starts_with("XFORWARD"))
            .collect();
        assert_eq!(xf.len(), 2);
        assert_eq!(
            xf[0],
            "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.1 PORT=4242 PROTO=ESMTP HELO=client.example IDENT=7.1 SOURCE=REMOTE"
        );
        // Not offered: skipped, the message still goes.
        let server = FakeServer::start(Script::smtp());
        assert!(matches!(
            send(&*plugin(&server, "xforward"), &["b@example.com"]).0,
            Outcome::Ok(_)
        ));
    }

    #[test]
    fn starttls_policy() {
        let offered = Script {
            caps: vec!["PIPELINING".into(), "STARTTLS".into()],
            ..Script::smtp()
        };
        // require + offered: STARTTLS, EHLO again, then the mail.
        let server = FakeServer::start(offered.clone());
        let (o, _) = send(&*plugin(&server, "tls require"), &["b@example.com"]);
        assert!(matches!(o, Outcome::Ok(_)), "{o:?}");
        assert_eq!(
            &server.commands()[..3],
            ["EHLO mx.example.test", "STARTTLS", "EHLO mx.example.test"]
        );
        // require + not offered: nothing of the envelope goes out in the clear.
        let server = FakeServer::start(Script::smtp());
        let (o, _) = send(&*plugin(&server, "tls require"), &["b@example.com"]);
        assert_eq!(
            o,
            Outcome::DenySoft(Some(
                "4.7.4 Downstream does not offer STARTTLS, which is required".into()
            ))
        );
        std::thread::sleep(Duration::from_millis(50));
        assert!(!server.commands().iter().any(|c| c.starts_with("MAIL")));
        // may: used when offered, skipped when not.
        let server = FakeServer::start(offered);
        assert!(matches!(
            send(&*plugin(&server, "tls"), &["b@example.com"]).0,
            Outcome::Ok(_)
        ));
        assert!(server.commands().contains(&"STARTTLS".to_string()));
        let server = FakeServer::start(Script::smtp());
        assert!(matches!(
            send(&*plugin(&server, "tls may"), &["b@example.com"]).0,
            Outcome::Ok(_)
        ));
        assert!(!server.commands().contains(&"STARTTLS".to_string()));
    }

    #[test]
    fn esmtp_parameters_pass_through() {
        use ringsmtpd_plugin_api::{BodyType, Notify, Ret};
        let server = FakeServer::start(Script {
            caps: vec!["8BITMIME".into(), "DSN".into(), "SMTPUTF8".into()],
            ..Script::smtp()
        });
        let p = plugin(&server, "");
        let svc = Rc::new(TestSvc::default());
        let mut cx = fake::context(&svc);
        let mut t = fake::txn(&["b@example.com"], BODY);
        t.mail_params.body = BodyType::EightBitMime;
        t.mail_params.smtputf8 = true;
        t.mail_params.ret = Some(Ret::Hdrs);
        t.mail_params.envid = Some("QQ+2B1".into());
        t.recipients[0].params.notify = Notify {
            success: true,
            failure: true,
            ..Notify::default()
        };
        t.recipients[0].params.orcpt = Some("rfc822;b@example.com".into());
        assert!(matches!(fake::queue(&*p, &mut cx, &mut t), Outcome::Ok(_)));
        let cmds = server.commands();
        assert_eq!(
            cmds[1],
            "MAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1"
        );
        assert_eq!(
            cmds[2],
            "RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.com"
        );

        // Without DSN and 8BITMIME offered: neither is sent. SMTPUTF8 needed, not offered: 5.6.7.
        let server = FakeServer::start(Script {
            caps: vec![],
            ..Script::smtp()
        });
        let p = plugin(&server, "");
        let mut t2 = fake::txn(&["b@example.com"], BODY);
        t2.mail_params.body = BodyType::EightBitMime;
        t2.mail_params.ret = Some(Ret::Full);
        assert!(matches!(fake::queue(&*p, &mut cx, &mut t2), Outcome::Ok(_)));
        assert_eq!(server.commands()[1], "MAIL FROM:<a@example.org>");
        t.mail_params.ret = None;
        let o = fake::queue(&*p, &mut cx, &mut t);
        assert_eq!(
            o,
            Outcome::deny("5.6.7 Downstream does not support SMTPUTF8")
        );
    }

    #[test]
    fn spooled_message_is_streamed() {
        let server = FakeServer::start(Script::smtp());
        let p = plugin(&server, "");
        let dir = TempDir::new("fwd");
        // 300 KiB of lines, some starting with a dot, across several read chunks.
        let mut big = b"Subject: big\r\n\r\n".to_vec();
        for i in 0..20_000 {
            if i % 7 == 0 {
                big.extend_from_slice(b".");
            }
            big.extend_from_slice(format!("line {i:06}\r\n").as_bytes());
        }
        let svc = Rc::new(TestSvc::default());
        let mut cx = fake::context(&svc);
        let mut t = fake::txn(&["b@example.com"], b"");
        spool(&mut t.body, &dir.path().join("spool"), &big);
        assert!(matches!(fake::queue(&*p, &mut cx, &mut t), Outcome::Ok(_)));
        let got = server.messages().pop().unwrap();
        let mut want = b"Received: from client.example\r\n".to_vec();
        for line in big.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                want.push(b'.');
            }
            want.extend_from_slice(line);
        }
        want.extend_from_slice(b".\r\n");
        assert_eq!(got.len(), want.len());
        assert!(got == want);
    }

    #[test]
    fn registered_under_its_qpsmtpd_name() {
        assert!(crate::find("queue/smtp-forward").is_some());
        assert!(crate::find("queue/lmtp").is_some());
    }
}
