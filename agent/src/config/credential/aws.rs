//! `exchange = "aws-web-identity"`: STS `AssumeRoleWithWebIdentity`. Every
//! value is checked against STS's own limits here, so that a typo is a
//! config error with a line number, not a refusal at the job's start.

use std::time::Duration;

use url::Url;

use super::Keys;
use crate::config::model::{AwsSecret, AwsWebIdentity, CredentialConfig, CredentialKind};
use crate::config::raw::{At, Diag, Table};
use crate::config::values::{duration, required, url};
use crate::config::DEFAULT_KV_REFRESH;

/// The keys only this kind takes (besides `name`, `exchange`, `audience`).
pub(super) const KEYS: &[&str] = &[
    "role_arn",
    "session_name",
    "duration",
    "policy",
    "policy_arns",
    "region",
    "sts_endpoint",
    "container_endpoint",
];

/// The keys only a `from` read of Secrets Manager takes (besides `name`,
/// `from`, `secret`, `refresh`).
pub(super) const SECRET_KEYS: &[&str] = &["version_stage", "secrets_endpoint"];

/// The audience AWS's own documentation configures for the IAM OIDC
/// provider, and what `configure-aws-credentials` asks GitHub for.
pub const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";
/// STS's default `DurationSeconds`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(3600);
/// STS's bounds on `DurationSeconds`.
pub const MIN_DURATION: Duration = Duration::from_secs(900);
pub const MAX_DURATION: Duration = Duration::from_secs(43_200);
/// STS: "The plaintext … for both inline and managed session policies can't
/// exceed 2,048 characters"; at most 10 managed policy ARNs.
const MAX_POLICY_CHARS: usize = 2048;
const MAX_POLICY_ARNS: usize = 10;

/// The raw values of [`KEYS`].
pub(super) struct AwsKeys {
    role_arn: Option<At<String>>,
    session_name: Option<At<String>>,
    duration: Option<At<String>>,
    policy: Option<At<String>>,
    policy_arns: Option<At<Vec<String>>>,
    region: Option<At<String>>,
    sts_endpoint: Option<At<String>>,
    version_stage: Option<At<String>>,
    secrets_endpoint: Option<At<String>>,
    container_endpoint: Option<At<bool>>,
}

impl AwsKeys {
    pub(super) fn read(d: &mut Diag<'_>, t: &mut Table<'_>) -> AwsKeys {
        AwsKeys {
            role_arn: t.string(d, "role_arn"),
            session_name: t.string(d, "session_name"),
            duration: t.string(d, "duration"),
            policy: t.string(d, "policy"),
            policy_arns: t.strings(d, "policy_arns"),
            region: t.string(d, "region"),
            sts_endpoint: t.string(d, "sts_endpoint"),
            version_stage: t.string(d, "version_stage"),
            secrets_endpoint: t.string(d, "secrets_endpoint"),
            container_endpoint: t.bool(d, "container_endpoint"),
        }
    }

    pub(super) fn given(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let s = |v: &Option<At<String>>| v.as_ref().map(|v| v.span.clone());
        [
            ("role_arn", s(&self.role_arn)),
            ("session_name", s(&self.session_name)),
            ("duration", s(&self.duration)),
            ("policy", s(&self.policy)),
            (
                "policy_arns",
                self.policy_arns.as_ref().map(|v| v.span.clone()),
            ),
            ("region", s(&self.region)),
            ("sts_endpoint", s(&self.sts_endpoint)),
            ("version_stage", s(&self.version_stage)),
            ("secrets_endpoint", s(&self.secrets_endpoint)),
            (
                "container_endpoint",
                self.container_endpoint.as_ref().map(|v| v.span.clone()),
            ),
        ]
        .into_iter()
        .filter_map(|(k, span)| span.map(|span| (k, span)))
        .collect()
    }
}

