//! `doctor --url U --probe`: one GET through the route's credential, and the
//! answer explained (Tyk's refusals in their own words, then a likely cause).

use super::*;

pub(super) async fn probe(
    cfg: &Config,
    http: &HttpClient,
    who: &SessionIdentity,
    raw: &str,
    obtained: &[(Exchanger, Issued)],
    out: &mut String,
) -> bool {
    use crate::route::{parse_authority, Decision, RouteTable, Scheme};
    let _ = writeln!(out, "\nprobe GET {raw}");
    let Ok(url) = url::Url::parse(raw) else {
        let _ = writeln!(out, "  not a URL");
        return false;
    };
    let Some(scheme) = Scheme::parse(url.scheme()) else {
        let _ = writeln!(out, "  scheme {:?} is not proxied", url.scheme());
        return false;
    };
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_owned(),
    };
    let Ok(dest) = parse_authority(scheme, &authority) else {
        let _ = writeln!(out, "  the host is refused");
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
    let header = crate::http::Header::Secret(route.header.clone(), value);
    match http.get(&url, &[header]).await {
        Ok(resp) => {
            let code = resp.status.as_u16();
            let text: String =
                crate::secret::redact(&resp.text_lossy(), &[issued.value.as_secret()])
                    .chars()
                    .take(300)
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
            let _ = writeln!(out, "  answer: {code} {}", text.trim());
            for h in super::tyk::explain(code, &resp.text_lossy()) {
                let _ = writeln!(out, "  likely cause: {h}");
            }
            resp.status.is_success()
        }
        Err(e) => {
            let _ = writeln!(out, "  FAILED: {e}");
            false
        }
    }
}
