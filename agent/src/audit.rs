//! Audit: a sink at the end of the flow. One JSON line per request, a first
//! line with the job's (unverified) identity claims, and a summary table at
//! teardown. It imports none of the other stages; the proxy hands it plain
//! records. Values are never secrets: a credential appears by name and
//! fingerprint only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// A route's credential was attached.
    Injected,
    /// An AWS route's request was signed afresh (SigV4) with its keys.
    Signed,
    /// Passed through untouched (a host without routes, `egress = "allow"`).
    Tunnelled,
    /// Refused by policy or by the listener's own checks.
    Denied,
    /// Allowed, but the upstream or the credential could not be reached.
    Failed,
    /// Keys handed to the job by the AWS container-credentials endpoint.
    Served,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Injected => "injected",
            Decision::Signed => "signed",
            Decision::Tunnelled => "tunnelled",
            Decision::Denied => "denied",
            Decision::Failed => "failed",
            Decision::Served => "served",
        }
    }
}

/// One request. The keys are the contract in README.md (*Audit*).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub ts: String,
    pub route: Option<String>,
    pub method: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Without the query string.
    pub path: String,
    /// 0 when no HTTP status was exchanged (a refused TLS handshake).
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: u64,
    pub decision: Decision,
    pub credential: Option<String>,
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

mod line;

/// RFC 3339 UTC with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    line::timestamp(t)
}

/// Escape control characters (C0, DEL, C1) so that a logged field can't
/// forge a line or a terminal sequence. JSON escapes C0 itself; this is
/// for the text summary and for reasons built from hostile input.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Why: one write(2) per request was about 5 % of the proxy's CPU at 64
/// connections (bench/RESULTS.md). While a flusher runs (`flush_loop`),
/// lines are batched: written at most this long after the first line of a
/// batch, as soon as a batch reaches `BATCH_BYTES`, and at teardown.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
pub const BATCH_BYTES: usize = 32 * 1024;

/// The audit file plus the in-memory summary. Writes happen under a std
/// mutex, never held across an await.
#[derive(Debug)]
pub struct Audit {
    file: Option<Mutex<Sink>>,
    path: Option<PathBuf>,
    summary: Mutex<Summary>,
    /// Set while `flush_loop` runs; without it every line is written at once.
    batching: AtomicBool,
    /// Wakes the flusher when a batch starts.
    started: tokio::sync::Notify,
}

#[derive(Debug)]
struct Sink {
    file: File,
    buf: Vec<u8>,
}

impl Sink {
    fn write_out(&mut self, path: &Option<PathBuf>) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            let p = path.as_deref().map(|p| p.display().to_string());
            tracing::error!("audit: cannot write {}: {e}", p.unwrap_or_default());
        }
        self.buf.clear();
    }
}

