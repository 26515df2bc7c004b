//! `exchange = "gcp-workload-identity"`: Google Cloud workload identity
//! federation. The job's token goes to Google's STS (RFC 8693) for a
//! federated access token, which, with `service_account`, is exchanged
//! again at IAM Credentials' `generateAccessToken` for the service
//! account's token. Shapes are checked here, so that a typo is a config
//! error with a line number, not an `invalid_target` at the job's start.

use std::time::Duration;

use url::Url;

use super::Keys;
use crate::config::model::CredentialKind;
use crate::config::raw::{At, Diag, Table};
use crate::config::values::{duration, url};

/// The keys only this kind takes (besides `name`, `exchange`, `audience`,
/// `scope`, `lifetime`, `token_url`).
pub(super) const KEYS: &[&str] = &[
    "provider",
    "service_account",
    "delegates",
    "project_id",
    "iamcredentials_url",
];

/// Google's STS token endpoint.
pub const DEFAULT_STS_URL: &str = "https://sts.googleapis.com/v1/token";
/// IAM Credentials' API root.
pub const DEFAULT_IAMCREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com";
/// The scope of a token for any Google Cloud API (IAM decides what it may do).
pub const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// `generateAccessToken`'s default and, without an organization policy
/// exception, its maximum.
pub const DEFAULT_SA_LIFETIME: Duration = Duration::from_secs(3600);
/// The most `generateAccessToken` grants with the lifetime-extension policy.
const MAX_SA_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Variables that Google's client libraries, gcloud or Terraform read
/// before the metadata server: a credentials file (as
/// `google-github-actions/auth` leaves one in the workspace), its JSON
/// itself, or an access token. Left in a job with a gcp-workload-identity
/// credential, they would win over lanyard's placeholder (and mean a real
/// key or token is in the job), so `lanyard run` removes them from its
/// command and `lanyard start` warns (its `--export sh` unsets them).
pub const OVERRIDING_VARIABLES: &[&str] = &[
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_GHA_CREDS_PATH",
    "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
    "CLOUDSDK_AUTH_ACCESS_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "GOOGLE_CREDENTIALS",
    "GOOGLE_CLOUD_KEYFILE_JSON",
    "GCLOUD_KEYFILE_JSON",
];

/// A validated `gcp-workload-identity` credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpWorkloadIdentity {
    /// `projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>`.
    pub provider: String,
    /// The `aud` the job's token is minted for: the provider's default
    /// allowed audience `https://iam.googleapis.com/<provider>` unless set.
    pub audience: String,
    pub token_url: Url,
    pub scope: Vec<String>,
    /// Without it, the federated token itself is the credential.
    pub service_account: Option<String>,
    /// Delegation chain, as emails.
    pub delegates: Vec<String>,
    /// The impersonated token's lifetime (`generateAccessToken`'s `lifetime`).
    pub lifetime: Duration,
    pub iamcredentials_url: Url,
    /// For the metadata server's `project/project-id`: configured, else the
    /// service account's project.
    pub project_id: Option<String>,
}

impl GcpWorkloadIdentity {
    /// STS's `audience`: the provider's full resource name.
    pub fn sts_audience(&self) -> String {
        format!("//iam.googleapis.com/{}", self.provider)
    }
}

/// The raw values of [`KEYS`].
pub(super) struct GoogleKeys {
    provider: Option<At<String>>,
    service_account: Option<At<String>>,
    delegates: Option<At<Vec<String>>>,
    project_id: Option<At<String>>,
    iamcredentials_url: Option<At<String>>,
}

impl GoogleKeys {
    pub(super) fn read(d: &mut Diag<'_>, t: &mut Table<'_>) -> GoogleKeys {
        GoogleKeys {
            provider: t.string(d, "provider"),
            service_account: t.string(d, "service_account"),
            delegates: t.strings(d, "delegates"),
            project_id: t.string(d, "project_id"),
            iamcredentials_url: t.string(d, "iamcredentials_url"),
        }
    }

