use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::connect::{Connector, DialError};
use super::*;
use crate::env::MapEnv;

const PASS: &str = "corp-pass-canary-51d0";

fn from<const N: usize>(pairs: [(&str, &str); N]) -> UpstreamProxy {
    UpstreamProxy::from_env(&MapEnv::new(pairs)).expect("valid")
}

#[test]
fn curl_precedence_lower_case_first_then_all_proxy() {
    let p = from([
        ("HTTPS_PROXY", "http://upper:1"),
        ("https_proxy", "http://lower:2"),
        ("ALL_PROXY", "http://all:3"),
    ]);
    assert_eq!(
        p.via(true, "example.com", 443).expect("https").var,
        "https_proxy"
    );
    // http falls back to ALL_PROXY.
    let h = p.via(false, "example.com", 80).expect("http");
    assert_eq!((h.var, h.shown()), ("ALL_PROXY", "http://all:3".to_owned()));
    let p = from([("HTTP_PROXY", "proxy.corp:8080")]);
    assert_eq!(
        p.via(false, "a.test", 80).expect("http").shown(),
        "http://proxy.corp:8080"
    );
    assert!(p.via(true, "a.test", 443).is_none(), "no https proxy set");
    // Empty values count as unset; a missing port is curl's 1080, an explicit 80 stays.
    let p = from([("https_proxy", ""), ("HTTPS_PROXY", "http://p")]);
    assert_eq!(
        p.via(true, "a.test", 443).expect("https").shown(),
        "http://p:1080"
    );
    let p = from([("HTTPS_PROXY", "http://p:80")]);
    assert_eq!(
        p.via(true, "a.test", 443).expect("https").shown(),
        "http://p:80"
    );
}

#[test]
fn no_proxy_follows_curl_and_loopback_is_always_direct() {
    let p = from([
        ("HTTPS_PROXY", "http://proxy.corp:3128"),
        ("no_proxy", "internal.corp, .svc.local,10.0.0.0/8,fd00::1"),
        ("NO_PROXY", "ignored.example"),
    ]);
    for direct in [
        "internal.corp",
        "api.internal.corp",
        "svc.local",
        "a.svc.local",
        "10.1.2.3",
        "[fd00::1]",
        "127.0.0.1",
        "localhost",
        "::1",
    ] {
        assert!(
            p.via(true, direct, 443).is_none(),
            "{direct} should be direct"
        );
    }
    for proxied in [
        "notinternal.corp",
        "ignored.example",
        "11.0.0.1",
        "example.com",
    ] {
        assert!(
            p.via(true, proxied, 443).is_some(),
            "{proxied} should be proxied"
        );
    }
    let star = from([("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "*")]);
    assert!(star.via(true, "example.com", 443).is_none());
}

#[test]
fn a_lanyard_listener_is_never_taken_as_the_corporate_proxy() {
    let own = "http://lanyard:s3cr3t-own@127.0.0.1:40001";
    let p = from([
        ("HTTPS_PROXY", own),
        ("https_proxy", own),
        ("LANYARD_PROXY", own),
        ("HTTP_PROXY", "http://lanyard:other@127.0.0.1:40002"),
    ]);
    assert!(p.via(true, "example.com", 443).is_none(), "{p:?}");
    assert!(p.via(false, "example.com", 80).is_none(), "{p:?}");
    assert_eq!(p.skipped_own, ["https_proxy", "HTTPS_PROXY", "HTTP_PROXY"]);
    // Skipped, the next variable in curl's order is used.
    let p = from([
        ("HTTPS_PROXY", own),
        ("LANYARD_PROXY", own),
        ("ALL_PROXY", "http://corp:3128"),
    ]);
    assert_eq!(
        p.via(true, "example.com", 443).expect("all").var,
        "ALL_PROXY"
    );
}

#[test]
fn bad_proxy_values_are_named_without_their_password() {
    for (v, why) in [
        (format!("https://u:{PASS}@proxy.corp:443"), "https://"),
        (format!("socks5://u:{PASS}@proxy.corp:1080"), "SOCKS"),
        (format!("http://u:{PASS}@proxy.corp:3128/path"), "no path"),
    ] {
        let e = UpstreamProxy::from_env(&MapEnv::new([("HTTPS_PROXY", v.as_str())]))
            .expect_err("refused")
            .to_string();
        assert!(e.starts_with("HTTPS_PROXY = "), "{e}");
        assert!(e.contains(why), "{e}");
        assert!(e.contains("proxy.corp"), "{e}");
        assert!(!e.contains(PASS), "{e}");
    }
}

#[test]
fn the_childs_no_proxy_keeps_the_jobs_entries_and_adds_the_listener() {
    let p = from([("NO_PROXY", "internal.corp, .svc,127.0.0.1:5000")]);
    assert_eq!(
        p.child_no_proxy("127.0.0.1:5000"),
        "internal.corp,.svc,127.0.0.1:5000"
    );
    assert_eq!(
        UpstreamProxy::none().child_no_proxy("127.0.0.1:9"),
        "127.0.0.1:9"
    );
}

#[test]
fn all_proxy_with_credentials_is_scrubbed_and_the_debug_form_hides_them() {
    let p = from([("ALL_PROXY", &format!("http://u:{PASS}@corp:3128") as &str)]);
    assert_eq!(p.scrub, ["ALL_PROXY"]);
    let shown = format!("{p:?} {}", p.describe());
    assert!(!shown.contains(PASS), "{shown}");
    assert!(
        shown.contains("http://corp:3128 (from ALL_PROXY)"),
        "{shown}"
    );
}

/// A one-shot fake proxy: reads the CONNECT head, answers `reply`, returns the head.
async fn fake_proxy(reply: &'static [u8]) -> (u16, tokio::task::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).await.expect("read");
            head.push(b[0]);
        }
        s.write_all(reply).await.expect("write");
        // Keep the tunnel open until the client reads.
        let _ = s.read(&mut b).await;
        String::from_utf8(head).expect("utf8")
    });
    (port, task)
}

