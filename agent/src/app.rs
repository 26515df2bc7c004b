//! Wiring: config → identity → exchanges → store. The CLI calls this; the
//! proxy (data plane) will read from the returned store.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::env::Env;
use crate::exchange::{ExchangeError, Exchanger};
use crate::http::{HttpClient, HttpError};
use crate::identity::{IdentityError, IdentitySource, IdentityToken, JobInfo, UnverifiedClaims};
use crate::route::SessionIdentity;
use crate::store::{ExchangeSource, StartError, Store};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("upstream TLS: {0}")]
    Http(#[from] HttpError),
    #[error("credential {name:?}: {source}")]
    Prepare { name: String, source: ExchangeError },
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("corporate proxy: {0}")]
    UpstreamProxy(#[from] crate::outbound::ProxyEnvError),
}

/// The running control plane.
#[derive(Debug)]
pub struct Control {
    pub identity: Arc<IdentitySource>,
    /// The first identity token's claims (unverified), for the audit header.
    pub job: JobInfo,
    pub http: HttpClient,
    pub store: Arc<Store>,
    /// Who the session acts as, for routes limited to an identity kind.
    pub session_identity: SessionIdentity,
    /// Credentials not obtained because only CI-only routes use them and
    /// this is a developer login.
    pub skipped: Vec<String>,
    /// The corporate proxy every upstream connection goes through, if any.
    pub upstream_proxy: Arc<crate::outbound::UpstreamProxy>,
}

/// `alice@acme.test (sub alice)` for a login; `github (sub repo:…)` for CI.
pub fn session_identity(source: &IdentitySource, claims: &UnverifiedClaims) -> SessionIdentity {
    let sub = claims.text("sub").unwrap_or_else(|| "no sub".into());
    let who = if source.platform.is_developer() {
        match claims.text("email") {
            Some(e) => format!("{e} (sub {sub})"),
            None => sub,
        }
    } else {
        format!("{} (sub {sub})", source.platform.name())
    };
    SessionIdentity {
        developer: source.platform.is_developer(),
        // Claims come from outside: no control characters in a header.
        who: who.chars().filter(|c| !c.is_control()).collect(),
    }
}

/// Identity, then every credential's first exchange, in config order. Any
/// failure stops the start: nothing is served without all credentials.
pub async fn start(
    cfg: &Config,
    env: &dyn Env,
    cancel: CancellationToken,
) -> Result<Control, AppError> {
    let upstream_proxy = Arc::new(crate::outbound::UpstreamProxy::from_env(env)?);
    upstream_proxy.log();
    let http = HttpClient::new(cfg.upstream.extra_ca.as_deref(), &upstream_proxy)?;
    let identity = Arc::new(IdentitySource::from_config(&cfg.identity, env)?);
    let first: IdentityToken = identity.token(&http, None).await?;
    let job = JobInfo::from_claims(identity.platform.name(), &first.claims);
    let who = session_identity(&identity, &first.claims);
    drop(first);
    let skipped = if identity.platform.is_developer() {
        cfg.ci_only_credentials()
    } else {
        Vec::new()
    };
    let mut store = Store::new(cfg.rotation, cancel);
    for c in cfg
        .credentials
        .iter()
        .filter(|c| !skipped.contains(&c.name))
    {
        let exchanger = Exchanger::prepare(c, &cfg.credentials, &http, env)
            .await
            .map_err(|e| AppError::Prepare {
                name: c.name.clone(),
                source: e,
            })?;
        let parent = exchanger.parent().and_then(|p| store.watch(p));
        let src = ExchangeSource {
            exchanger,
            http: http.clone(),
            identity: identity.clone(),
            parent,
        };
        store.add(&c.name, Arc::new(src)).await?;
    }
    Ok(Control {
        identity,
        job,
        http,
        store: Arc::new(store),
        session_identity: who,
        skipped,
        upstream_proxy,
    })
}
