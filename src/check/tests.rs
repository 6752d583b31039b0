//! `--check` against directories made for each mistake, and against the shipped ones.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ringsmtpd_plugin_api::testing::TempDir;

use super::*;

/// A config directory: `me`, a spool inside it, then `files` (name, contents).
fn dir(files: &[(&str, &str)]) -> TempDir {
    let d = TempDir::new("check");
    d.write("me", "mx.example.test\n");
    d.write("spool_dir", d.join("spool"));
    // A free port: bound and closed again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    d.write("listen", format!("127.0.0.1:{port}\n"));
    for (name, contents) in files {
        d.write(name, contents);
    }
    d
}

fn env() -> Env {
    Env {
        stdio: false,
        relayclient: false,
        now: SystemTime::now(),
    }
}

fn check_with(d: &TempDir, env: &Env) -> Report {
    report(d.path(), env)
}

fn check(d: &TempDir) -> Report {
    check_with(d, &env())
}

/// The findings of `severity` whose text contains `needle`.
fn found<'a>(r: &'a Report, severity: Severity, needle: &str) -> Vec<&'a Finding> {
    r.findings
        .iter()
        .filter(|f| f.severity == severity && f.to_string().contains(needle))
        .collect()
}

fn problems(r: &Report) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.severity != Severity::Note)
        .map(Finding::to_string)
        .collect()
}

const OK_CHAIN: &str = "relay\nrcpt_ok\nqueue/discard\n";

#[test]
fn a_sound_directory_has_no_errors_or_warnings() {
    let d = dir(&[
        ("plugins", OK_CHAIN),
        ("rcpthosts", "example.test\n.example.test\n"),
    ]);
    let r = check(&d);
    assert_eq!(problems(&r), Vec::<String>::new());
    assert!(r
        .chains
        .iter()
        .any(|(h, n)| *h == "rcpt" && n == &["rcpt_ok"]));
}

#[test]
fn the_shipped_config_has_no_errors_or_warnings() {
    // The shipped files, with the Maildir moved out of the working directory.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let d = dir(&[]);
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let text = match name.as_str() {
            "plugins" => text.replace("./Maildir", &d.join("Maildir")),
            "spool_dir" => d.join("spool"),
            "listen" => continue, // a free port instead of 2525, which a test server may hold
            _ => text,
        };
        d.write(&name, text);
    }
    let r = check(&d);
    assert_eq!(problems(&r), Vec::<String>::new());
}

#[test]
fn no_queue_plugin_is_an_error() {
    let r = check(&dir(&[("plugins", "rcpt_ok\n")]));
    assert_eq!(found(&r, Severity::Error, "no queue plugin").len(), 1);
    assert_eq!(r.errors(), 1, "{:?}", r.findings);
}

#[test]
fn unknown_plugins_name_the_closest_and_the_rest_is_still_checked() {
    let plugins = "rcpt_okk\nquit_fortune\nrcpt_regex\ncheck_relay\nrcpt_ok\nqueue/discard\n";
    let r = check(&dir(&[("plugins", plugins)]));
    let at = |n: u32| format!("plugins:{n}: unknown plugin");
    let typo = found(&r, Severity::Error, &at(1));
    assert!(typo[0].message.contains("use rcpt_ok "), "{typo:?}");
    let qp = found(&r, Severity::Error, &at(2));
    assert!(qp[0].message.contains("qpsmtpd 0.94 plugin"), "{qp:?}");
    assert!(
        qp[0].message.contains("no implemented plugin is close"),
        "{qp:?}"
    );
    let renamed = found(&r, Severity::Error, &at(3));
    assert!(renamed[0].message.contains("rcpt_regexp"), "{renamed:?}");
    assert_eq!(
        found(&r, Severity::Note, "plugins:4: check_relay is Debian's").len(),
        1
    );
    assert_eq!(r.errors(), 3, "{:?}", r.findings);
    // The known lines were built: their chains are there.
    assert!(r
        .chains
        .iter()
        .any(|(h, n)| *h == "connect" && n == &["check_relay"]));
}

