//! The `[upstream]`, `[audit]` and `[rotation]` tables.

use std::path::{Path, PathBuf};

use super::model::{AuditConfig, RotationConfig, UpstreamConfig};
use super::raw::{Diag, Table};
use super::values::duration;

/// The keys each table accepts (also the rows `docs/config.md` must have).
pub(crate) const UPSTREAM_KEYS: &[&str] = &["extra_ca"];
pub(crate) const AUDIT_KEYS: &[&str] = &["file", "trace_headers"];
pub(crate) const ROTATION_KEYS: &[&str] = &["fraction", "jitter", "retry_min", "retry_max"];

pub(super) fn upstream(
    d: &mut Diag<'_>,
    t: Option<Table<'_>>,
    base: &Path,
) -> Option<UpstreamConfig> {
    let Some(mut t) = t else {
        return Some(UpstreamConfig::default());
    };
    let mut out = UpstreamConfig::default();
    if let Some(ca) = t.string(d, "extra_ca") {
        // Relative to the config file: the CA travels with the config.
        let p = base.join(&ca.v);
        if p.is_file() {
            out.extra_ca = Some(p);
        } else {
            d.err(&ca.span, &t.key("extra_ca"), format!("expected a PEM file; {} does not exist (relative paths are from the config file's folder)", p.display()));
        }
    }
    t.finish(d, UPSTREAM_KEYS);
    Some(out)
}

pub(super) fn audit(d: &mut Diag<'_>, t: Option<Table<'_>>) -> Option<AuditConfig> {
    let Some(mut t) = t else {
        return Some(AuditConfig::default());
    };
    let file = t.string(d, "file").map(|f| PathBuf::from(f.v));
    let trace = t.bool(d, "trace_headers").map(|b| b.v).unwrap_or(false);
    t.finish(d, AUDIT_KEYS);
    Some(AuditConfig {
        file,
        trace_headers: trace,
    })
}

pub(super) fn rotation(d: &mut Diag<'_>, t: Option<Table<'_>>) -> Option<RotationConfig> {
    let mut out = RotationConfig::default();
    let Some(mut t) = t else { return Some(out) };
    if let Some(f) = t.number(d, "fraction") {
        if (0.1..=0.95).contains(&f.v) {
            out.fraction = f.v;
        } else {
            d.err(
                &f.span,
                &t.key("fraction"),
                format!(
                    "expected a share of the lifetime between 0.1 and 0.95, got {}",
                    f.v
                ),
            );
        }
    }
    if let Some(j) = t.number(d, "jitter") {
        if (0.0..=0.25).contains(&j.v) {
            out.jitter = j.v;
        } else {
            d.err(
                &j.span,
                &t.key("jitter"),
                format!("expected 0 to 0.25, got {}", j.v),
            );
        }
    }
    if let Some(v) = t.string(d, "retry_min") {
        if let Some(dur) = duration(d, &t.key("retry_min"), &v) {
            out.retry_min = dur;
        }
    }
    if let Some(v) = t.string(d, "retry_max") {
        if let Some(dur) = duration(d, &t.key("retry_max"), &v) {
            out.retry_max = dur;
        }
    }
    if out.retry_max < out.retry_min {
        d.err(
            &t.span,
            &t.key("retry_max"),
            "retry_max must not be smaller than retry_min",
        );
    }
    if out.fraction + out.jitter >= 1.0 {
        d.err(
            &t.span,
            &t.key("jitter"),
            "fraction + jitter must stay below 1, or a refresh could be scheduled after expiry",
        );
    }
    t.finish(d, ROTATION_KEYS);
    Some(out)
}
