//! Tyk gateway: who a JWT becomes in Tyk (the `kid` pitfall), and what
//! Tyk's refusals mean. A route names the API definition it reaches with
//! `tyk_api`; doctor reads that file (Classic or OAS) and the credential's
//! token header, and never prints the token.

use super::*;
use serde_json::Value;

/// What doctor needs from a Tyk API definition.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TykApi {
    pub name: String,
    pub jwt: bool,
    pub oas: bool,
    /// A central key source: Classic `jwt_source`, OAS `source` or
    /// `jwksURIs`.
    pub central: bool,
    pub skip_kid: bool,
    /// Classic: `jwt_identity_base_field`; OAS: `subjectClaims`, else
    /// `identityBaseField`.
    pub identity_claims: Vec<String>,
    /// OAS `allowedSubjects` is set.
    pub allowed_subjects: bool,
}

/// The Tyk release whose gateway code the identity rule follows.
pub const TYK_VERSION: &str = "v5.14.0";

impl TykApi {
    /// A Classic definition (`enable_jwt`, `jwt_source`, `jwt_skip_kid`,
    /// `jwt_identity_base_field`) or an OAS one
    /// (`x-tyk-api-gateway.server.authentication.securitySchemes.*`).
    pub fn parse(text: &str) -> Result<TykApi, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let nonempty = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(ext) = v.get("x-tyk-api-gateway") {
            let name = ext["info"]["name"].as_str().unwrap_or("?").to_owned();
            let schemes = ext["server"]["authentication"]["securitySchemes"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            // A JWT scheme in the OAS document's components, enabled in Tyk's.
            let jwt_names: Vec<&String> = v["components"]["securitySchemes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, s)| s["bearerFormat"] == "JWT")
                        .map(|(k, _)| k)
                        .collect()
                })
                .unwrap_or_default();
            let jwt = schemes
                .iter()
                .find(|(k, s)| jwt_names.contains(k) && s["enabled"] == true);
            let Some((_, s)) = jwt else {
                return Ok(TykApi {
                    name,
                    jwt: false,
                    oas: true,
                    central: false,
                    skip_kid: false,
                    identity_claims: Vec::new(),
                    allowed_subjects: false,
                });
            };
            let mut identity_claims = strings(&s["subjectClaims"]);
            if identity_claims.is_empty() && nonempty(&s["identityBaseField"]) {
                identity_claims.push(s["identityBaseField"].as_str().unwrap_or("").to_owned());
            }
            return Ok(TykApi {
                name,
                jwt: true,
                oas: true,
                central: nonempty(&s["source"])
                    || s["jwksURIs"].as_array().is_some_and(|a| !a.is_empty()),
                skip_kid: s["skipKid"] == true,
                identity_claims,
                allowed_subjects: !strings(&s["allowedSubjects"]).is_empty(),
            });
        }
        if !v.is_object() || v.get("api_id").is_none() && v.get("proxy").is_none() {
            return Err("neither a Tyk Classic API definition (api_id, proxy) nor a Tyk OAS one (x-tyk-api-gateway)".into());
        }
        Ok(TykApi {
            name: v["name"].as_str().unwrap_or("?").to_owned(),
            jwt: v["enable_jwt"] == true,
            oas: false,
            central: nonempty(&v["jwt_source"]),
            skip_kid: v["jwt_skip_kid"] == true,
            identity_claims: v["jwt_identity_base_field"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(|c| vec![c.to_owned()])
                .unwrap_or_default(),
            allowed_subjects: false,
        })
    }

