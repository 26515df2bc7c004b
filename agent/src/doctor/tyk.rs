//! Tyk gateway: who a JWT becomes in Tyk (the `kid` pitfall), and what
//! Tyk's refusals mean. A route names the API definition it reaches with
//! `tyk_api`; doctor reads that file (Classic or OAS) and the credential's
//! token header, and never prints the token.

use super::*;
use serde_json::Value;

/// What doctor needs from a Tyk API definition.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TykApi {
    pub name: String,
    pub jwt: bool,
    pub skip_kid: bool,
    /// `jwt_identity_base_field` (Classic) or the first of `subjectClaims` /
    /// `identityBaseField` (OAS).
    pub identity_claim: Option<String>,
}

impl TykApi {
    /// A Classic definition (`enable_jwt`, `jwt_skip_kid`,
    /// `jwt_identity_base_field`) or an OAS one
    /// (`x-tyk-api-gateway.server.authentication.securitySchemes.*`).
    pub fn parse(text: &str) -> Result<TykApi, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
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
            return Ok(match jwt {
                Some((_, s)) => TykApi {
                    name,
                    jwt: true,
                    skip_kid: s["skipKid"] == true,
                    identity_claim: s["subjectClaims"][0]
                        .as_str()
                        .or(s["identityBaseField"].as_str())
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned),
                },
                None => TykApi {
                    name,
                    jwt: false,
                    skip_kid: false,
                    identity_claim: None,
                },
            });
        }
        if !v.is_object() || v.get("api_id").is_none() && v.get("proxy").is_none() {
            return Err("neither a Tyk Classic API definition (api_id, proxy) nor a Tyk OAS one (x-tyk-api-gateway)".into());
        }
        Ok(TykApi {
            name: v["name"].as_str().unwrap_or("?").to_owned(),
            jwt: v["enable_jwt"] == true,
            skip_kid: v["jwt_skip_kid"] == true,
            identity_claim: v["jwt_identity_base_field"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        })
    }

    /// Who Tyk makes of this token (header `kid`, payload claims): a
    /// `warning:` line when every job signed with one key becomes one
    /// session.
    pub fn identity_lines(&self, token: &str) -> Vec<String> {
        if !self.jwt {
            return vec!["the API does not use JWT auth: no session identity to check".into()];
        }
        let Some((header, claims)) = decode(token) else {
            return vec!["warning: the credential is not a JWT, and this API uses Tyk's JWT auth: Tyk will refuse it (\"Key not authorized\")".into()];
        };
        let kid = header["kid"].as_str().filter(|k| !k.is_empty());
        if let (Some(kid), false) = (kid, self.skip_kid) {
            return vec![format!(
                "warning: Tyk takes the token's kid {:?} as the session identity (the API does not set jwt_skip_kid / skipKid; Tyk's documented order is kid, then {}, then sub): every job whose token is signed with this key shares one Tyk session, with one rate limit and one quota. Set \"jwt_skip_kid\": true and \"jwt_identity_base_field\" (Tyk OAS: skipKid and subjectClaims) in the API definition",
                sanitize(kid),
                self.identity_claim.as_deref().map(|c| format!("the claim {c:?}")).unwrap_or_else(|| "jwt_identity_base_field".into()),
            )];
        }
        let claim = self.identity_claim.as_deref().unwrap_or("sub");
        let (claim, value) = match claims.get(claim).and_then(Value::as_str) {
            Some(v) => (claim, v.to_owned()),
            // Tyk falls back to sub when the named claim is absent.
            None => ("sub", claims["sub"].as_str().unwrap_or_default().to_owned()),
        };
        if value.is_empty() {
            return vec![format!("warning: the token has no {claim:?} claim: Tyk refuses it (\"no suitable claims for user ID were found\")")];
        }
        vec![format!(
            "session identity: claim {claim:?} = {:?}{}",
            sanitize(&value),
            if kid.is_some() {
                " (the kid is skipped: jwt_skip_kid)"
            } else {
                " (the token has no kid)"
            }
        )]
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
        let api = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))
            .and_then(|t| TykApi::parse(&t).map_err(|e| format!("{}: {e}", file.display())));
        let api = match api {
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

    #[test]
    fn kid_becomes_the_identity_unless_the_api_skips_it() {
        let t = jwt(
            serde_json::json!({"alg": "RS256", "kid": "ci-key-1"}),
            serde_json::json!({"sub": "project_path:acme/app:ref_type:branch:ref:main"}),
        );
        let classic = |extra: &str| {
            TykApi::parse(&format!(
                r#"{{"api_id": "a", "name": "ci", "enable_jwt": true {extra}}}"#
            ))
            .expect("parse")
        };
        let l = classic("").identity_lines(&t);
        assert!(
            l[0].starts_with("warning: Tyk takes the token's kid \"ci-key-1\""),
            "{l:?}"
        );
        // An identity claim alone does not help: the kid comes first.
        let l = classic(r#", "jwt_identity_base_field": "sub""#).identity_lines(&t);
        assert!(l[0].starts_with("warning:"), "{l:?}");
        let l = classic(r#", "jwt_skip_kid": true, "jwt_identity_base_field": "sub""#)
            .identity_lines(&t);
        assert_eq!(
            l,
            ["session identity: claim \"sub\" = \"project_path:acme/app:ref_type:branch:ref:main\" (the kid is skipped: jwt_skip_kid)"]
        );
        let oas = TykApi::parse(r#"{"components": {"securitySchemes": {"j": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}}, "x-tyk-api-gateway": {"info": {"name": "o"}, "server": {"authentication": {"securitySchemes": {"j": {"enabled": true, "skipKid": true, "subjectClaims": ["job_id"]}}}}}}"#).expect("oas");
        assert_eq!(oas.identity_claim.as_deref(), Some("job_id"));
        assert!(oas.skip_kid && oas.jwt);
        assert!(TykApi::parse("[1]").is_err());
        assert!(classic("").identity_lines("not-a-jwt")[0].contains("not a JWT"));
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
