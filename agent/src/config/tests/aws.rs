//! `exchange = "aws-web-identity"`: defaults, STS's limits, and routes that
//! cannot use AWS keys yet.

use super::*;
use crate::config::AwsWebIdentity;

const ROLE: &str = "arn:aws:iam::123456789012:role/ci-deploy";

fn aws(cfg: &Config) -> &AwsWebIdentity {
    match &cfg.credentials[0].kind {
        CredentialKind::AwsWebIdentity(a) => a,
        other => panic!("not aws: {other:?}"),
    }
}

fn messages(src: &str) -> Vec<String> {
    errors(src)
        .into_iter()
        .map(|e| format!("{}: {}", e.key, e.message))
        .collect()
}

#[test]
fn an_aws_credential_has_sts_defaults_and_the_sts_audience() {
    let c = parse(&format!("[[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{ROLE}\"\nregion = \"eu-west-3\"\n")).expect("config");
    let a = aws(&c);
    assert_eq!(a.role_arn, ROLE);
    assert_eq!(
        a.sts_endpoint.as_str(),
        "https://sts.eu-west-3.amazonaws.com/"
    );
    assert_eq!(a.duration, std::time::Duration::from_secs(3600));
    assert_eq!(a.audience, "sts.amazonaws.com");
    assert_eq!(a.session_name, None);
    assert_eq!(c.credentials[0].kind.label(), "aws-web-identity");

    // [identity] audience is used when the credential names none; its own wins.
    let src = format!("[identity]\naudience = \"custom-aud\"\n[[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{ROLE}\"\nregion = \"us-east-1\"\nsts_endpoint = \"http://127.0.0.1:4566\"\nduration = \"15m\"\nsession_name = \"ci@acme\"\npolicy = '{{\"Version\":\"2012-10-17\",\"Statement\":[]}}'\npolicy_arns = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"]\n[[credential]]\nname = \"aws2\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{ROLE}\"\nregion = \"us-east-1\"\naudience = \"mine\"\n");
    let c = parse(&src).expect("config");
    let a = aws(&c);
    assert_eq!(a.audience, "custom-aud");
    assert_eq!(a.sts_endpoint.as_str(), "http://127.0.0.1:4566/");
    assert_eq!(a.duration.as_secs(), 900);
    assert_eq!(a.session_name.as_deref(), Some("ci@acme"));
    assert_eq!(a.policy_arns, ["arn:aws:iam::aws:policy/ReadOnlyAccess"]);
    assert!(
        matches!(&c.credentials[1].kind, CredentialKind::AwsWebIdentity(b) if b.audience == "mine")
    );
}

#[test]
fn each_bad_aws_value_is_named_with_sts_limits() {
    let src = "[[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\nrole_arn = \"arn:aws:iam::123:role/x\"\nregion = \"US-EAST\"\nsession_name = \"has space\"\nduration = \"5m\"\npolicy = \"{not json\"\npolicy_arns = [\"arn:aws:iam::aws:role/x\"]\nsts_endpoint = \"http://sts.example.com\"\naudience = [\"a\", \"b\"]\n";
    let m = messages(src).join("\n");
    for want in [
        "credential[0].role_arn: expected an IAM role ARN",
        "credential[0].region: expected an AWS region",
        "credential[0].session_name: expected 2 to 64 characters",
        "credential[0].duration: expected whole seconds from 15m to 12h",
        "credential[0].policy: expected a JSON policy document; it does not parse",
        "credential[0].policy_arns: expected IAM policy ARNs",
        "credential[0].sts_endpoint: expected an https:// URL",
        "credential[0].audience: aws-web-identity takes one audience",
    ] {
        assert!(m.contains(want), "missing {want:?} in:\n{m}");
    }
    let m =
        messages("[[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\n").join("\n");
    assert!(
        m.contains("needs `role_arn`") && m.contains("needs `region`"),
        "{m}"
    );
    let m =
        messages("[[credential]]\nname = \"p\"\nexchange = \"passthrough\"\nrole_arn = \"x\"\n")
            .join("\n");
    assert!(
        m.contains("`role_arn` does not apply to a credential with exchange = \"passthrough\""),
        "{m}"
    );
    let m = messages(&format!("[[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{ROLE}\"\nregion = \"us-east-1\"\nduration = \"13h\"\nscope = [\"x\"]\n")).join("\n");
    assert!(
        m.contains("duration: expected whole seconds from 15m to 12h"),
        "{m}"
    );
    assert!(m.contains("`scope` does not apply"), "{m}");
}

