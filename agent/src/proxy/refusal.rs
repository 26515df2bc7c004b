//! A refused request as a value. Every phase of the request path returns
//! `Result<_, Refusal>`; [`Refusal::answer`] is the one place a refusal
//! becomes a status, a JSON body (and `x-lanyard-rule` header) and an
//! audit decision.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::forward::{self, Body, Pending};
use crate::audit::{Decision, Record};

/// The `x-lanyard-rule` header's value for a rule: printable ASCII, any
/// other character as `?` (the JSON body keeps the rule whole).
pub fn rule_header(rule: &str) -> String {
    rule.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Who refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The client's request: unauthenticated, malformed or ambiguous.
    Client,
    /// The configuration: routes, methods, paths, egress, WebSocket, loops.
    Policy,
    /// The upstream could not be reached or did not answer in time.
    Upstream,
    /// No usable credential (the store, or a value a header cannot hold).
    Credential,
}

/// Why a request gets no upstream answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub by: By,
    pub status: StatusCode,
    /// The rule, byte for byte as the client and the audit log see it.
    pub rule: Cow<'static, str>,
    /// The connection ends after the answer (ambiguous input).
    pub close: bool,
}

impl Refusal {
    /// The client's request is refused; the connection stays open.
    pub fn client(status: StatusCode, rule: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            by: By::Client,
            status,
            rule: rule.into(),
            close: false,
        }
    }

    /// The client's input is ambiguous: 400, and the connection closes.
    pub fn malformed(rule: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::client(StatusCode::BAD_REQUEST, rule).closing()
    }

    /// The configuration does not allow it: 403.
    pub fn policy(rule: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            by: By::Policy,
            status: StatusCode::FORBIDDEN,
            rule: rule.into(),
            close: false,
        }
    }

    /// The upstream failed (502, 504).
    pub fn upstream(status: StatusCode, rule: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            by: By::Upstream,
            status,
            rule: rule.into(),
            close: false,
        }
    }

    /// No credential could be attached (502, 503).
    pub fn credential(status: StatusCode, rule: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            by: By::Credential,
            status,
            rule: rule.into(),
            close: false,
        }
    }

    pub fn closing(mut self) -> Refusal {
        self.close = true;
        self
    }

    /// The audit decision: a refusal by the client or the policy is
    /// `denied`; one by the upstream or the credential is `failed`.
    pub fn decision(&self) -> Decision {
        let d = match self.by {
            By::Client | By::Policy => Decision::Denied,
            By::Upstream | By::Credential => Decision::Failed,
        };
        debug_assert_eq!(d, forward::decision_for(self.status), "{self:?}");
        d
    }

    /// Write the refusal into an audit record: decision, rule, status.
    pub fn audit(&self, rec: &mut Record) {
        rec.decision = self.decision();
        rec.reason = Some(self.rule.clone().into_owned());
        rec.status = self.status.as_u16();
    }

    /// The answer: status, JSON body naming the rule, `x-lanyard-rule`,
    /// `Connection: close` when the connection ends, a Basic challenge on
    /// 407. The request's audit record is written when the answer's body
    /// is done.
    pub fn answer(self, mut log: Pending) -> Response<Body> {
        self.audit(&mut log.rec);
        let mut resp = forward::refusal(self.status, &self.rule, self.close);
        if self.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            resp.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"lanyard\""),
            );
        }
        log.finish(self.status, resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_refused_decides_the_audit_decision() {
        let cases = [
            (Refusal::malformed("x"), Decision::Denied),
            (Refusal::policy("x"), Decision::Denied),
            (
                Refusal::upstream(StatusCode::GATEWAY_TIMEOUT, "x"),
                Decision::Failed,
            ),
            (
                Refusal::credential(StatusCode::SERVICE_UNAVAILABLE, "x"),
                Decision::Failed,
            ),
        ];
        for (r, d) in cases {
            assert_eq!(r.decision(), d, "{r:?}");
        }
        assert!(Refusal::malformed("x").close);
        assert!(!Refusal::policy("x").close);
    }

    /// `answer` is the one mapping: the status, the JSON body and the
    /// `x-lanyard-rule` header name the rule byte for byte, `close` adds
    /// `Connection: close`, a 407 carries the challenge, and the one audit
    /// line (written when the answer is dropped) has the decision.
    #[test]
    fn a_refusal_is_answered_and_audited_in_one_place() {
        use crate::audit::Audit;
        use crate::proxy::context::record;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let audit = std::sync::Arc::new(Audit::open(Some(&path)).expect("audit"));
        let cases = [
            (Refusal::malformed("bad host: \"x\""), 400, true, "denied"),
            (
                Refusal::client(
                    StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                    "wrong proxy secret",
                ),
                407,
                false,
                "denied",
            ),
            (
                Refusal::upstream(StatusCode::BAD_GATEWAY, "upstream http://a:1: refused"),
                502,
                false,
                "failed",
            ),
        ];
        for (r, status, close, _) in &cases {
            let rule = r.rule.clone();
            let rec = record(&http::Method::GET, "http", "a", 1, "/x");
            let resp = r.clone().answer(Pending::new(audit.clone(), rec));
            assert_eq!(resp.status().as_u16(), *status);
            let h = resp.headers();
            assert_eq!(h["x-lanyard-rule"], &*rule);
            assert_eq!(h.contains_key(header::CONNECTION), *close, "{h:?}");
            assert_eq!(h.contains_key(header::PROXY_AUTHENTICATE), *status == 407);
        }
        audit.flush();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .expect("audit file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), cases.len(), "{lines:?}");
        for (l, (r, status, _, decision)) in lines.iter().zip(&cases) {
            assert_eq!(l["status"], *status, "{l}");
            assert_eq!(l["decision"], *decision, "{l}");
            assert_eq!(l["reason"], &*r.rule, "{l}");
        }
    }
}