pub(super) fn web_identity(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    k: &Keys,
    earlier: &[CredentialConfig],
) -> Option<CredentialKind> {
    let a = &k.aws;
    let container_endpoint = container_endpoint(d, t, a, earlier);
    let role_arn = required(
        d,
        t,
        "role_arn",
        a.role_arn.as_ref(),
        is_role_arn,
        "expected an IAM role ARN such as \"arn:aws:iam::123456789012:role/ci-deploy\"",
        "exchange = \"aws-web-identity\" needs `role_arn`, the IAM role whose trust policy accepts this job's identity, e.g. \"arn:aws:iam::123456789012:role/ci-deploy\"",
    );
    let session_name = match &a.session_name {
        Some(s) if is_session_name(&s.v) => Some(Some(s.v.clone())),
        Some(s) => {
            d.err(&s.span, &t.key("session_name"), format!("expected 2 to 64 characters of letters, digits and +=,.@_- (STS's RoleSessionName), got {:?}", s.v));
            None
        }
        None => Some(None),
    };
    let dur = match &a.duration {
        None => Some(DEFAULT_DURATION),
        Some(v) => duration(d, &t.key("duration"), v).and_then(|dur| {
            if dur < MIN_DURATION || dur > MAX_DURATION || dur.subsec_nanos() != 0 {
                d.err(&v.span, &t.key("duration"), format!("expected whole seconds from 15m to 12h (STS's DurationSeconds; the role's maximum session duration may be lower), got {:?}", v.v));
                None
            } else {
                Some(dur)
            }
        }),
    };
    let policy = match &a.policy {
        None => Some(None),
        Some(p) => {
            match serde_json::from_str::<serde_json::Value>(&p.v) {
                Ok(serde_json::Value::Object(_)) if p.v.chars().count() <= MAX_POLICY_CHARS => {
                    Some(Some(p.v.clone()))
                }
                Ok(serde_json::Value::Object(_)) => {
                    d.err(&p.span, &t.key("policy"), format!("a session policy has at most {MAX_POLICY_CHARS} characters (STS's limit)"));
                    None
                }
                Ok(_) => {
                    d.err(&p.span, &t.key("policy"), "expected a JSON policy document (an object with \"Version\" and \"Statement\")");
                    None
                }
                Err(e) => {
                    d.err(
                        &p.span,
                        &t.key("policy"),
                        format!("expected a JSON policy document; it does not parse: {e}"),
                    );
                    None
                }
            }
        }
    };
    let mut policy_arns = Vec::new();
    if let Some(list) = &a.policy_arns {
        if list.v.len() > MAX_POLICY_ARNS {
            d.err(
                &list.span,
                &t.key("policy_arns"),
                format!(
                    "STS takes at most {MAX_POLICY_ARNS} managed session policies, got {}",
                    list.v.len()
                ),
            );
        }
        for arn in &list.v {
            if is_policy_arn(arn) {
                policy_arns.push(arn.clone());
            } else {
                d.err(&list.span, &t.key("policy_arns"), format!("expected IAM policy ARNs such as \"arn:aws:iam::aws:policy/ReadOnlyAccess\", got {arn:?}"));
            }
        }
    }
    let region = required(
        d,
        t,
        "region",
        a.region.as_ref(),
        is_region,
        "expected an AWS region such as \"us-east-1\"",
        "exchange = \"aws-web-identity\" needs `region` (as configure-aws-credentials needs aws-region): the STS endpoint is regional, e.g. \"us-east-1\"",
    );
    let sts_endpoint = match (&a.sts_endpoint, &region) {
        (Some(e), _) => url(d, &t.key("sts_endpoint"), e),
        (None, Some(r)) => regional_endpoint("sts", r),
        (None, None) => None,
    };
    let audience = match &k.audience {
        Some(aud) if aud.v.len() == 1 && !aud.v[0].is_empty() => Some(aud.v[0].clone()),
        Some(aud) => {
            d.err(&aud.span, &t.key("audience"), "aws-web-identity takes one audience: the client ID the IAM OIDC provider lists (usually \"sts.amazonaws.com\")");
            None
        }
        // Filled in from [identity] audience or the default by `build`.
        None => Some(String::new()),
    };
    Some(CredentialKind::AwsWebIdentity(AwsWebIdentity {
        role_arn: role_arn?,
        session_name: session_name?,
        duration: dur?,
        policy: policy?,
        policy_arns,
        region: region?,
        sts_endpoint: sts_endpoint?,
        audience: audience?,
        container_endpoint: container_endpoint?,
    }))
}