// ---------------------------------------------------------------------------------------------
// Open relay: one test per dangerous combination, and the safe neighbours of each.

#[test]
fn relayclient_in_the_environment_is_an_open_relay_except_under_stdio() {
    let d = dir(&[("plugins", OK_CHAIN)]);
    let mut e = env();
    e.relayclient = true;
    let r = check_with(&d, &e);
    assert_eq!(
        found(&r, Severity::Error, "RELAYCLIENT is set").len(),
        1,
        "{:?}",
        r.findings
    );
    e.stdio = true;
    assert_eq!(problems(&check_with(&d, &e)), Vec::<String>::new());
    // Without an accepting plugin, nobody's recipients are accepted: no relay.
    let d = dir(&[("plugins", "relay\nqueue/discard\n")]);
    e.stdio = false;
    assert!(found(&check_with(&d, &e), Severity::Error, "RELAYCLIENT").is_empty());
}

#[test]
fn relayclients_covering_the_internet_is_an_open_relay() {
    for wide in [
        "0.0.0.0/0",
        "8.",
        "128.0.0.0/1",
        "::/0",
        "2000::/3",
        "1.1.1.1",
    ] {
        let d = dir(&[
            ("plugins", OK_CHAIN),
            ("relayclients", &format!("10.\n{wide}\n")),
        ]);
        let r = check(&d);
        let open = found(&r, Severity::Error, "relayclients:2: ");
        assert_eq!(open.len(), 1, "{wide}: {:?}", r.findings);
        assert!(open[0].message.contains("open relay"), "{open:?}");
    }
    // morerelayclients too, and `relay only 1` accepts for relay clients as rcpt_ok does.
    let d = dir(&[
        ("plugins", "relay only 1\nqueue/discard\n"),
        ("morerelayclients", "0.0.0.0/0\n"),
    ]);
    let r = check(&d);
    assert_eq!(
        found(&r, Severity::Error, "relay only 1 accepts").len(),
        1,
        "{:?}",
        r.findings
    );
}

#[test]
fn own_networks_and_excepted_ranges_are_no_relay() {
    let lists = "127.0.0.1\n10.\n192.168.0.0/16\n172.16.0.0/12\n2001:db8::/32\nfd00::/8\n";
    let d = dir(&[("plugins", OK_CHAIN), ("relayclients", lists)]);
    assert_eq!(problems(&check(&d)), Vec::<String>::new());
    // A wide list minus norelayclients that takes the Internet back out.
    let d = dir(&[
        ("plugins", OK_CHAIN),
        ("relayclients", "0.0.0.0/0\n"),
        ("norelayclients", "0.0.0.0/1\n128.0.0.0/1\n"),
    ]);
    assert_eq!(problems(&check(&d)), Vec::<String>::new());
    // relayclients without the relay plugin is never read: a note, not a relay.
    let d = dir(&[
        ("plugins", "rcpt_ok\nqueue/discard\n"),
        ("relayclients", "0.0.0.0/0\n"),
    ]);
    let r = check(&d);
    assert_eq!(problems(&r), Vec::<String>::new());
    assert_eq!(
        found(&r, Severity::Note, "relayclients: not read").len(),
        1,
        "{:?}",
        r.findings
    );
}

#[test]
fn whitelisted_internet_hosts_are_an_open_relay() {
    let plugins = "whitelist\nrcpt_ok\nqueue/discard\n";
    let d = dir(&[
        ("plugins", plugins),
        ("whitelisthosts", "192.0.2.1\n208.67\n"),
    ]);
    let r = check(&d);
    assert_eq!(
        found(&r, Severity::Error, "whitelisthosts:2: ").len(),
        1,
        "{:?}",
        r.findings
    );
    assert_eq!(r.errors(), 1);
}

