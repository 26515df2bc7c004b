//! The developer login's refresh token on disk:
//! `$XDG_CONFIG_HOME/lanyard/login-<hash>.json` (else `~/.config/lanyard/`),
//! one file per issuer and client. The folder is 0700 and the file 0600,
//! written atomically (a private temporary file, then rename). A file that
//! group or others can read, or that another user owns, is refused: the
//! token in it may already be known to someone else.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::LoginConfig;
use crate::env::Env;
use crate::secret::Secret;

/// Why: the file holds one token and a few names; anything larger is not ours.
const MAX_FILE_BYTES: u64 = 64 * 1024;
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot find a config folder for the refresh token: neither XDG_CONFIG_HOME nor HOME is set")]
    NoHome,
    #[error("not logged in to {issuer} (client {client_id}): run `lanyard login` (no {})", path.display())]
    NotLoggedIn {
        issuer: String,
        client_id: String,
        path: PathBuf,
    },
    #[error("refusing {}: it is readable or writable by group or others (mode {mode:04o}); the refresh token in it may be known to someone else. Run `lanyard logout` and `lanyard login` again (or `chmod 600` it if you are sure)", path.display())]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("refusing {}: it is owned by uid {owner}, not by you (uid {me})", path.display())]
    NotOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("refusing {}: it is a symbolic link or not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// The cause: an I/O error, mostly; also a lock, a task or the
    /// random source that failed.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `reason` is in our own words, never serde's: serde's message may
    /// quote a field's value, and the value may be the refresh token. So
    /// the JSON error is reduced to its line and column, not kept.
    #[error("{} is not a lanyard login file ({reason}); run `lanyard logout` and `lanyard login` again", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// What the file holds. No `Debug`: it carries the refresh token.
pub struct Stored {
    pub issuer: String,
    pub client_id: String,
    pub refresh_token: Secret,
    pub subject: String,
    pub email: Option<String>,
    /// The nonce of the original sign-in; refreshed ID tokens that carry
    /// one must carry this one.
    pub nonce: Option<String>,
    pub saved_at: u64,
}

/// The file as read. The refresh token is parsed straight into a
/// [`Secret`]: no plain `String` holds it on the way.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    issuer: String,
    client_id: String,
    refresh_token: Secret,
    subject: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    saved_at: u64,
}

/// The file as written: the same fields, borrowed from [`Stored`], so the
/// refresh token is not copied before serde writes it into the (zeroized)
/// output buffer.
#[derive(Serialize)]
struct ToDisk<'a> {
    version: u32,
    issuer: &'a str,
    client_id: &'a str,
    refresh_token: &'a str,
    subject: &'a str,
    email: Option<&'a str>,
    nonce: Option<&'a str>,
    saved_at: u64,
}

/// The login file for one issuer and client.
#[derive(Debug, Clone)]
pub struct TokenFile {
    pub path: PathBuf,
    dir: PathBuf,
    issuer: String,
    client_id: String,
}

