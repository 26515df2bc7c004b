//! A refused request as a value. Every phase of the request path returns
//! `Result<_, Refusal>`; [`Refusal::answer`] is the one place a refusal
//! becomes a status, a JSON body (and `x-lanyard-rule` header) and an
//! audit decision.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::forward::{self, Body, Pending};
use crate::audit::{Decision, Record};

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
}