#[test]
fn a_route_naming_aws_keys_signs_and_takes_no_header_template() {
    let base = format!("[[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{ROLE}\"\nregion = \"us-east-1\"\n[[credential]]\nname = \"tok\"\nexchange = \"passthrough\"\n");
    let c = parse(&format!("{base}[[route]]\nurl = \"https://s3.eu-west-1.amazonaws.com/\"\ncredential = \"aws\"\n[[route]]\nurl = \"http://127.0.0.1:5000/\"\ncredential = \"aws\"\naws_service = \"sts\"\naws_region = \"us-east-1\"\n[[route]]\nurl = \"https://*.amazonaws.com/\"\ncredential = \"aws\"\n")).expect("config");
    assert_eq!(c.routes[0].aws, Some(crate::route::AwsSigning::default()));
    assert_eq!(
        c.routes[1].aws,
        Some(crate::route::AwsSigning {
            service: Some("sts".into()),
            region: Some("us-east-1".into())
        })
    );
    assert!(c.routes[2].aws.is_some());

    let m = messages(&format!("{base}[[route]]\nurl = \"https://s3.amazonaws.com/\"\ncredential = \"aws\"\nheader = \"x-token\"\nformat = \"Token {{token}}\"\n[[route]]\nurl = \"http://127.0.0.1:5000/\"\ncredential = \"aws\"\n[[route]]\nurl = \"https://api.example.com/\"\ncredential = \"tok\"\naws_region = \"us-east-1\"\n[[route]]\nurl = \"http://127.0.0.1:5001/\"\ncredential = \"aws\"\naws_service = \"STS\"\naws_region = \"us-east-1\"\n")).join("\n");
    for want in [
        "route[0].header: credential \"aws\" holds AWS keys, so this route signs each request with SigV4 and sends no header; remove `header`",
        "route[0].format: credential \"aws\" holds AWS keys",
        "route[1].url: lanyard cannot tell the AWS service and region from host 127.0.0.1 (it reads <service>.<region>.amazonaws.com); set aws_region (and aws_service, else the client's own signature names the service) on this route",
        "route[2].aws_region: `aws_region` is for routes whose credential is an aws-web-identity one",
        "route[3].url: aws_service and aws_region are lower-case names",
    ] {
        assert!(m.contains(want), "missing {want:?} in:\n{m}");
    }
}

#[test]
fn a_secrets_manager_read_takes_its_region_from_the_aws_credential() {
    let base = format!("[[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{ROLE}\"\nregion = \"eu-west-3\"\n");
    let c = parse(&format!("{base}[[credential]]\nname = \"db\"\nfrom = \"aws\"\nsecret = \"ci/db#password\"\nversion_stage = \"AWSPREVIOUS\"\n[[credential]]\nname = \"raw\"\nfrom = \"aws\"\nsecret = \"arn:aws:secretsmanager:eu-west-3:123456789012:secret:ci/raw-AbCdEf\"\nsecrets_endpoint = \"http://127.0.0.1:5000\"\nrefresh = \"1m\"\n")).expect("config");
    match &c.credentials[1].kind {
        CredentialKind::AwsSecret(s) => {
            assert_eq!(s.from, "aws");
            assert_eq!(s.secret_id, "ci/db");
            assert_eq!(s.field.as_deref(), Some("password"));
            assert_eq!(s.version_stage.as_deref(), Some("AWSPREVIOUS"));
            assert_eq!(s.region, "eu-west-3");
            assert_eq!(
                s.endpoint.as_str(),
                "https://secretsmanager.eu-west-3.amazonaws.com/"
            );
            assert_eq!(s.refresh, crate::config::DEFAULT_KV_REFRESH);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.credentials[1].kind.label(), "aws-secrets-manager");
    assert!(
        matches!(&c.credentials[2].kind, CredentialKind::AwsSecret(s) if s.field.is_none() && s.endpoint.as_str() == "http://127.0.0.1:5000/" && s.refresh.as_secs() == 60)
    );

    let m = messages(&format!("{base}[[credential]]\nname = \"db\"\nfrom = \"aws\"\nsecret = \"has space#x\"\nversion_stage = \"bad stage!\"\nsecrets_endpoint = \"http://sm.example.com\"\n[[credential]]\nname = \"v\"\nexchange = \"vault\"\naddress = \"https://vault.example.com\"\nrole = \"ci\"\n[[credential]]\nname = \"kv\"\nfrom = \"v\"\nsecret = \"secret/data/x#y\"\nversion_stage = \"AWSCURRENT\"\n")).join("\n");
    for want in [
        "credential[1].secret: expected a secret name",
        "credential[1].version_stage: expected a version stage label",
        "credential[1].secrets_endpoint: expected an https:// URL",
        "credential[3].version_stage: `version_stage` applies only to a Secrets Manager read",
    ] {
        assert!(m.contains(want), "missing {want:?} in:\n{m}");
    }
    let m = messages(&format!(
        "{base}[[credential]]\nname = \"db\"\nfrom = \"aws\"\n"
    ))
    .join("\n");
    assert!(m.contains("a Secrets Manager read needs `secret"), "{m}");
}

#[test]
fn the_container_endpoint_is_off_by_default_and_on_for_one_credential_at_most() {
    let cred = |name: &str, extra: &str| {
        format!("[[credential]]\nname = \"{name}\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{ROLE}\"\nregion = \"us-east-1\"\n{extra}")
    };
    let c = parse(&cred("aws", "")).expect("config");
    assert!(!aws(&c).container_endpoint);
    assert_eq!(crate::config::container_credential(&c.credentials), None);
    let c = parse(&cred("aws", "container_endpoint = true\n")).expect("config");
    assert!(aws(&c).container_endpoint);
    assert_eq!(
        crate::config::container_credential(&c.credentials).as_deref(),
        Some("aws")
    );
    let two = format!(
        "{}{}",
        cred("a", "container_endpoint = true\n"),
        cred("b", "container_endpoint = true\n")
    );
    let m = messages(&two).join("\n");
    assert!(
        m.contains("credential[1].container_endpoint: credential \"a\" already serves the container-credentials endpoint"),
        "{m}"
    );
    let m = messages(&cred("aws", "container_endpoint = \"yes\"\n")).join("\n");
    assert!(m.contains("container_endpoint"), "{m}");
    let vault = "[[credential]]\nname = \"v\"\nexchange = \"vault\"\naddress = \"https://v.example\"\nrole = \"r\"\ncontainer_endpoint = true\n";
    let m = messages(vault).join("\n");
    assert!(
        m.contains("`container_endpoint` does not apply to a credential with exchange = \"vault\""),
        "{m}"
    );
}