#[test]
fn whitelisted_senders_and_dns_whitelists_are_warnings() {
    let d = dir(&[
        ("plugins", "whitelist\nrcpt_ok\nqueue/discard\n"),
        ("whitelistsenders", "boss@example.test\n"),
    ]);
    let r = check(&d);
    assert_eq!(
        found(&r, Severity::Warning, "whitelistsenders:1: ").len(),
        1,
        "{:?}",
        r.findings
    );
    let d = dir(&[
        ("plugins", "dns_whitelist_soft\nrcpt_ok\nqueue/discard\n"),
        ("whitelist_zones", "wl.example.test\n"),
    ]);
    let r = check(&d);
    assert_eq!(
        found(&r, Severity::Warning, "plugins:1: a host the DNS whitelist").len(),
        1,
        "{:?}",
        r.findings
    );
}

#[test]
fn a_checkpassword_that_always_says_yes_is_an_open_relay() {
    let plugins =
        "auth/auth_checkpassword checkpw /bin/true true /bin/true\nrcpt_ok\nqueue/discard\n";
    let r = check(&dir(&[("plugins", plugins), ("tls_before_auth", "0\n")]));
    assert_eq!(
        found(&r, Severity::Error, "plugins:1: checkpw always exits 0").len(),
        1,
        "{:?}",
        r.findings
    );
    // A real checker (any program but true) is no finding of this kind.
    let plugins =
        "auth/auth_checkpassword checkpw /bin/false true /bin/true\nrcpt_ok\nqueue/discard\n";
    let r = check(&dir(&[("plugins", plugins)]));
    assert!(
        found(&r, Severity::Error, "checkpw always").is_empty(),
        "{:?}",
        r.findings
    );
}

#[test]
fn a_top_level_domain_in_rcpthosts_is_a_warning() {
    let d = dir(&[
        ("plugins", OK_CHAIN),
        ("rcpthosts", "example.test\n.com\n.example.com\n"),
    ]);
    let r = check(&d);
    assert_eq!(
        found(&r, Severity::Warning, "rcpthosts:2: '.com'").len(),
        1,
        "{:?}",
        r.findings
    );
    assert_eq!(problems(&r).len(), 1, "{:?}", r.findings);
}

// ---------------------------------------------------------------------------------------------
// AUTH and TLS

fn auth_dir(extra: &[(&str, &str)], tls: bool) -> TempDir {
    let d = dir(extra);
    let pw = d.write("flat_auth_pw", "user@example.test:secret\n");
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let tls_line = if tls {
        crate::tls::generate(&d.path().join("ssl"), "mx.example.test", 365).unwrap();
        format!(
            "tls {} {}\n",
            d.join("ssl/qpsmtpd-server.crt"),
            d.join("ssl/qpsmtpd-server.key")
        )
    } else {
        String::new()
    };
    d.write(
        "plugins",
        format!("{tls_line}auth/auth_flat_file\nrcpt_ok\nqueue/discard\n"),
    );
    d
}

#[test]
fn auth_without_tls() {
    let r = check(&auth_dir(&[("tls_before_auth", "0\n")], false));
    assert_eq!(
        found(&r, Severity::Error, "AUTH is offered without TLS").len(),
        1,
        "{:?}",
        r.findings
    );
    let mut e = env();
    e.stdio = true;
    let r = check_with(&auth_dir(&[("tls_before_auth", "0\n")], false), &e);
    assert_eq!(r.errors(), 0, "{:?}", r.findings);
    assert_eq!(found(&r, Severity::Warning, "under --stdio").len(), 1);
    let r = check(&auth_dir(&[], false));
    assert_eq!(
        found(&r, Severity::Warning, "AUTH is never offered").len(),
        1,
        "{:?}",
        r.findings
    );
    let r = check(&auth_dir(&[("tls_before_auth", "0\n")], true));
    assert_eq!(
        found(&r, Severity::Warning, "tls_before_auth is 0").len(),
        1,
        "{:?}",
        r.findings
    );
    assert_eq!(problems(&check(&auth_dir(&[], true))), Vec::<String>::new());
}