    pub(super) fn given(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let s = |v: &Option<At<String>>| v.as_ref().map(|v| v.span.clone());
        [
            ("provider", s(&self.provider)),
            ("service_account", s(&self.service_account)),
            ("delegates", self.delegates.as_ref().map(|v| v.span.clone())),
            ("project_id", s(&self.project_id)),
            ("iamcredentials_url", s(&self.iamcredentials_url)),
        ]
        .into_iter()
        .filter_map(|(k, span)| span.map(|span| (k, span)))
        .collect()
    }
}

pub(super) fn workload_identity(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    k: &Keys,
) -> Option<CredentialKind> {
    let g = &k.google;
    let provider = match &g.provider {
        None => {
            d.err(&t.span, &t.key("provider"), "exchange = \"gcp-workload-identity\" needs `provider`, the workload identity provider's resource name \"projects/<project number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>\"");
            None
        }
        Some(p) => match provider_name(&p.v) {
            Some(n) => Some(n),
            None => {
                d.err(&p.span, &t.key("provider"), format!("expected \"projects/<project number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>\" (the number, not the project ID; pool and provider IDs of 4 to 32 lowercase letters, digits and -), got {:?}", p.v));
                None
            }
        },
    };
    let service_account = match &g.service_account {
        None => Some(None),
        Some(s) if is_service_account(&s.v) => Some(Some(s.v.clone())),
        Some(s) => {
            d.err(&s.span, &t.key("service_account"), format!("expected a service account's email such as \"deployer@my-project.iam.gserviceaccount.com\", got {:?}", s.v));
            None
        }
    };
    let delegates = match &g.delegates {
        None => Some(Vec::new()),
        Some(ds) => {
            let emails: Vec<Option<String>> =
                ds.v.iter()
                    .map(|s| {
                        let e = s.strip_prefix("projects/-/serviceAccounts/").unwrap_or(s);
                        is_service_account(e).then(|| e.to_owned())
                    })
                    .collect();
            if g.service_account.is_none() {
                d.err(&ds.span, &t.key("delegates"), "`delegates` is the chain to `service_account`; set `service_account` too, or remove `delegates`");
                None
            } else if emails.iter().any(Option::is_none) {
                d.err(&ds.span, &t.key("delegates"), format!("expected service account emails (or \"projects/-/serviceAccounts/<email>\"), got {:?}", ds.v));
                None
            } else {
                Some(emails.into_iter().flatten().collect())
            }
        }
    };
    let scope = match &k.scope {
        None => Some(vec![DEFAULT_SCOPE.to_owned()]),
        Some(s) if !s.v.is_empty() && s.v.iter().all(|x| is_scope(x)) => Some(s.v.clone()),
        Some(s) => {
            d.err(&s.span, &t.key("scope"), format!("expected OAuth scopes such as \"{DEFAULT_SCOPE}\" (https URLs, one per list item), got {:?}", s.v));
            None
        }
    };
    let lifetime = match &k.lifetime {
        None => Some(DEFAULT_SA_LIFETIME),
        Some(l) if g.service_account.is_none() => {
            d.err(&l.span, &t.key("lifetime"), "`lifetime` is the impersonated token's (generateAccessToken); a federated token without `service_account` lives as long as STS says");
            None
        }
        Some(l) => duration(d, &t.key("lifetime"), l).and_then(|v| {
            if v > MAX_SA_LIFETIME || v.subsec_nanos() != 0 {
                d.err(&l.span, &t.key("lifetime"), format!("expected whole seconds up to 12h (more than 1h needs the organization policy constraints/iam.allowServiceAccountCredentialLifetimeExtension), got {:?}", l.v));
                None
            } else {
                Some(v)
            }
        }),
    };
    let token_url = match &k.token_url {
        None => Url::parse(DEFAULT_STS_URL).ok(),
        Some(u) => url(d, &t.key("token_url"), u),
    };
    let iamcredentials_url = match &g.iamcredentials_url {
        None => Url::parse(DEFAULT_IAMCREDENTIALS_URL).ok(),
        Some(u) => url(d, &t.key("iamcredentials_url"), u),
    };
    let audience = match (&k.audience, &provider) {
        (Some(a), _) if a.v.len() == 1 && !a.v[0].is_empty() => Some(a.v[0].clone()),
        (Some(a), _) => {
            d.err(&a.span, &t.key("audience"), format!("expected one audience (one of the provider's allowed audiences; by default \"https://iam.googleapis.com/<provider>\"), got {:?}", a.v));
            None
        }
        (None, Some(p)) => Some(format!("https://iam.googleapis.com/{p}")),
        (None, None) => None,
    };
    let project_id = match &g.project_id {
        Some(p) if is_project_id(&p.v) => Some(Some(p.v.clone())),
        Some(p) => {
            d.err(&p.span, &t.key("project_id"), format!("expected a project ID (6 to 30 lowercase letters, digits and -, starting with a letter), got {:?}", p.v));
            None
        }
        None => Some(
            service_account
                .as_ref()
                .and_then(|s| s.as_deref())
                .and_then(project_of),
        ),
    };
    Some(CredentialKind::GcpWorkloadIdentity(GcpWorkloadIdentity {
        provider: provider?,
        audience: audience?,
        token_url: token_url?,
        scope: scope?,
        service_account: service_account?,
        delegates: delegates?,
        lifetime: lifetime?,
        iamcredentials_url: iamcredentials_url?,
        project_id: project_id?,
    }))
}