/// `container_endpoint = true`: at most one credential, because the SDKs
/// read one `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
fn container_endpoint(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    a: &AwsKeys,
    earlier: &[CredentialConfig],
) -> Option<bool> {
    let Some(v) = &a.container_endpoint else {
        return Some(false);
    };
    let other = earlier
        .iter()
        .find(|c| matches!(&c.kind, CredentialKind::AwsWebIdentity(o) if o.container_endpoint));
    match other {
        Some(o) if v.v => {
            d.err(&v.span, &t.key("container_endpoint"), format!("credential {:?} already serves the container-credentials endpoint; the AWS SDKs read one AWS_CONTAINER_CREDENTIALS_FULL_URI, so only one credential may set container_endpoint = true", o.name));
            None
        }
        _ => Some(v.v),
    }
}

/// True when `from` names an aws-web-identity credential defined above.
pub(super) fn names_aws(from: &At<String>, earlier: &[CredentialConfig]) -> bool {
    earlier
        .iter()
        .any(|c| c.name == from.v && matches!(c.kind, CredentialKind::AwsWebIdentity(_)))
}

/// A vault `from` read takes none of [`SECRET_KEYS`].
pub(super) fn refuse_secret_keys(d: &mut Diag<'_>, t: &Table<'_>, k: &Keys) {
    for (key, v) in [
        ("version_stage", &k.aws.version_stage),
        ("secrets_endpoint", &k.aws.secrets_endpoint),
    ] {
        if let Some(v) = v {
            d.err(&v.span, &t.key(key), format!("`{key}` applies only to a Secrets Manager read (`from` an aws-web-identity credential)"));
        }
    }
}

/// `from = "<aws credential>"`: `secret = "<name or ARN>[#field]"`.
pub(super) fn secret_read(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    k: &Keys,
    f: &At<String>,
    earlier: &[CredentialConfig],
) -> Option<CredentialKind> {
    let Some(CredentialKind::AwsWebIdentity(parent)) =
        earlier.iter().find(|c| c.name == f.v).map(|c| &c.kind)
    else {
        return None;
    };
    let (secret_id, field) = match &k.secret {
        None => {
            d.err(&t.span, &t.key("secret"), "a Secrets Manager read needs `secret = \"<name or ARN>\"`, optionally with `#<json key>`, e.g. \"ci/db#password\"");
            (None, None)
        }
        Some(s) => {
            let (id, field) = match s.v.split_once('#') {
                Some((id, f)) => (id, Some(f)),
                None => (s.v.as_str(), None),
            };
            if is_secret_id(id) && field.is_none_or(|f| !f.is_empty()) {
                (Some(id.to_owned()), Some(field.map(str::to_owned)))
            } else {
                d.err(&s.span, &t.key("secret"), format!("expected a secret name (1 to 512 of letters, digits and /_+=.@-) or a secretsmanager ARN, optionally followed by #<json key>, got {:?}", s.v));
                (None, None)
            }
        }
    };
    let version_stage = match &k.aws.version_stage {
        None => Some(None),
        Some(v) if (1..=256).contains(&v.v.len()) && v.v.chars().all(is_iam_char) => {
            Some(Some(v.v.clone()))
        }
        Some(v) => {
            d.err(&v.span, &t.key("version_stage"), format!("expected a version stage label such as \"AWSCURRENT\" or \"AWSPREVIOUS\", got {:?}", v.v));
            None
        }
    };
    let endpoint = match &k.aws.secrets_endpoint {
        Some(e) => url(d, &t.key("secrets_endpoint"), e),
        None => regional_endpoint("secretsmanager", &parent.region),
    };
    let refresh = match &k.refresh {
        Some(r) => duration(d, &t.key("refresh"), r),
        None => Some(DEFAULT_KV_REFRESH),
    };
    Some(CredentialKind::AwsSecret(AwsSecret {
        from: f.v.clone(),
        secret_id: secret_id?,
        field: field?,
        version_stage: version_stage?,
        region: parent.region.clone(),
        endpoint: endpoint?,
        refresh: refresh?,
    }))
}