    /// The definition a route's `tyk_api` names, as doctor reads it.
    pub fn load(file: &std::path::Path) -> Result<TykApi, String> {
        std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))
            .and_then(|t| TykApi::parse(&t).map_err(|e| format!("{}: {e}", file.display())))
    }

    /// The identity claim Tyk takes from `claims`, as the gateway's
    /// `getUserIdFromClaim` does in [`TYK_VERSION`]: Classic tries
    /// `jwt_identity_base_field` (a dotted name also as a nested path),
    /// then `sub`; OAS tries each of `subjectClaims` in turn, then `sub`.
    /// A named claim present but empty is refused, not skipped. The error
    /// is Tyk's own message.
    fn claim_identity(&self, claims: &Value) -> Result<(String, String), String> {
        let lookup = |name: &str| -> Option<&Value> {
            claims.get(name).or_else(|| {
                name.contains('.')
                    .then(|| name.split('.').try_fold(claims, |c, k| c.get(k)))
                    .flatten()
            })
        };
        let mut sub_checked = false;
        for c in &self.identity_claims {
            sub_checked |= c == "sub";
            match lookup(c) {
                Some(Value::String(v)) if !v.is_empty() => return Ok((c.clone(), v.clone())),
                Some(Value::String(_)) => {
                    return Err(format!(
                        "found an empty user ID in predefined base claim, claim: {c}"
                    ))
                }
                _ => {}
            }
        }
        if sub_checked && self.oas {
            return Err("no suitable claims for user ID were found".into());
        }
        match claims.get("sub") {
            Some(Value::String(v)) if !v.is_empty() => Ok(("sub".into(), v.clone())),
            Some(Value::String(_)) if !self.oas => {
                Err("found an empty user ID in sub claim".into())
            }
            Some(Value::String(_)) => {
                Err("found an empty user ID in predefined base claim, claim: sub".into())
            }
            _ => Err("no suitable claims for user ID were found".into()),
        }
    }

    /// Who Tyk makes of this token (header `kid`, payload claims), following
    /// the gateway's `ProcessRequest` in [`TYK_VERSION`]: with a central key
    /// source (`processCentralisedJWT`) the session is keyed by the identity
    /// claim and the `kid` only picks the JWKS key; without one
    /// (`processOneToOneTokenMap`, via `getIdentityFromToken`) the `kid`,
    /// unless skipped, names the Tyk key whose session every such token
    /// shares. A `warning:` line when jobs would share one session.
    pub fn identity_lines(&self, token: &str) -> Vec<String> {
        if !self.jwt {
            return vec!["the API does not use JWT auth: no session identity to check".into()];
        }
        let Some((header, claims)) = decode(token) else {
            return vec!["warning: the credential is not a JWT, and this API uses Tyk's JWT auth: Tyk will refuse it (\"Key not authorized\")".into()];
        };
        let kid = header["kid"].as_str();
        let kid_used = kid.is_some() && !self.skip_kid;
        let (skip, base) = if self.oas {
            ("skipKid", "subjectClaims")
        } else {
            ("jwt_skip_kid", "jwt_identity_base_field")
        };
        let mut out = Vec::new();
        if !self.central && kid_used {
            out.push(format!(
                "warning: the API has no central key source (jwt_source{}), so Tyk {TYK_VERSION} takes the token's kid {:?} as the session identity: it looks up the Tyk key named after it and checks the signature with that key's secret, and every job whose token is signed with this key shares that one session, rate limit and quota. Set jwt_source to the platform's JWKS URL: Tyk then keys each session by {base}, then sub",
                if self.oas { " / source / jwksURIs" } else { "" },
                sanitize(kid.unwrap_or_default()),
            ));
            return out;
        }
        let (claim, value) = match self.claim_identity(&claims) {
            Ok(c) => c,
            Err(e) => {
                return vec![format!(
                    "warning: Tyk refuses this token: {e:?} (the identity is {base}, then sub)"
                )]
            }
        };
        let why = if self.central {
            "the API has a central key source, so the kid only picks the JWKS key".to_owned()
        } else if kid.is_some() {
            format!("the kid is skipped: {skip}; with no jwt_source Tyk needs a Tyk key named after this value, holding the platform's public key")
        } else {
            "the token has no kid; with no jwt_source Tyk needs a Tyk key named after this value, holding the platform's public key".to_owned()
        };
        out.push(format!(
            "session identity: claim {claim:?} = {:?} ({why})",
            sanitize(&value)
        ));
        if self.oas && self.allowed_subjects && kid_used {
            out.push(format!("warning: Tyk {TYK_VERSION} compares allowedSubjects with the token's kid {:?}, not with a claim, unless skipKid is set: set skipKid", sanitize(kid.unwrap_or_default())));
        }
        out
    }
}