impl Audit {
    /// Append to `path` (created 0600), or keep only the summary.
    pub fn open(path: Option<&Path>) -> std::io::Result<Audit> {
        let file = match path {
            Some(p) => {
                let mut o = std::fs::OpenOptions::new();
                o.create(true).append(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    o.mode(0o600);
                }
                Some(Mutex::new(Sink {
                    file: o.open(p)?,
                    buf: Vec::with_capacity(BATCH_BYTES + 1024),
                }))
            }
            None => None,
        };
        Ok(Audit {
            file,
            path: path.map(Path::to_owned),
            summary: Mutex::new(Summary::default()),
            batching: AtomicBool::new(false),
            started: tokio::sync::Notify::new(),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The first line: the job's identity, as claimed (not verified).
    pub fn job(&self, claims: &serde_json::Value) {
        let line = serde_json::json!({
            "ts": timestamp(SystemTime::now()),
            "event": "job",
            "job": claims,
        });
        self.write(&line, true);
    }

    pub fn record(&self, r: &Record) {
        if let Ok(mut s) = self.summary.lock() {
            s.add(r);
        }
        self.append(
            |buf| {
                line::write(buf, r);
                Ok(())
            },
            false,
        );
    }

    fn write<T: Serialize>(&self, v: &T, now: bool) {
        self.append(|buf| serde_json::to_writer(buf, v), now);
    }

    fn append(&self, encode: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>, now: bool) {
        let Some(f) = &self.file else { return };
        let Ok(mut sink) = f.lock() else { return };
        let was_empty = sink.buf.is_empty();
        let mark = sink.buf.len();
        if let Err(e) = encode(&mut sink.buf) {
            sink.buf.truncate(mark);
            tracing::error!("audit: cannot encode a record: {e}");
            return;
        }
        sink.buf.push(b'\n');
        if now || !self.batching.load(Ordering::Acquire) || sink.buf.len() >= BATCH_BYTES {
            sink.write_out(&self.path);
        } else if was_empty {
            self.started.notify_one();
        }
    }

    /// Write out whatever is batched.
    pub fn flush(&self) {
        if let Some(f) = &self.file {
            if let Ok(mut sink) = f.lock() {
                sink.write_out(&self.path);
            }
        }
    }

    /// Batch lines until `cancel`, then write out the rest and go back to
    /// writing each line at once.
    pub async fn flush_loop(
        self: std::sync::Arc<Self>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        self.batching.store(true, Ordering::Release);
        loop {
            tokio::select! {
                _ = self.started.notified() => {}
                _ = cancel.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_INTERVAL) => {}
                _ = cancel.cancelled() => break,
            }
            self.flush();
        }
        self.batching.store(false, Ordering::Release);
        self.flush();
    }

    pub fn summary(&self) -> Summary {
        self.summary.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Per-route counts for the teardown table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    rows: BTreeMap<String, Row>,
    /// Routes configured but never used, as `name (url)` or `url`.
    unused: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub calls: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub denied: u64,
    pub failed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Row {
    fn count(&mut self, r: &Record) {
        self.calls += 1;
        if r.status != 0 {
            *self.statuses.entry(r.status).or_default() += 1;
        }
        match r.decision {
            Decision::Denied => self.denied += 1,
            Decision::Failed => self.failed += 1,
            _ => {}
        }
        self.bytes_in += r.bytes_in;
        self.bytes_out += r.bytes_out;
    }
}

/// What a local endpoint served, from its path (the summary's row name).
fn served_what(path: &str) -> &'static str {
    if path == "/" || path.starts_with(crate::proxy::gce_metadata::ROOT) {
        "GCE metadata"
    } else if path.starts_with(crate::proxy::azure_mi::PATH) {
        "Azure managed-identity tokens"
    } else {
        "AWS keys"
    }
}

impl Summary {
    pub fn add(&mut self, r: &Record) {
        if let Some(row) = r.route.as_ref().and_then(|k| self.rows.get_mut(k)) {
            row.count(r);
            return;
        }
        let key = match (&r.route, r.decision) {
            (Some(route), _) => route.clone(),
            (None, Decision::Tunnelled) => format!("(tunnelled) {}:{}", r.host, r.port),
            (None, Decision::Denied) => format!("(denied) {}:{}", r.host, r.port),
            (None, Decision::Served) => format!(
                "(served) {} of {}",
                served_what(&r.path),
                r.credential.as_deref().unwrap_or("-")
            ),
            (None, _) => format!("(no route) {}:{}", r.host, r.port),
        };
        self.rows.entry(key).or_default().count(r);
    }

    /// Rebuild from an audit file (for `lanyard stop`, which is another
    /// process). Lines that are not request records are skipped.
    pub fn from_file(path: &Path) -> std::io::Result<Summary> {
        let mut s = Summary::default();
        for line in BufReader::new(File::open(path)?).lines() {
            if let Ok(r) = serde_json::from_str::<Record>(&line?) {
                s.add(&r);
            }
        }
        Ok(s)
    }

    /// Note the configured routes (`(audit key, shown as)`) that no request
    /// used: a client that ignores the proxy variables is silent otherwise.
    pub fn with_configured(mut self, routes: impl IntoIterator<Item = (String, String)>) -> Self {
        self.unused = routes
            .into_iter()
            .filter(|(key, _)| !self.rows.contains_key(key))
            .map(|(_, shown)| shown)
            .collect();
        self
    }

    /// Routes configured but never used.
    pub fn unused(&self) -> &[String] {
        &self.unused
    }

    fn unused_text(&self) -> String {
        if self.unused.is_empty() {
            return String::new();
        }
        format!(
            "lanyard: routes configured but never used: {}. A client that ignores HTTPS_PROXY goes around lanyard without a word (Node's built-in fetch without NODE_USE_ENV_PROXY=1, Go with its own http.Transport, Java without -Djava.net.useSystemProxies=true or -Dhttps.proxyHost); if so, it got no credential. Otherwise the route is not needed. (README: \"Clients that ignore the proxy\")\n",
            self.unused.join(", ")
        )
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn rows(&self) -> impl Iterator<Item = (&str, &Row)> {
        self.rows.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn cells(&self) -> Vec<[String; 6]> {
        self.rows
            .iter()
            .map(|(k, r)| {
                let statuses: Vec<String> =
                    r.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
                [
                    escape_controls(k),
                    r.calls.to_string(),
                    statuses.join(" "),
                    r.denied.to_string(),
                    r.failed.to_string(),
                    format!("{}/{}", r.bytes_in, r.bytes_out),
                ]
            })
            .collect()
    }

    const HEAD: [&'static str; 6] = [
        "route",
        "calls",
        "statuses",
        "denied",
        "failed",
        "bytes in/out",
    ];

    /// A plain-text table for the terminal.
    pub fn table(&self) -> String {
        let mut out = self.requests_table();
        out.push_str(&self.unused_text());
        out
    }

    fn requests_table(&self) -> String {
        if self.rows.is_empty() {
            return "lanyard: no requests went through the proxy\n".into();
        }
        let cells = self.cells();
        let mut width = Self::HEAD.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: &[String]| {
            let mut s = String::new();
            for (i, (c, w)) in row.iter().zip(width).enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count()));
            }
            s.trim_end().to_owned() + "\n"
        };
        let mut out = line(&Self::HEAD.map(String::from));
        for row in &cells {
            out.push_str(&line(row));
        }
        out
    }

    /// GitHub step-summary markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::from("### lanyard: calls through the proxy\n\n");
        if self.rows.is_empty() {
            out.push_str("No requests went through the proxy.\n");
        }
        let unused = self.unused_text();
        if !unused.is_empty() {
            let text = unused.trim_start_matches("lanyard: ").replace('|', "\\|");
            out.push_str(&format!("\n**{}**\n\n", text.trim_end()));
        }
        if self.rows.is_empty() {
            return out;
        }
        out.push_str(&format!("| {} |\n", Self::HEAD.join(" | ")));
        out.push_str(&format!("|{}\n", " --- |".repeat(Self::HEAD.len())));
        for row in self.cells() {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    }
}

#[cfg(test)]
mod tests;
