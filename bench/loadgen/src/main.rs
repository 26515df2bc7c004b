//! Closed-loop HTTP/1.1 load generator for bench/run.sh.
//!
//! N keep-alive connections, each sending one GET after the other for D seconds.
//! A connection is either plain TCP, TLS, or (through a proxy) absolute-form requests
//! over cleartext, or CONNECT followed by TLS to the target (TLS interception). The
//! same client is used for every contender, so the comparison is fair.
//!
//! Prints one JSON object: requests, errors, req/s, latency percentiles (µs), the
//! latency quantile function (for a CDF plot) and a raw latency sample.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const USAGE: &str = "usage: lanyard-loadgen --url URL [-c CONNS] [-d SECS] [--warmup SECS] [--threads N]
  [-H 'Name: value']... [--cacert PEM]... [--proxy http://[user:pass@]host:port]
  [--proxy-mode absolute|connect] [--expect STATUS] [--timeout SECS]
  [--cdf-points N] [--sample N] [--check]
--check sends one request and prints its status and body (to verify a contender).";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// origin-form to the target, plain or TLS
    Direct,
    /// absolute-form request over cleartext to the proxy (target may be https://)
    Absolute,
    /// CONNECT to the proxy, then TLS to the target through the tunnel
    Connect,
}

struct Opts {
    url: Uri,
    conns: usize,
    duration: Duration,
    warmup: Duration,
    threads: usize,
    headers: Vec<(String, String)>,
    cacerts: Vec<String>,
    proxy: Option<Uri>,
    proxy_auth: Option<String>,
    mode: Mode,
    expect: u16,
    timeout: Duration,
    cdf_points: usize,
    sample: usize,
    check: bool,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let (num, mul) = if let Some(v) = s.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60.0)
    } else {
        (s, 1.0)
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    if !(n > 0.0 && n < 86400.0) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(n * mul))
}

fn parse_args() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    let mut o = Opts {
        url: Uri::from_static("http://127.0.0.1/"),
        conns: 1,
        duration: Duration::from_secs(5),
        warmup: Duration::ZERO,
        threads: 1,
        headers: vec![],
        cacerts: vec![],
        proxy: None,
        proxy_auth: None,
        mode: Mode::Direct,
        expect: 200,
        timeout: Duration::from_secs(10),
        cdf_points: 1000,
        sample: 2000,
        check: false,
    };
    let mut mode = None;
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = Some(val()?),
            "-c" | "--conns" => o.conns = val()?.parse().map_err(|_| "bad -c")?,
            "-d" | "--duration" => o.duration = parse_secs(&val()?)?,
            "--warmup" => {
                let v = val()?;
                o.warmup = if v == "0" { Duration::ZERO } else { parse_secs(&v)? };
            }
            "--threads" => o.threads = val()?.parse().map_err(|_| "bad --threads")?,
            "-H" | "--header" => {
                let h = val()?;
                let (n, v) = h.split_once(':').ok_or("header must be 'Name: value'")?;
                o.headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
            "--cacert" => o.cacerts.push(val()?),
            "--proxy" => {
                let p = val()?;
                let u: Uri = p.parse().map_err(|e| format!("bad --proxy: {e}"))?;
                if let Some(auth) = u.authority() {
                    if let Some((userinfo, _)) = auth.as_str().rsplit_once('@') {
                        let decoded = percent_decode(userinfo);
                        o.proxy_auth = Some(format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(decoded)
                        ));
                    }
                }
                o.proxy = Some(u);
            }
            "--proxy-mode" => {
                mode = Some(match val()?.as_str() {
                    "absolute" => Mode::Absolute,
                    "connect" => Mode::Connect,
                    m => return Err(format!("bad --proxy-mode {m}")),
                })
            }
            "--expect" => o.expect = val()?.parse().map_err(|_| "bad --expect")?,
            "--timeout" => o.timeout = parse_secs(&val()?)?,
            "--cdf-points" => o.cdf_points = val()?.parse().map_err(|_| "bad --cdf-points")?,
            "--sample" => o.sample = val()?.parse().map_err(|_| "bad --sample")?,
            "--check" => o.check = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let url: Uri = url
        .ok_or_else(|| USAGE.to_owned())?
        .parse()
        .map_err(|e| format!("bad --url: {e}"))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
        return Err("--url must be an absolute http:// or https:// URL".into());
    }
    o.url = url;
    o.mode = match (&o.proxy, mode) {
        (None, None) => Mode::Direct,
        (None, Some(_)) => return Err("--proxy-mode needs --proxy".into()),
        (Some(_), Some(m)) => m,
        (Some(_), None) if o.url.scheme_str() == Some("https") => Mode::Connect,
        (Some(_), None) => Mode::Absolute,
    };
    if o.mode == Mode::Connect && o.url.scheme_str() != Some("https") {
        return Err("--proxy-mode connect needs an https:// --url".into());
    }
    if o.conns == 0 || o.threads == 0 {
        return Err("-c and --threads must be at least 1".into());
    }
    Ok(o)
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Target {
    host: String,
    port: u16,
    authority: String,
    tls: bool,
    /// request-target written on the wire
    uri: Uri,
}

