//! Which service and region an AWS host means, read from its name:
//! `<service>.<region>.amazonaws.com`, S3's shapes (`s3.<region>…`,
//! `<bucket>.s3.<region>…`, the legacy `s3-<region>…`, dual-stack), FIPS
//! endpoints, and global endpoints with no region (`sts.amazonaws.com`,
//! `iam.amazonaws.com`), which sign for `us-east-1`. A route's
//! `aws_service` / `aws_region` override both (and are needed for any
//! other host, such as a test endpoint on loopback).

/// Global endpoints sign for this region.
pub const GLOBAL_REGION: &str = "us-east-1";

const SUFFIXES: &[&str] = &[".amazonaws.com", ".amazonaws.com.cn"];

/// `(service, region)` for an AWS host, or `None` for any other host.
pub fn derive(host: &str) -> Option<(String, String)> {
    let host = host.to_ascii_lowercase();
    let rest = SUFFIXES.iter().find_map(|s| host.strip_suffix(s))?;
    let labels: Vec<&str> = rest.split('.').filter(|l| !l.is_empty()).collect();
    let (last, before) = labels.split_last()?;
    let (region, names) = if is_region(last) {
        (Some(*last), before)
    } else {
        (None, &labels[..])
    };
    // S3: the label nearest the suffix that is `s3` or `s3-<region>`;
    // anything before it is a bucket name.
    for l in names.iter().rev() {
        if *l == "s3" || *l == "s3-external-1" {
            return Some(("s3".into(), region.unwrap_or(GLOBAL_REGION).into()));
        }
        if let Some(r) = l.strip_prefix("s3-").filter(|r| is_region(r)) {
            return Some(("s3".into(), region.unwrap_or(r).into()));
        }
    }
    let mut service = *names.last()?;
    if service == "dualstack" {
        service = names.get(names.len().checked_sub(2)?)?;
    }
    let service = service.strip_suffix("-fips").unwrap_or(service);
    if service.is_empty() {
        return None;
    }
    Some((service.into(), region.unwrap_or(GLOBAL_REGION).into()))
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-5`,
/// `cn-north-1`: letters, a dash-separated middle, a number at the end.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_and_region_come_from_the_host() {
        for (host, service, region) in [
            ("sts.amazonaws.com", "sts", "us-east-1"),
            ("iam.amazonaws.com", "iam", "us-east-1"),
            ("sts.eu-west-1.amazonaws.com", "sts", "eu-west-1"),
            (
                "secretsmanager.us-gov-west-1.amazonaws.com",
                "secretsmanager",
                "us-gov-west-1",
            ),
            ("s3.amazonaws.com", "s3", "us-east-1"),
            ("s3.eu-central-1.amazonaws.com", "s3", "eu-central-1"),
            (
                "my-bucket.s3.eu-central-1.amazonaws.com",
                "s3",
                "eu-central-1",
            ),
            ("my.dotted.bucket.s3.amazonaws.com", "s3", "us-east-1"),
            ("s3-backups.s3.us-west-2.amazonaws.com", "s3", "us-west-2"),
            ("s3-backups.s3.amazonaws.com", "s3", "us-east-1"),
            ("bucket.s3-us-west-2.amazonaws.com", "s3", "us-west-2"),
            ("s3.dualstack.ap-south-1.amazonaws.com", "s3", "ap-south-1"),
            (
                "ec2.dualstack.ap-south-1.amazonaws.com",
                "ec2",
                "ap-south-1",
            ),
            ("kms-fips.us-east-2.amazonaws.com", "kms", "us-east-2"),
            (
                "abc123.execute-api.eu-west-3.amazonaws.com",
                "execute-api",
                "eu-west-3",
            ),
            ("STS.US-EAST-2.AMAZONAWS.COM", "sts", "us-east-2"),
            ("s3.cn-north-1.amazonaws.com.cn", "s3", "cn-north-1"),
        ] {
            assert_eq!(
                derive(host),
                Some((service.to_owned(), region.to_owned())),
                "{host}"
            );
        }
        for host in [
            "127.0.0.1",
            "localhost",
            "amazonaws.com",
            "example.com",
            "amazonaws.com.evil.example",
            "sts.amazonaws.com.evil.example",
            "notamazonaws.com",
        ] {
            assert_eq!(derive(host), None, "{host}");
        }
    }
}
