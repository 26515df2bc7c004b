//! `doctor --url U --probe`: one GET through the route's credential, and the
//! answer explained (Tyk's refusals in their own words, then a likely cause).
//! Nothing is sent unless a route covers the URL; only GET is sent; the
//! answer is read up to [`MAX_BODY`] bytes for at most [`TIMEOUT`]; a
//! refusal's body is shown with every echo of the credential masked
//! ([`super::echo`]), a success's body not at all.

use std::time::Duration;

use super::*;

/// Enough for any gateway's refusal; a larger answer is not read.
pub const MAX_BODY: usize = 64 * 1024;
/// A probe waits this long for the whole answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn probe(
    cfg: &Config,
    http: &HttpClient,
    who: &SessionIdentity,
    raw: &str,
    obtained: &[(Exchanger, Issued)],
    method: &str,
    out: &mut String,
) -> bool {
    use crate::route::{parse_authority, Decision, RouteTable, Scheme};
    // Shown without a user name or password the URL may carry.
    let shown = match url::Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => raw.to_owned(),
    };
    let _ = writeln!(out, "\nprobe GET {}", sanitize(&shown));
    if method != "GET" {
        let _ = writeln!(
            out,
            "  the probe sends GET only: {} was explained above, not sent",
            sanitize(method)
        );
    }
    let Ok(url) = url::Url::parse(raw) else {
        let _ = writeln!(out, "  not sent: not a URL");
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() {
        let _ = writeln!(out, "  not sent: the URL carries a user name or password; the probe sends only the route's credential");
        return false;
    }
    let Some(scheme) = Scheme::parse(url.scheme()) else {
        let _ = writeln!(out, "  not sent: scheme {:?} is not proxied", url.scheme());
        return false;
    };
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_owned(),
    };
    let Ok(dest) = parse_authority(scheme, &authority) else {
        let _ = writeln!(out, "  not sent: the host is refused");
        return false;
    };
    let table = RouteTable::for_identity(cfg.routes.clone(), who.clone());
    let route = match table.decide(&dest, url.path(), &http::Method::GET) {
        Decision::Route(r) => r,
        _ => {
            let _ = writeln!(out, "  not sent: no route applies (see above)");
            return false;
        }
    };
    if route.aws.is_some() {
        let _ = writeln!(out, "  not sent: AWS routes sign each request; probe them with the AWS CLI through `lanyard run`");
        return false;
    }
    let Some((_, issued)) = obtained.iter().find(|(x, _)| x.name == route.credential) else {
        let _ = writeln!(
            out,
            "  not sent: credential {:?} was not obtained",
            route.credential
        );
        return false;
    };
    let value = zeroize::Zeroizing::new(route.template.render(issued.value.expose()));
    let answer = {
        let header = crate::http::Header::Secret(route.header.clone(), value.clone());
        http.get_bounded(&url, &[header], MAX_BODY, TIMEOUT).await
    };
    match answer {
        Ok(resp) if resp.status.is_success() => {
            let _ = writeln!(
                out,
                "  answer: {} ({} bytes; a successful answer's body is not shown)",
                resp.status.as_u16(),
                resp.body.len()
            );
            true
        }
        Ok(resp) => {
            let code = resp.status.as_u16();
            // Redacted before anything reads it: the explanation quotes the
            // upstream's own message too.
            let body = zeroize::Zeroizing::new(resp.text_lossy());
            let text = super::echo::redact(&body, &[issued.value.expose(), value.as_str()]);
            let shown: String = text
                .chars()
                .take(300)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let _ = writeln!(out, "  answer: {code} {}", shown.trim());
            for h in super::tyk::explain(code, &text) {
                let _ = writeln!(out, "  likely cause: {}", sanitize(&h));
            }
            false
        }
        Err(e) => {
            let _ = writeln!(out, "  FAILED: {e}");
            false
        }
    }
}
