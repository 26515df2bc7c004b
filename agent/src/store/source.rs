//! The real credential source: an [`Exchanger`] with the identity source,
//! the HTTP client and, for KV reads, the parent vault credential's state.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{BoxFut, CredentialSource, SlotState};
use crate::exchange::{ExchangeError, Exchanger, Issued, Revoked};
use crate::http::HttpClient;
use crate::identity::IdentitySource;
use crate::secret::Credential;

pub struct ExchangeSource {
    pub exchanger: Exchanger,
    pub http: HttpClient,
    pub identity: Arc<IdentitySource>,
    pub parent: Option<watch::Receiver<SlotState>>,
}

impl CredentialSource for ExchangeSource {
    fn obtain(&self) -> BoxFut<'_, Result<Issued, ExchangeError>> {
        Box::pin(async move {
            let id = if self.exchanger.needs_identity() {
                Some(
                    self.identity
                        .token(&self.http, self.exchanger.identity_audience())
                        .await?,
                )
            } else {
                None
            };
            let parent = match (&self.parent, self.exchanger.parent()) {
                (Some(rx), Some(pname)) => {
                    let st = rx.borrow().clone();
                    match super::valid(pname, &st) {
                        Ok(c) => Some(c.value.clone()),
                        Err(e) => {
                            return Err(ExchangeError::Parent {
                                name: self.exchanger.name.clone(),
                                parent: pname.to_owned(),
                                reason: Box::new(e),
                            })
                        }
                    }
                }
                _ => None,
            };
            self.exchanger
                .obtain(&self.http, id.as_ref(), parent.as_ref())
                .await
        })
    }

    fn renew<'a>(
        &'a self,
        current: &'a Credential,
    ) -> BoxFut<'a, Result<Option<Issued>, ExchangeError>> {
        Box::pin(self.exchanger.renew(&self.http, current))
    }

    fn revoke<'a>(&'a self, value: &'a Credential) -> BoxFut<'a, Result<Revoked, ExchangeError>> {
        Box::pin(async move {
            let id = if self.exchanger.revokes_with_identity() {
                Some(
                    self.identity
                        .token(&self.http, self.exchanger.identity_audience())
                        .await?,
                )
            } else {
                None
            };
            self.exchanger.revoke(&self.http, value, id.as_ref()).await
        })
    }

    fn reread_interval(&self) -> Option<Duration> {
        self.exchanger.reread_interval()
    }

    fn revocable(&self) -> bool {
        self.exchanger.revocable()
    }
}
