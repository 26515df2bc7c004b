//! How `start` hands the job its environment: `sh` (export lines on
//! stdout), `dotenv` (a private file) or `github` (`$GITHUB_ENV`, with the
//! proxy secret masked first).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{open_private, ENV_FILE};
use crate::env::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Export {
    Sh,
    Dotenv,
    Github,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0} has a line break; refusing to export it")]
    LineBreak(String),
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--export github needs GITHUB_ENV (set by the GitHub runner)")]
    NoGithubEnv,
    #[error("GITHUB_ENV {path}: {source}")]
    GithubEnv {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

pub(super) fn export(
    env: &dyn Env,
    dir: &Path,
    how: Export,
    env_file: Option<&Path>,
    vars: &[(String, String)],
    secret: &str,
) -> Result<(), ExportError> {
    if let Some((k, _)) = vars
        .iter()
        .find(|(_, v)| v.contains('\n') || v.contains('\r'))
    {
        return Err(ExportError::LineBreak(k.clone()));
    }
    match how {
        Export::Sh => {
            let mut out = String::new();
            for (k, v) in vars {
                out.push_str(&format!("export {k}={}\n", sh_quote(v)));
            }
            print!("{out}");
        }
        Export::Dotenv => {
            let path = env_file
                .map(Path::to_owned)
                .unwrap_or_else(|| dir.join(ENV_FILE));
            let file = |source| ExportError::File {
                path: path.clone(),
                source,
            };
            let mut f = open_private(&path, false).map_err(file)?;
            for (k, v) in vars {
                writeln!(f, "{k}={v}").map_err(file)?;
            }
            println!("{}", path.display());
        }
        Export::Github => {
            let path = env
                .non_empty("GITHUB_ENV")
                .ok_or(ExportError::NoGithubEnv)?;
            let file = |source| ExportError::GithubEnv {
                path: path.clone(),
                source,
            };
            // Mask first, so no later log line can show the secret, nor
            // the per-job values that stand in for credentials.
            println!("::add-mask::{secret}");
            for v in also_masked(vars) {
                println!("::add-mask::{v}");
            }
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .map_err(file)?;
            for (k, v) in vars {
                writeln!(f, "{k}={v}").map_err(file)?;
            }
        }
    }
    Ok(())
}

/// Exported values that are per-job stand-ins for credentials: worthless
/// outside this job's lanyard, yet nothing a log should show.
const MASKED: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "IDENTITY_HEADER",
];

fn also_masked(vars: &[(String, String)]) -> impl Iterator<Item = &str> {
    vars.iter()
        .filter(|(k, v)| MASKED.contains(&k.as_str()) && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_secrets_and_the_identity_header_are_masked_too() {
        let vars = vec![
            ("HTTPS_PROXY".to_owned(), "http://x".to_owned()),
            ("AWS_ACCESS_KEY_ID".to_owned(), "ASIALANYARD".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "sk".to_owned()),
            ("AWS_SESSION_TOKEN".to_owned(), "st".to_owned()),
            ("IDENTITY_HEADER".to_owned(), "ih".to_owned()),
        ];
        assert_eq!(also_masked(&vars).collect::<Vec<_>>(), ["sk", "st", "ih"]);
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }

    #[test]
    fn a_value_with_a_line_break_is_refused_by_name() {
        let e = crate::env::MapEnv::new([("GITHUB_ENV", "/nonexistent/never-written")]);
        let vars = vec![
            ("A".to_owned(), "fine".to_owned()),
            ("B".to_owned(), "two\nlines".to_owned()),
        ];
        let err = export(
            &e,
            Path::new("/nonexistent"),
            Export::Github,
            None,
            &vars,
            "s",
        )
        .expect_err("a line break must be refused");
        assert_eq!(err.to_string(), "B has a line break; refusing to export it");
    }
}