/// A secret's name (`[A-Za-z0-9/_+=.@-]`, 1 to 512) or its ARN.
fn is_secret_id(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(6, ':').collect();
        return matches!(parts[..], [p, "secretsmanager", region, account, "secret", name]
            if p.starts_with("aws") && is_region(region) && account.len() == 12
                && account.chars().all(|c| c.is_ascii_digit()) && is_secret_id(name));
    }
    (1..=512).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
}

/// A service's regional endpoint; China's regions are under `amazonaws.com.cn`.
fn regional_endpoint(service: &str, region: &str) -> Option<Url> {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Url::parse(&format!("https://{service}.{region}.{suffix}/")).ok()
}

/// `[\w+=,.@-]`: the characters of IAM names and STS session names.
fn is_iam_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

pub(crate) fn is_session_name(s: &str) -> bool {
    (2..=64).contains(&s.len()) && s.chars().all(is_iam_char)
}

/// `arn:<partition>:iam::<12 digits or "aws">:<kind>/<path/>name`.
fn is_iam_arn(s: &str, kind: &str, aws_managed: bool) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    let account_ok = (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()))
        || (aws_managed && account == "aws");
    let Some(path) = resource
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    let name = path.rsplit('/').next().unwrap_or("");
    arn == "arn"
        && partition.starts_with("aws")
        && partition
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-')
        && service == "iam"
        && region.is_empty()
        && account_ok
        && !name.is_empty()
        && s.len() <= 2048
        && path.chars().all(|c| c == '/' || is_iam_char(c))
}

pub(crate) fn is_role_arn(s: &str) -> bool {
    is_iam_arn(s, "role", false)
}

fn is_policy_arn(s: &str) -> bool {
    is_iam_arn(s, "policy", true)
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
        && s.len() <= 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_regions_and_session_names_follow_the_aws_shapes() {
        assert!(is_role_arn("arn:aws:iam::123456789012:role/ci-deploy"));
        assert!(is_role_arn(
            "arn:aws-us-gov:iam::123456789012:role/path/to/ci@x"
        ));
        assert!(!is_role_arn("arn:aws:iam::12345678901:role/ci"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:user/ci"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:role/"));
        assert!(!is_role_arn("arn:aws:iam:us-east-1:123456789012:role/ci"));
        assert!(!is_role_arn("arn:aws:sts::123456789012:role/ci"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:role/c i"));
        assert!(is_policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess"));
        assert!(is_policy_arn("arn:aws:iam::123456789012:policy/ci/Deploy"));
        assert!(!is_policy_arn("arn:aws:iam::aws:role/ReadOnlyAccess"));
        for ok in ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1"] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in ["us-east", "US-EAST-1", "us_east_1", "", "us--1"] {
            assert!(!is_region(bad), "{bad}");
        }
        assert!(is_secret_id("ci/db-password"));
        assert!(is_secret_id(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:ci/db-AbCdEf"
        ));
        assert!(!is_secret_id(
            "arn:aws:secretsmanager:us-east-1:123:secret:x"
        ));
        assert!(!is_secret_id("has space"));
        assert!(!is_secret_id(""));
        assert!(is_session_name("lanyard-acme.app@4242"));
        assert!(!is_session_name("x"));
        assert!(!is_session_name(&"x".repeat(65)));
        assert!(!is_session_name("has space"));
        assert_eq!(
            regional_endpoint("sts", "cn-north-1").map(|u| u.to_string()),
            Some("https://sts.cn-north-1.amazonaws.com.cn/".into())
        );
    }
}