/// A JWT's header and claims, decoded without verification.
fn decode(token: &str) -> Option<(Value, Value)> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (h, c, _s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let b = |s: &str| -> Option<Value> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice::<Value>(&raw)
            .ok()
            .filter(Value::is_object)
    };
    Some((b(h)?, b(c)?))
}

/// Likely causes for a Tyk refusal: its status and its `{"error": …}` body.
pub fn explain(status: u16, body: &str) -> Vec<String> {
    let msg = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let lower = msg.to_lowercase();
    let mut out = Vec::new();
    if msg.is_empty() {
        return out;
    }
    if lower == "authorization field missing" {
        out.push("Tyk found no token where the API reads it (its auth header, `Authorization` by default): check the route's `header` and `format`, and that the request goes through lanyard".into());
    } else if lower.starts_with("key not authorized: no matching policy")
        || lower.contains("no scope or policy in token")
    {
        out.push("the token verified, but Tyk found no policy for it: the claim named by jwt_policy_field_name (e.g. \"pol\") names no policy, or jwt_default_policies is empty or names a missing policy".into());
    } else if lower == "key not authorized: token has expired" || lower.contains("expired") {
        out.push("Tyk says the token has expired: a passthrough CI token lives as long as the platform made it; use an audience the platform re-mints, or an exchange".into());
    } else if let Some(why) = msg.strip_prefix("Key not authorized: ") {
        out.push(format!("Tyk verified the signature but refused a claim ({why}): compare the claims listed under identity with the API's claim checks (issuer, audience, nbf, iat)"));
    } else if lower == "key not authorized" {
        out.push(if status == 403 {
            "Tyk could not verify the token: the API's jwt_source (JWKS) has no key for the token's kid, its jwt_signing_method is not the token's alg, or, without a jwt_source, no Tyk key is named after the token's kid / identity".into()
        } else {
            "Tyk refused the token".into()
        });
    } else if lower == "access to this api has been disallowed" {
        out.push("the token is valid, but the policy applied to its session does not grant this API: add the API's api_id to the policy's access_rights".into());
    } else if lower == "access to this resource has been disallowed" {
        out.push("the policy grants this API but not this path or method: its access_rights allowed_urls list what the job may call".into());
    } else if lower.contains("quota exceeded") || lower.contains("rate limit exceeded") {
        out.push("the session ran out of quota or rate: when the session identity is the token's kid, every job signed with that key shares it (see the warning above)".into());
    } else if lower.contains("attempted administrative access") {
        out.push("the management API (/tyk/...) wants the gateway's `secret` in `x-tyk-authorization`: the route's header must be x-tyk-authorization with format \"{token}\", and the credential the gateway's secret".into());
    } else if lower.contains("no suitable claims for user id") || lower.contains("empty user id") {
        out.push("Tyk found no identity claim in the token: the claim named by jwt_identity_base_field, or sub, must be present and non-empty".into());
    }
    out
}

