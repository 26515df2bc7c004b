//! The per-job CA: generated in memory at start, name-constrained to the
//! routed https hosts, valid no longer than the job. It issues one leaf per
//! host, cached with its rustls server config. Only the public certificate
//! ever reaches disk (in the bundle the job's clients trust); the keys live
//! and die in this process.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::route::{HostPattern, Route, Scheme};

/// Why: the contract caps the CA at a week, whatever the job's lifetime.
pub const MAX_CA_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Why: teardown and clock skew get a margin past the job's end.
pub const CA_MARGIN: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the job CA: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS server config: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no https route covers {0}; the job CA does not issue for it")]
    NotRouted(String),
    #[error("the job CA lifetime is out of range")]
    Lifetime,
}

pub struct JobCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
    hosts: Vec<HostPattern>,
    /// Per host: the leaf's server config. A std mutex, never held across
    /// an await; a miss costs one P-256 key and one signature.
    cache: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for JobCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCa")
            .field("hosts", &self.hosts)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn ip_subtree(ip: IpAddr) -> GeneralSubtree {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, prefix))
}

/// `[::1]` → `::1`.
fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

impl JobCa {
    /// A CA for the https routes, valid for `lifetime` plus a margin (at
    /// most a week).
    pub fn new(routes: &[Route], lifetime: Duration) -> Result<JobCa, TlsError> {
        let hosts: Vec<HostPattern> = routes
            .iter()
            .filter(|r| r.scheme == Scheme::Https)
            .map(|r| r.host.clone())
            .collect();
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for h in &hosts {
            match h {
                HostPattern::Exact(h) => match unbracket(h).parse::<IpAddr>() {
                    Ok(ip) => ips.push(ip_subtree(ip)),
                    Err(_) => dns.push(GeneralSubtree::DnsName(h.clone())),
                },
                // A dNSName constraint covers the name and its subdomains;
                // the proxy itself never issues for the bare suffix.
                HostPattern::Suffix(s) => dns.push(GeneralSubtree::DnsName(s.clone())),
            }
        }
        // Why: RFC 5280 constrains only the name types that appear. A type
        // with no routes gets a subtree that matches nothing real, so the
        // CA can never vouch for an arbitrary name or address.
        if dns.is_empty() {
            dns.push(GeneralSubtree::DnsName("invalid".into()));
        }
        if ips.is_empty() {
            ips.push(ip_subtree(IpAddr::from([0, 0, 0, 0])));
        }
        let valid = (lifetime + CA_MARGIN).min(MAX_CA_LIFETIME);
        let now = time::OffsetDateTime::now_utc();
        let not_before = now - time::Duration::minutes(1);
        let not_after = now + time::Duration::try_from(valid).map_err(|_| TlsError::Lifetime)?;

        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "lanyard per-job CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "lanyard");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: dns.into_iter().chain(ips).collect(),
            excluded_subtrees: Vec::new(),
        });
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(JobCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
            not_before,
            not_after,
            hosts,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM. Public.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The server config for a routed host (canonical form), cached.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        if let Some(c) = self.cache.lock().ok().and_then(|c| c.get(host).cloned()) {
            return Ok(c);
        }
        if !self.hosts.iter().any(|p| p.matches(host)) {
            return Err(TlsError::NotRouted(host.to_owned()));
        }
        let cfg = Arc::new(self.issue(host)?);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(host.to_owned(), cfg.clone());
        }
        Ok(cfg)
    }

    fn issue(&self, host: &str) -> Result<rustls::ServerConfig, TlsError> {
        let san = match unbracket(host).parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.try_into()?),
        };
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![san];
        // Why: an empty subject. OpenSSL checks a leaf's CN against the
        // CA's DNS constraints, and a CN of "127.0.0.1" fails them.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        let key = KeyPair::generate()?;
        let leaf = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(leaf.der().to_vec())], key_der)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// The bundle the job's clients trust: the system roots, the upstream
    /// extra CA (so tunnelled hosts it signs still verify) and this CA.
    pub fn bundle(&self, extra_ca: Option<&std::path::Path>) -> std::io::Result<String> {
        let mut out = String::new();
        for cert in &crate::http::native_roots().0 {
            out.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec())));
        }
        if let Some(p) = extra_ca {
            let text = std::fs::read_to_string(p)?;
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out.push_str("# lanyard per-job CA\n");
        out.push_str(&self.pem);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn routes(urls: &[&str]) -> Vec<Route> {
        let mut src = String::from(
            "[identity]\nsource = \"env\"\nvariable = \"T\"\n\
             [[credential]]\nname = \"c\"\nexchange = \"passthrough\"\n",
        );
        for u in urls {
            src.push_str(&format!("[[route]]\nurl = \"{u}\"\ncredential = \"c\"\n"));
        }
        Config::parse(std::path::Path::new("t.toml"), &src)
            .expect("config")
            .routes
    }

    #[test]
    fn issues_only_for_routed_hosts_and_caches() {
        let ca = JobCa::new(
            &routes(&["https://api.example.com/", "https://*.corp.example/"]),
            Duration::from_secs(3600),
        )
        .expect("ca");
        let a = ca.server_config("api.example.com").expect("leaf");
        let b = ca.server_config("api.example.com").expect("leaf");
        assert!(Arc::ptr_eq(&a, &b), "second lookup must hit the cache");
        ca.server_config("x.corp.example").expect("wildcard leaf");
        for bad in ["evil.com", "corp.example", "api.example.com.evil.com"] {
            assert!(
                matches!(ca.server_config(bad), Err(TlsError::NotRouted(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn lifetime_is_capped_at_a_week() {
        let ca = JobCa::new(
            &routes(&["https://api.example.com/"]),
            Duration::from_secs(30 * 24 * 3600),
        )
        .expect("ca");
        let span = ca.not_after - ca.not_before;
        assert!(
            span <= time::Duration::days(7) + time::Duration::minutes(1),
            "{span}"
        );
        let short =
            JobCa::new(&routes(&["https://a.example/"]), Duration::from_secs(60)).expect("ca");
        let span = short.not_after - short.not_before;
        assert!(span <= time::Duration::minutes(7), "{span}");
    }
}