/// `$XDG_CONFIG_HOME/lanyard` (when absolute), else `$HOME/.config/lanyard`.
pub fn config_dir(env: &dyn Env) -> Result<PathBuf, StoreError> {
    if let Some(x) = env.non_empty("XDG_CONFIG_HOME") {
        let p = PathBuf::from(x);
        if p.is_absolute() {
            return Ok(p.join("lanyard"));
        }
    }
    match env.non_empty("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("lanyard")),
        None => Err(StoreError::NoHome),
    }
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

impl TokenFile {
    pub fn for_login(cfg: &LoginConfig, env: &dyn Env) -> Result<TokenFile, StoreError> {
        let issuer = cfg.issuer.as_str().trim_end_matches('/').to_owned();
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{issuer}\n{}", cfg.client_id).as_bytes(),
        );
        let tag: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let dir = config_dir(env)?;
        Ok(TokenFile {
            path: dir.join(format!("login-{tag}.json")),
            dir,
            issuer,
            client_id: cfg.client_id.clone(),
        })
    }

    fn io(
        &self,
        path: &Path,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Io {
            path: path.to_owned(),
            cause: e.into(),
        }
    }

    /// Create the folder (0700) or check the existing one is ours and
    /// private; tighten it when it is ours but open.
    pub fn check_dir(&self) -> Result<(), StoreError> {
        if !self.dir.exists() {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        }
        let meta = std::fs::symlink_metadata(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        if !meta.is_dir() {
            return Err(StoreError::NotAFile {
                path: self.dir.clone(),
            });
        }
        if meta.uid() != uid() {
            return Err(StoreError::NotOwner {
                path: self.dir.clone(),
                owner: meta.uid(),
                me: uid(),
            });
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| self.io(&self.dir, e))?;
        }
        Ok(())
    }

    /// Hold an exclusive lock (a `.lock` file next to the token) while a
    /// refresh or a sign-in rewrites the file.
    pub async fn lock(&self) -> Result<nix::fcntl::Flock<File>, StoreError> {
        self.check_dir()?;
        let p = self.path.with_extension("lock");
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&p)
                .map_err(|e| me.io(&p, e))?;
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| me.io(&p, e))
        })
        .await
        .map_err(|e| self.io(&self.path, e))?
    }

    fn open_checked(&self, strict: bool) -> Result<Option<File>, StoreError> {
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // O_NOFOLLOW on a symlink: ELOOP.
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(StoreError::NotAFile {
                    path: self.path.clone(),
                })
            }
            Err(e) => return Err(self.io(&self.path, e)),
        };
        // Checked on the open file, so a swap after the check cannot matter.
        let meta = f.metadata().map_err(|e| self.io(&self.path, e))?;
        if !meta.is_file() {
            return Err(StoreError::NotAFile {
                path: self.path.clone(),
            });
        }
        if meta.uid() != uid() {
            return Err(StoreError::NotOwner {
                path: self.path.clone(),
                owner: meta.uid(),
                me: uid(),
            });
        }
        if strict && meta.mode() & 0o077 != 0 {
            return Err(StoreError::TooOpen {
                path: self.path.clone(),
                mode: meta.mode() & 0o7777,
            });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                reason: format!("larger than {MAX_FILE_BYTES} bytes"),
            });
        }
        Ok(Some(f))
    }

    fn parse(&self, mut f: File) -> Result<Stored, StoreError> {
        use std::io::Read;
        let mut bytes = zeroize::Zeroizing::new(Vec::new());
        f.read_to_end(&mut bytes)
            .map_err(|e| self.io(&self.path, e))?;
        let d: OnDisk = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            // serde's message names a line and column, never the value.
            reason: format!("bad JSON at line {} column {}", e.line(), e.column()),
        })?;
        if d.version != FORMAT_VERSION {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                reason: format!("format version {} (expected {FORMAT_VERSION})", d.version),
            });
        }
        if d.issuer != self.issuer || d.client_id != self.client_id {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "it is for {} (client {}), not {} (client {})",
                    d.issuer, d.client_id, self.issuer, self.client_id
                ),
            });
        }
        if d.refresh_token.is_empty() {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                reason: "empty refresh token".into(),
            });
        }
        Ok(Stored {
            issuer: d.issuer,
            client_id: d.client_id,
            refresh_token: d.refresh_token,
            subject: d.subject,
            email: d.email,
            nonce: d.nonce,
            saved_at: d.saved_at,
        })
    }

    /// The stored login, with every check.
    pub fn read(&self) -> Result<Stored, StoreError> {
        match self.open_checked(true)? {
            Some(f) => self.parse(f),
            None => Err(StoreError::NotLoggedIn {
                issuer: self.issuer.clone(),
                client_id: self.client_id.clone(),
                path: self.path.clone(),
            }),
        }
    }

    /// For `logout`: a too-open file is still revoked and removed (that is
    /// the fix), but never one that another user owns.
    pub fn read_for_removal(&self) -> Result<Option<Stored>, StoreError> {
        match self.open_checked(false)? {
            Some(f) => match self.parse(f) {
                Ok(s) => Ok(Some(s)),
                // Unreadable content: nothing to revoke, still remove it.
                Err(StoreError::Corrupt { .. }) => {
                    self.remove()?;
                    Ok(None)
                }
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    }

    /// Atomic replace: a new 0600 file next to it, synced, then renamed.
    pub fn write(&self, s: &Stored) -> Result<(), StoreError> {
        self.check_dir()?;
        let disk = ToDisk {
            version: FORMAT_VERSION,
            issuer: &s.issuer,
            client_id: &s.client_id,
            refresh_token: s.refresh_token.expose(),
            subject: &s.subject,
            email: s.email.as_deref(),
            nonce: s.nonce.as_deref(),
            saved_at: s.saved_at,
        };
        let mut text = crate::wipe::Writer::default();
        serde_json::to_writer_pretty(&mut text, &disk).map_err(|e| self.io(&self.path, e))?;
        let text = text.0;
        // getrandom (without its `std` feature) is no `std::error::Error`.
        let tag = Secret::random(6).map_err(|e| self.io(&self.path, e.to_string()))?;
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tag.expose()
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename is durable once the folder is synced.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(&self.path, e));
        }
        Ok(())
    }

    /// Remove the file; missing is fine. The empty `.lock` file stays:
    /// removing it while another lanyard waits on it would split the lock.
    pub fn remove(&self) -> Result<(), StoreError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(&self.path, e)),
        }
    }
}