fn tls_dir(host: &str, days: u32) -> TempDir {
    let d = dir(&[]);
    crate::tls::generate(&d.path().join("ssl"), host, days).unwrap();
    let tls = format!(
        "tls {} {}\n",
        d.join("ssl/qpsmtpd-server.crt"),
        d.join("ssl/qpsmtpd-server.key")
    );
    d.write("plugins", format!("{tls}rcpt_ok\nqueue/discard\n"));
    d
}

#[test]
fn certificates_that_expire_soon_or_have_expired() {
    let d = tls_dir("mx.example.test", 10);
    let r = check(&d);
    let soon = found(
        &r,
        Severity::Warning,
        "qpsmtpd-server.crt: the certificate expires on",
    );
    assert_eq!(soon.len(), 1, "{:?}", r.findings);
    assert!(
        soon[0].message.contains("in 9 day") || soon[0].message.contains("in 10 day"),
        "{soon:?}"
    );
    let mut later = env();
    later.now += Duration::from_secs(11 * 86400);
    let r = check_with(&d, &later);
    assert_eq!(
        found(&r, Severity::Error, "the certificate expired on").len(),
        1,
        "{:?}",
        r.findings
    );
    assert_eq!(
        problems(&check(&tls_dir("mx.example.test", 31))),
        Vec::<String>::new()
    );
}