struct Shared {
    o: Opts,
    t: Target,
    tls: Option<tokio_rustls::TlsConnector>,
}

fn target(o: &Opts) -> Result<Target, String> {
    let auth = o.url.authority().ok_or("no authority")?;
    let tls = o.url.scheme_str() == Some("https");
    let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let pq = o.url.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let uri: Uri = if o.mode == Mode::Absolute {
        o.url.clone()
    } else {
        pq.parse().map_err(|e| format!("{e}"))?
    };
    Ok(Target {
        authority: auth.as_str().rsplit('@').next().unwrap_or("").to_owned(),
        host,
        port,
        tls,
        uri,
    })
}

fn tls_connector(o: &Opts) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for f in &o.cacerts {
        let pem = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{f}: {e}"))?;
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("{f}: no usable certificate"));
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

async fn open(s: &Shared) -> Result<Box<dyn Io>, String> {
    let (host, port) = match (&s.o.proxy, s.o.mode) {
        (Some(p), Mode::Absolute | Mode::Connect) => {
            let a = p.authority().ok_or("proxy has no authority")?;
            (a.host().to_owned(), a.port_u16().unwrap_or(80))
        }
        _ => (s.t.host.clone(), s.t.port),
    };
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut io: Box<dyn Io> = Box::new(tcp);
    match s.o.mode {
        Mode::Absolute => return Ok(io),
        Mode::Connect => {
            let mut req = format!(
                "CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n",
                a = s.t.authority
            );
            if let Some(pa) = &s.o.proxy_auth {
                req.push_str(&format!("Proxy-Authorization: {pa}\r\n"));
            }
            req.push_str("\r\n");
            io.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut head = Vec::with_capacity(256);
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if head.len() > 16384 {
                    return Err("CONNECT response head too long".into());
                }
                let n = io.read(&mut b).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("proxy closed the connection during CONNECT".into());
                }
                head.push(b[0]);
            }
            let line = String::from_utf8_lossy(&head);
            let status = line.split_whitespace().nth(1).unwrap_or("");
            if !status.starts_with('2') {
                return Err(format!(
                    "CONNECT refused: {}",
                    line.lines().next().unwrap_or("")
                ));
            }
        }
        Mode::Direct => {}
    }
    if s.t.tls {
        let tls = s.tls.as_ref().ok_or("no TLS config")?;
        let name = ServerName::try_from(s.t.host.clone()).map_err(|e| e.to_string())?;
        let stream = tls
            .connect(name, io)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        io = Box::new(stream);
    }
    Ok(io)
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn handshake(s: &Shared) -> Result<Sender, String> {
    let io = open(s).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(s: &Shared) -> Request<Empty<Bytes>> {
    let mut b = Request::get(s.t.uri.clone()).header("host", s.t.authority.as_str());
    for (n, v) in &s.o.headers {
        b = b.header(n.as_str(), v.as_str());
    }
    if s.o.mode == Mode::Absolute {
        if let Some(pa) = &s.o.proxy_auth {
            b = b.header("proxy-authorization", pa.as_str());
        }
    }
    b.body(Empty::new()).expect("request")
}

/// One request; Ok(status, body) or Err(message).
async fn one(s: &Shared, tx: &mut Sender) -> Result<(u16, Bytes), String> {
    tx.ready().await.map_err(|e| format!("connection: {e}"))?;
    let resp = tx
        .send_request(request(s))
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

#[derive(Default)]
struct ConnStats {
    lat_us: Vec<u32>,
    /// every completed request, warm-up and overrun included (for CPU per request)
    all: u64,
    errors: u64,
    unexpected: u64,
    bytes: u64,
    first_error: Option<String>,
    first_unexpected: Option<String>,
}

async fn worker(
    s: Arc<Shared>,
    ready: Arc<tokio::sync::Barrier>,
    go: Arc<tokio::sync::Barrier>,
    stop: Arc<AtomicBool>,
    deadline: Arc<std::sync::OnceLock<(Instant, Instant)>>,
) -> ConnStats {
    let mut st = ConnStats::default();
    let mut tx = match handshake(&s).await {
        Ok(t) => Some(t),
        Err(e) => {
            st.errors += 1;
            st.first_error = Some(e);
            None
        }
    };
    ready.wait().await;
    go.wait().await;
    let (from, end) = *deadline.get().expect("deadline set before the barrier opens");
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let sender = match tx.as_mut() {
            Some(t) => t,
            None => match handshake(&s).await {
                Ok(t) => tx.insert(t),
                Err(e) => {
                    st.errors += 1;
                    st.first_error.get_or_insert(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let r = tokio::time::timeout(s.o.timeout, one(&s, sender)).await;
        let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match r {
            Ok(Ok((status, body))) => {
                st.all += 1;
                if Instant::now() > end {
                    break; // finished after the window: not counted
                }
                if t0 < from {
                    continue; // warm-up: sent, not counted
                }
                st.lat_us.push(us);
                st.bytes += body.len() as u64;
                if status != s.o.expect {
                    st.unexpected += 1;
                    st.first_unexpected.get_or_insert_with(|| {
                        format!(
                            "status {status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        )
                    });
                }
            }
            Ok(Err(e)) => {
                st.errors += 1;
                st.first_error.get_or_insert(e);
                tx = None;
            }
            Err(_) => {
                st.errors += 1;
                st.first_error
                    .get_or_insert_with(|| format!("timeout after {:?}", s.o.timeout));
                tx = None;
            }
        }
    }
    st
}

fn pct(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads)
        .enable_all()
        .build()
        .expect("runtime");
    std::process::exit(rt.block_on(run(o)));
}

async fn run(o: Opts) -> i32 {
    let t = match target(&o) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let tls = if t.tls {
        match tls_connector(&o) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("{e}");
                return 2;
            }
        }
    } else {
        None
    };
    let s = Arc::new(Shared { o, t, tls });

    if s.o.check {
        let r = async {
            let mut tx = handshake(&s).await?;
            tokio::time::timeout(s.o.timeout, one(&s, &mut tx))
                .await
                .map_err(|_| "timeout".to_owned())?
        }
        .await;
        return match r {
            Ok((status, body)) => {
                println!("{status} {}", String::from_utf8_lossy(&body));
                i32::from(status != s.o.expect)
            }
            Err(e) => {
                println!("error: {e}");
                1
            }
        };
    }

    let n = s.o.conns;
    let ready = Arc::new(tokio::sync::Barrier::new(n + 1));
    let go = Arc::new(tokio::sync::Barrier::new(n + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Arc::new(std::sync::OnceLock::new());
    let handles: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(worker(
                s.clone(),
                ready.clone(),
                go.clone(),
                stop.clone(),
                deadline.clone(),
            ))
        })
        .collect();
    // Every connection is opened (TLS handshakes done) before the clock starts.
    ready.wait().await;
    let started = Instant::now() + s.o.warmup;
    let end = started + s.o.duration;
    let _ = deadline.set((started, end));
    go.wait().await;
    // Hard bound: workers stop at the deadline; in-flight requests get the per-request
    // timeout plus a second, then whatever is left is abandoned.
    let grace = s.o.timeout + Duration::from_secs(1);
    let mut stats = Vec::with_capacity(n);
    let all = async {
        for h in handles {
            if let Ok(st) = h.await {
                stats.push(st);
            }
        }
    };
    let _ = tokio::time::timeout(s.o.warmup + s.o.duration + grace, all).await;
    stop.store(true, Ordering::Relaxed);
    let measured = (Instant::now().min(end) - started).as_secs_f64();

    let mut lat: Vec<u32> = Vec::new();
    let mut errors = 0;
    let mut unexpected = 0;
    let mut bytes = 0;
    let all: u64 = stats.iter().map(|s| s.all).sum();
    let mut first_error = None;
    let mut first_unexpected = None;
    let mut sample: Vec<u32> = Vec::new();
    let total: usize = stats.iter().map(|s| s.lat_us.len()).sum();
    let stride = (total / s.o.sample.max(1)).max(1);
    let mut k = 0usize;
    for st in &stats {
        for &l in &st.lat_us {
            if k.is_multiple_of(stride) && sample.len() < s.o.sample {
                sample.push(l);
            }
            k += 1;
        }
        lat.extend_from_slice(&st.lat_us);
        errors += st.errors;
        unexpected += st.unexpected;
        bytes += st.bytes;
        if first_error.is_none() {
            first_error.clone_from(&st.first_error);
        }
        if first_unexpected.is_none() {
            first_unexpected.clone_from(&st.first_unexpected);
        }
    }
    lat.sort_unstable();
    let ok = lat.len() as u64 - unexpected;
    let cdf: Vec<u32> = if lat.is_empty() {
        vec![]
    } else {
        (0..=s.o.cdf_points)
            .map(|i| pct(&lat, i as f64 / s.o.cdf_points as f64))
            .collect()
    };
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&v| v as f64).sum::<f64>() / lat.len() as f64
    };
    let out = serde_json::json!({
        "url": s.o.url.to_string(),
        "mode": format!("{:?}", s.o.mode).to_lowercase(),
        "conns": n,
        "threads": s.o.threads,
        "duration_s": measured,
        "warmup_s": s.o.warmup.as_secs_f64(),
        "requests": lat.len(),
        "all_requests": all,
        "ok": ok,
        "unexpected_status": unexpected,
        "errors": errors,
        "rps": ok as f64 / measured,
        "bytes": bytes,
        "mean_us": mean,
        "p50_us": pct(&lat, 0.50),
        "p90_us": pct(&lat, 0.90),
        "p99_us": pct(&lat, 0.99),
        "p999_us": pct(&lat, 0.999),
        "max_us": lat.last().copied().unwrap_or(0),
        "first_error": first_error,
        "first_unexpected": first_unexpected,
        "cdf_us": cdf,
        "sample_us": sample,
    });
    println!("{out}");
    i32::from(ok == 0)
}