/// The provider's resource name without `//iam.googleapis.com/` (or
/// `https://iam.googleapis.com/`), when it has the right shape.
fn provider_name(s: &str) -> Option<String> {
    let n = s
        .strip_prefix("//iam.googleapis.com/")
        .or_else(|| s.strip_prefix("https://iam.googleapis.com/"))
        .unwrap_or(s);
    let id = |x: &str| {
        (4..=32).contains(&x.len())
            && x.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !x.starts_with('-')
            && !x.starts_with("gcp-")
    };
    match n.split('/').collect::<Vec<_>>()[..] {
        ["projects", num, "locations", "global", "workloadIdentityPools", pool, "providers", prov]
            if !num.is_empty()
                && num.chars().all(|c| c.is_ascii_digit())
                && id(pool)
                && id(prov) =>
        {
            Some(n.to_owned())
        }
        _ => None,
    }
}

fn is_service_account(s: &str) -> bool {
    s.split_once('@').is_some_and(|(local, domain)| {
        (1..=100).contains(&local.len())
            && local
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && domain.ends_with("gserviceaccount.com")
            && domain
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    })
}

/// `<name>@<project>.iam.gserviceaccount.com` → `<project>`.
fn project_of(email: &str) -> Option<String> {
    let domain = email.split_once('@')?.1;
    domain
        .strip_suffix(".iam.gserviceaccount.com")
        .filter(|p| is_project_id(p))
        .map(str::to_owned)
}

fn is_project_id(s: &str) -> bool {
    (6..=30).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_scope(s: &str) -> bool {
    Url::parse(s).is_ok_and(|u| u.scheme() == "https" && u.has_host())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_service_accounts_and_projects() {
        let p =
            "projects/123456789/locations/global/workloadIdentityPools/ci-pool/providers/github";
        assert_eq!(provider_name(p).as_deref(), Some(p));
        assert_eq!(
            provider_name(&format!("//iam.googleapis.com/{p}")).as_deref(),
            Some(p)
        );
        for bad in [
            "projects/my-project/locations/global/workloadIdentityPools/ci-pool/providers/github",
            "projects/1/locations/us/workloadIdentityPools/ci-pool/providers/github",
            "projects/1/locations/global/workloadIdentityPools/ci/providers/github",
            "projects/1/locations/global/workloadIdentityPools/ci-pool/providers/GitHub",
            "projects/1/locations/global/workloadIdentityPools/ci-pool/providers/github/x",
        ] {
            assert_eq!(provider_name(bad), None, "{bad}");
        }
        assert!(is_service_account(
            "deployer@my-proj.iam.gserviceaccount.com"
        ));
        assert!(!is_service_account("deployer@example.com"));
        assert!(!is_service_account(
            "Deployer@my-proj.iam.gserviceaccount.com"
        ));
        assert_eq!(
            project_of("deployer@my-proj.iam.gserviceaccount.com").as_deref(),
            Some("my-proj")
        );
        assert_eq!(
            project_of("123-compute@developer.gserviceaccount.com"),
            None
        );
        assert!(is_scope(DEFAULT_SCOPE));
        assert!(!is_scope("cloud-platform"));
    }
}