#[test]
fn a_certificate_for_another_host() {
    let r = check(&tls_dir("other.example.test", 365));
    let wrong = found(&r, Severity::Warning, "does not name mx.example.test");
    assert_eq!(wrong.len(), 1, "{:?}", r.findings);
    assert_eq!(problems(&r).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Listeners and paths

#[test]
fn a_listen_address_in_use_is_a_warning() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let d = dir(&[("plugins", OK_CHAIN), ("listen", &format!("{addr}\n"))]);
    let r = check(&d);
    let busy = found(
        &r,
        Severity::Warning,
        &format!("listen: {addr} is not free"),
    );
    assert_eq!(busy.len(), 1, "{:?}", r.findings);
    drop(held);
    assert_eq!(problems(&check(&d)), Vec::<String>::new());
}

#[test]
fn a_plugin_path_that_does_not_exist() {
    let d = dir(&[(
        "plugins",
        "rcpt_ok\nqueue/discard\nlogging/file /nonexistent-ringsmtpd/dir/log\n",
    )]);
    let r = check(&d);
    let missing = found(
        &r,
        Severity::Warning,
        "plugins:3: logging/file: /nonexistent-ringsmtpd/dir/log does not exist",
    );
    assert_eq!(missing.len(), 1, "{:?}", r.findings);
}

// ---------------------------------------------------------------------------------------------
// Bad input: an error that names file and line, never a panic or a hang.

#[test]
fn a_config_directory_that_is_not_one() {
    let d = dir(&[]);
    for path in [d.path().join("nonexistent"), d.path().join("me")] {
        let r = report(&path, &env());
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert!(r.findings[0].message.starts_with("not a directory"));
    }
}

#[test]
fn a_directory_where_a_file_should_be() {
    let d = dir(&[("plugins", OK_CHAIN)]);
    std::fs::create_dir(d.path().join("rcpthosts")).unwrap();
    let r = check(&d);
    assert_eq!(
        found(&r, Severity::Error, "rcpthosts: is a directory").len(),
        1,
        "{:?}",
        r.findings
    );
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let d = dir(&[]);
    for name in ["plugins", "rcpthosts"] {
        let path = std::ffi::CString::new(d.join(name)).unwrap();
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    }
    let r = check(&d);
    assert_eq!(
        found(&r, Severity::Error, "plugins: is not a regular file").len(),
        1,
        "{:?}",
        r.findings
    );
    d.write("plugins.new", OK_CHAIN);
    std::fs::rename(d.join("plugins.new"), d.join("plugins")).unwrap();
    let r = check(&d);
    assert_eq!(
        found(&r, Severity::Error, "rcpthosts: is not a regular file").len(),
        1,
        "{:?}",
        r.findings
    );
}

#[test]
fn a_link_to_nowhere_is_refused() {
    let d = dir(&[("plugins", OK_CHAIN)]);
    std::os::unix::fs::symlink(
        "/nonexistent-ringsmtpd/rcpthosts",
        d.path().join("rcpthosts"),
    )
    .unwrap();
    let r = check(&d);
    assert_eq!(
        found(&r, Severity::Error, "rcpthosts: a symbolic link to").len(),
        1,
        "{:?}",
        r.findings
    );
}

#[test]
fn binary_garbage_names_the_line() {
    let mut garbage = b"rcpt_ok\nqueue/discard\n".to_vec();
    garbage.extend((128u8..=255).chain(0..=127).cycle().take(4096));
    let d = dir(&[]);
    d.write("plugins", &garbage);
    let r = check(&d);
    let bad = found(&r, Severity::Error, "plugins:3: not valid UTF-8");
    assert_eq!(bad.len(), 1, "{:?}", r.findings);
    // Valid UTF-8 with control characters, in a plugin's file.
    let d = dir(&[
        ("plugins", OK_CHAIN),
        ("rcpthosts", "example.test\n\u{1}\u{7f}\0x\n"),
    ]);
    let r = check(&d);
    assert_eq!(
        found(&r, Severity::Error, "rcpthosts:2: ").len(),
        1,
        "{:?}",
        r.findings
    );
    let d = dir(&[("plugins", "rcpt_ok\n\u{0}\u{1b}[31m\nqueue/discard\n")]);
    assert_eq!(found(&check(&d), Severity::Error, "plugins:2: ").len(), 1);
}

#[test]
fn ten_thousand_plugin_lines() {
    // Known plugins: every line is built.
    let mut many = String::from("rcpt_ok\nqueue/discard\n");
    for n in 1..=9_998 {
        many.push_str(&format!("noop_counter:{n}\n"));
    }
    let r = check(&dir(&[("plugins", &many)]));
    assert_eq!(problems(&r), Vec::<String>::new());
    // Unknown ones: the first 20 named, the rest counted.
    let mut many = String::from("rcpt_ok\nqueue/discard\n");
    for n in 0..9_998 {
        many.push_str(&format!("no_such_plugin_{n}\n"));
    }
    let r = check(&dir(&[("plugins", &many)]));
    assert_eq!(found(&r, Severity::Error, "unknown plugin '").len(), 20);
    assert_eq!(
        found(
            &r,
            Severity::Error,
            "and 9978 more lines naming unknown plugins"
        )
        .len(),
        1
    );
}

#[test]
fn an_include_loop_names_file_and_line() {
    let d = dir(&[]);
    d.write(
        "plugins",
        format!("rcpt_ok\n$include {}\nqueue/discard\n", d.join("a")),
    );
    d.write("a", format!("# a\n$include {}\n", d.join("b")));
    d.write("b", format!("\n\n$include {}\n", d.join("a")));
    let r = check(&d);
    let cycle = found(&r, Severity::Error, "b:3: circular $include");
    assert_eq!(cycle.len(), 1, "{:?}", r.findings);
}

#[test]
fn a_file_nothing_reads_is_a_note() {
    let d = dir(&[
        ("plugins", OK_CHAIN),
        ("plugin_dirs", "/usr/share/qpsmtpd/plugins\n"),
        ("frobnicate", "1\n"),
    ]);
    let r = check(&d);
    assert_eq!(
        found(
            &r,
            Severity::Note,
            "plugin_dirs: not read: qpsmtpd's plugin search path"
        )
        .len(),
        1
    );
    assert_eq!(found(&r, Severity::Note, "frobnicate: not read").len(), 1);
    assert!(
        found(&r, Severity::Note, "me: not read").is_empty(),
        "{:?}",
        r.findings
    );
}