/// The `tyk` section: each route's API definition and who the route's
/// token becomes in it.
pub(super) fn report(cfg: &Config, obtained: &[(Exchanger, Issued)], out: &mut String) {
    if cfg.tyk_apis.is_empty() {
        return;
    }
    let _ = writeln!(out, "\ntyk");
    for (i, file) in &cfg.tyk_apis {
        let Some(r) = cfg.routes.get(*i) else {
            continue;
        };
        let api = match TykApi::load(file) {
            Ok(a) => a,
            Err(e) => {
                let _ = writeln!(out, "  {}: tyk_api: {e}", r.display_url());
                continue;
            }
        };
        let _ = writeln!(
            out,
            "  {} → Tyk API {:?} ({}){}",
            r.display_url(),
            sanitize(&api.name),
            file.display(),
            if api.jwt { ", JWT auth" } else { "" }
        );
        match obtained.iter().find(|(x, _)| x.name == r.credential) {
            Some((_, issued)) => {
                for l in api.identity_lines(issued.value.expose()) {
                    let _ = writeln!(out, "    {l}");
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "    its credential {:?} was not obtained: the session identity is not known",
                    r.credential
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: Value, claims: Value) -> String {
        use base64::Engine;
        let e = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!("{}.{}.sig", e(&header), e(&claims))
    }

    fn classic(extra: &str) -> TykApi {
        TykApi::parse(&format!(
            r#"{{"api_id": "a", "name": "ci", "enable_jwt": true {extra}}}"#
        ))
        .expect("parse")
    }

    const SUB: &str = "project_path:acme/app:ref_type:branch:ref:main";

    fn token(claims: Value) -> String {
        jwt(
            serde_json::json!({"alg": "RS256", "kid": "ci-key-1"}),
            claims,
        )
    }

    #[test]
    fn with_a_central_jwt_source_the_identity_claim_keys_the_session_not_the_kid() {
        let src = r#", "jwt_source": "https://gitlab.example.com/oauth/discovery/keys""#;
        let t = token(
            serde_json::json!({"sub": SUB, "project_path": "acme/app", "ns": {"id": "42"}, "blank": ""}),
        );
        let central = "(the API has a central key source, so the kid only picks the JWKS key)";
        // No base field, with or without skip_kid: sub.
        for extra in ["", r#", "jwt_skip_kid": true"#] {
            let l = classic(&format!("{src}{extra}")).identity_lines(&t);
            assert_eq!(
                l,
                [format!(
                    "session identity: claim \"sub\" = {SUB:?} {central}"
                )]
            );
        }
        // The base field, a nested one, and the fallback to sub when it is absent.
        let l = classic(&format!(
            r#"{src}, "jwt_identity_base_field": "project_path""#
        ))
        .identity_lines(&t);
        assert_eq!(
            l,
            [format!(
                "session identity: claim \"project_path\" = \"acme/app\" {central}"
            )]
        );
        let l =
            classic(&format!(r#"{src}, "jwt_identity_base_field": "ns.id""#)).identity_lines(&t);
        assert_eq!(
            l,
            [format!(
                "session identity: claim \"ns.id\" = \"42\" {central}"
            )]
        );
        let l =
            classic(&format!(r#"{src}, "jwt_identity_base_field": "job_id""#)).identity_lines(&t);
        assert_eq!(
            l,
            [format!(
                "session identity: claim \"sub\" = {SUB:?} {central}"
            )]
        );
        // Present but empty is refused in Tyk's words; so is no sub at all.
        let l =
            classic(&format!(r#"{src}, "jwt_identity_base_field": "blank""#)).identity_lines(&t);
        assert!(l[0].starts_with("warning: Tyk refuses this token: \"found an empty user ID in predefined base claim, claim: blank\""), "{l:?}");
        let l = classic(src).identity_lines(&token(serde_json::json!({"aud": "x"})));
        assert!(
            l[0].contains("\"no suitable claims for user ID were found\""),
            "{l:?}"
        );
        let l = classic(src).identity_lines(&token(serde_json::json!({"sub": ""})));
        assert!(
            l[0].contains("\"found an empty user ID in sub claim\""),
            "{l:?}"
        );
    }

    #[test]
    fn without_a_jwt_source_the_kid_names_the_shared_session_unless_skipped() {
        let t = token(serde_json::json!({"sub": SUB}));
        for extra in ["", r#", "jwt_identity_base_field": "sub""#] {
            let l = classic(extra).identity_lines(&t);
            assert_eq!(l.len(), 1, "{l:?}");
            assert!(
                l[0].starts_with("warning: the API has no central key source (jwt_source), so Tyk v5.14.0 takes the token's kid \"ci-key-1\" as the session identity"),
                "{l:?}"
            );
        }
        let l = classic(r#", "jwt_skip_kid": true, "jwt_identity_base_field": "sub""#)
            .identity_lines(&t);
        assert_eq!(l, [format!("session identity: claim \"sub\" = {SUB:?} (the kid is skipped: jwt_skip_kid; with no jwt_source Tyk needs a Tyk key named after this value, holding the platform's public key)")]);
        // A token without a kid goes to the claim even without skip_kid.
        let l = classic("").identity_lines(&jwt(
            serde_json::json!({"alg": "RS256"}),
            serde_json::json!({"sub": SUB}),
        ));
        assert!(
            l[0].starts_with("session identity: claim \"sub\"")
                && l[0].contains("the token has no kid"),
            "{l:?}"
        );
        assert!(classic("").identity_lines("not-a-jwt")[0].contains("not a JWT"));
        assert!(TykApi::parse("[1]").is_err());
    }

    #[test]
    fn oas_subject_claims_in_turn_then_sub_and_allowed_subjects_compare_the_kid() {
        let oas = |scheme: &str| {
            TykApi::parse(&format!(r#"{{"components": {{"securitySchemes": {{"j": {{"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}}}}}, "x-tyk-api-gateway": {{"info": {{"name": "o"}}, "server": {{"authentication": {{"securitySchemes": {{"j": {{"enabled": true {scheme}}}}}}}}}}}}}"#)).expect("oas")
        };
        let t = token(serde_json::json!({"sub": SUB, "job_id": "9"}));
        let a = oas(r#", "source": "https://x/jwks", "subjectClaims": ["missing", "job_id"]"#);
        assert!(a.oas && a.central && a.jwt && !a.skip_kid);
        let l = a.identity_lines(&t);
        assert!(
            l[0].starts_with("session identity: claim \"job_id\" = \"9\""),
            "{l:?}"
        );
        // jwksURIs is a central source too; identityBaseField when no subjectClaims.
        let a = oas(r#", "jwksURIs": [{"url": "https://x/jwks"}], "identityBaseField": "missing""#);
        assert!(a.identity_lines(&t)[0].starts_with("session identity: claim \"sub\""));
        // sub named and absent: no second try.
        let a = oas(r#", "source": "s", "subjectClaims": ["sub"]"#);
        assert!(
            a.identity_lines(&token(serde_json::json!({"job_id": "9"})))[0]
                .contains("no suitable claims")
        );
        // allowedSubjects without skipKid is compared with the kid.
        let a = oas(r#", "source": "s", "allowedSubjects": ["x"]"#);
        let l = a.identity_lines(&t);
        assert!(
            l[1].starts_with(
                "warning: Tyk v5.14.0 compares allowedSubjects with the token's kid \"ci-key-1\""
            ),
            "{l:?}"
        );
        let a = oas(r#", "source": "s", "allowedSubjects": ["x"], "skipKid": true"#);
        assert_eq!(a.identity_lines(&t).len(), 1);
        // No source: the kid warning, in OAS terms.
        let l = oas("").identity_lines(&t);
        assert!(
            l[0].contains("(jwt_source / source / jwksURIs)")
                && l[0].contains("by subjectClaims, then sub"),
            "{l:?}"
        );
    }

    #[test]
    fn tyk_refusals_are_explained() {
        let e = |s, m: &str| explain(s, &serde_json::json!({ "error": m }).to_string());
        assert!(e(403, "Access to this API has been disallowed")[0].contains("access_rights"));
        assert!(e(403, "Access to this resource has been disallowed")[0].contains("allowed_urls"));
        assert!(e(400, "Authorization field missing")[0].contains("no token"));
        assert!(e(403, "Key not authorized")[0].contains("jwt_source"));
        assert!(e(403, "key not authorized: no matching policy")[0].contains("policy"));
        assert!(e(
            403,
            "Attempted administrative access with invalid or missing key!"
        )[0]
        .contains("x-tyk-authorization"));
        assert!(explain(403, "<html>").is_empty());
    }
}
