//! The JSON line of one request record, written straight into the audit
//! buffer. The bytes are exactly those serde_json writes for a [`Record`]
//! (same keys, same order, same escaping; `same_bytes_as_serde_json`
//! holds it to that), so the file's contract and `Summary::from_file` do
//! not change. What it saves per request: serde's field-by-field
//! machinery and a byte-by-byte escape of strings that need none (most
//! of them: route, method, scheme, host, credential, fingerprint), and
//! the calendar arithmetic of the timestamp within one second.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Record;

/// Append `r` as one JSON object (no newline).
pub fn write(out: &mut Vec<u8>, r: &Record) {
    out.extend_from_slice(b"{\"ts\":");
    string(out, &r.ts);
    out.extend_from_slice(b",\"route\":");
    opt_string(out, r.route.as_deref());
    out.extend_from_slice(b",\"method\":");
    string(out, &r.method);
    out.extend_from_slice(b",\"scheme\":");
    string(out, &r.scheme);
    out.extend_from_slice(b",\"host\":");
    string(out, &r.host);
    out.extend_from_slice(b",\"port\":");
    number(out, r.port.into());
    out.extend_from_slice(b",\"path\":");
    string(out, &r.path);
    out.extend_from_slice(b",\"status\":");
    number(out, r.status.into());
    out.extend_from_slice(b",\"bytes_in\":");
    number(out, r.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    number(out, r.bytes_out);
    out.extend_from_slice(b",\"duration_ms\":");
    number(out, r.duration_ms);
    out.extend_from_slice(b",\"decision\":\"");
    out.extend_from_slice(r.decision.as_str().as_bytes());
    out.extend_from_slice(b"\",\"credential\":");
    opt_string(out, r.credential.as_deref());
    out.extend_from_slice(b",\"fingerprint\":");
    opt_string(out, r.fingerprint.as_deref());
    if let Some(reason) = &r.reason {
        out.extend_from_slice(b",\"reason\":");
        string(out, reason);
    }
    out.push(b'}');
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string. serde_json escapes only `"`, `\` and C0 controls; a
/// string without them is copied as is, any other goes through serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Unreachable: writing to a Vec cannot fail; keep the line valid.
        out.extend_from_slice(b"null");
    }
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

thread_local! {
    /// The last second formatted on this thread: its Unix time and
    /// `YYYY-MM-DDTHH:MM:SS.` (humantime's spelling up to the millis).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 UTC with milliseconds, as `humantime::format_rfc3339_millis`
/// spells it; the date and time of day are formatted once per second.
pub fn timestamp(t: SystemTime) -> String {
    let Ok(since) = t.duration_since(UNIX_EPOCH) else {
        return humantime::format_rfc3339_millis(t).to_string();
    };
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let whole = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let full = humantime::format_rfc3339_millis(whole).to_string();
            // "…:SS.000Z": keep up to and including the dot
            let Some(prefix) = full.strip_suffix("000Z") else {
                return full;
            };
            *c = (secs, prefix.to_owned());
        }
        let mut s = String::with_capacity(c.1.len() + 4);
        s.push_str(&c.1);
        s.push(char::from(b'0' + (millis / 100) as u8));
        s.push(char::from(b'0' + (millis / 10 % 10) as u8));
        s.push(char::from(b'0' + (millis % 10) as u8));
        s.push('Z');
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Decision;
    use std::time::Duration;

    fn rec() -> Record {
        Record {
            ts: "2026-01-02T03:04:05.678Z".into(),
            route: Some("api".into()),
            method: "GET".into(),
            scheme: "https".into(),
            host: "api.example.com".into(),
            port: 443,
            path: "/v1/x".into(),
            status: 200,
            bytes_in: 0,
            bytes_out: u64::MAX,
            duration_ms: 1234567,
            decision: Decision::Injected,
            credential: Some("t".into()),
            fingerprint: Some("sha256:3e9728644afb".into()),
            reason: None,
        }
    }

    #[test]
    fn same_bytes_as_serde_json() {
        let hostile = [
            "",
            "plain",
            "quote\"back\\slash",
            "line\nbreak\r\ttab",
            "\u{0}\u{1f}\u{7f}\u{80}\u{9b}",
            "ünïcödé ✓ \u{2028}\u{2029}",
            "/r/[secret]/x?y",
            "\u{1b}[31mred",
        ];
        let mut cases = vec![rec()];
        for (i, s) in hostile.iter().enumerate() {
            let mut r = rec();
            let s = s.to_string();
            match i % 4 {
                0 => r.route = Some(s.clone()),
                1 => r.path = s.clone(),
                2 => r.host = s.clone(),
                _ => r.method = s.clone(),
            }
            r.reason = Some(s.clone());
            r.fingerprint = None;
            r.credential = Some(s);
            r.decision = [Decision::Denied, Decision::Failed, Decision::Signed][i % 3];
            r.status = i as u16;
            cases.push(r);
        }
        let mut none = rec();
        none.route = None;
        none.credential = None;
        cases.push(none);
        for r in &cases {
            let mut ours = Vec::new();
            write(&mut ours, r);
            let theirs = serde_json::to_vec(r).expect("serde");
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
    }

    #[test]
    fn timestamps_match_humantime() {
        let base = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        for ms in [
            0u64, 1, 9, 10, 99, 100, 999, 1000, 1001, 59_999, 60_000, 86_399_999,
        ] {
            let t = base + Duration::from_millis(ms);
            assert_eq!(
                timestamp(t),
                humantime::format_rfc3339_millis(t).to_string(),
                "{ms}"
            );
        }
        let now = SystemTime::now();
        assert_eq!(
            timestamp(now),
            humantime::format_rfc3339_millis(now).to_string()
        );
    }
}