fn connector(port: u16, user: &str) -> Connector {
    let url = format!("http://{user}127.0.0.1:{port}");
    // The fake proxy is on loopback; the destination is not (loopback
    // destinations are dialled directly).
    Connector::new(Arc::new(from([("HTTPS_PROXY", url.as_str())])))
}

#[tokio::test]
async fn connect_sends_basic_auth_and_keeps_the_bytes_after_the_answer() {
    let (port, task) =
        fake_proxy(b"HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-banner\r\n").await;
    let c = connector(port, &format!("corp%20user:{PASS}@"));
    let mut s = c.dial(true, "upstream.example", 443).await.expect("tunnel");
    let mut banner = [0u8; 16];
    s.read_exact(&mut banner).await.expect("banner");
    assert_eq!(&banner, b"SSH-2.0-banner\r\n");
    s.write_all(b"x").await.expect("write");
    let head = task.await.expect("proxy");
    assert!(
        head.starts_with("CONNECT upstream.example:443 HTTP/1.1\r\n"),
        "{head}"
    );
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("corp user:{PASS}"),
    );
    assert!(
        head.contains(&format!("Proxy-Authorization: Basic {basic}\r\n")),
        "{head}"
    );
}

#[tokio::test]
async fn a_refusal_names_the_proxy_and_status_but_not_the_password() {
    for (reply, status, hint) in [
        (
            &b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"[..],
            "403 Forbidden",
            "",
        ),
        (
            &b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"[..],
            "407 Proxy Authentication Required",
            "did not accept the user and password",
        ),
    ] {
        let reply: &'static [u8] = Box::leak(reply.to_vec().into_boxed_slice());
        let (port, _task) = fake_proxy(reply).await;
        let e = connector(port, &format!("u:{PASS}@"))
            .dial(true, "upstream.example", 443)
            .await
            .expect_err("refused");
        assert!(matches!(e, DialError::Refused { .. }), "{e}");
        let m = e.to_string();
        assert!(
            m.contains(&format!("the proxy http://127.0.0.1:{port} (from HTTPS_PROXY) refused CONNECT upstream.example:443: {status}")),
            "{m}"
        );
        assert!(m.contains(hint), "{m}");
        assert!(!m.contains(PASS), "{m}");
    }
}

#[tokio::test]
async fn a_proxy_that_is_not_there_is_named() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let e = connector(port, &format!("u:{PASS}@"))
        .dial(true, "upstream.example", 443)
        .await
        .expect_err("no proxy")
        .to_string();
    assert!(
        e.starts_with(&format!("cannot connect to the proxy http://127.0.0.1:{port} (from HTTPS_PROXY) for upstream.example:443")),
        "{e}"
    );
    assert!(!e.contains(PASS), "{e}");
}
