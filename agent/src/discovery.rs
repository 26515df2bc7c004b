//! One OpenID discovery, for the login IdP and the OAuth token services:
//! the `openidconnect` crate's (`<issuer>/.well-known/openid-configuration`,
//! whose `issuer` must be the configured one, and the JWKS it names), with
//! its HTTP through our own client (`http/`), so the transport rule,
//! timeouts and size caps are the same as everywhere else. A token service
//! that is no OpenID provider falls back to RFC 8414 (`exchange/oauth.rs`).

use std::future::Future;
use std::pin::Pin;

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AsyncHttpClient, DeviceAuthorizationUrl, HttpRequest, HttpResponse,
    IssuerUrl, ProviderMetadata, RevocationUrl,
};
use serde::{Deserialize, Serialize};

use crate::http::{HttpClient, HttpError};

/// What discovery answers besides the core fields.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ExtraMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<RevocationUrl>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

pub type DiscoveryError = openidconnect::DiscoveryError<HttpError>;

/// `openidconnect` over our HTTP client.
pub struct Transport<'a>(pub &'a HttpClient);

impl<'c> AsyncHttpClient<'c> for Transport<'_> {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.0.request_raw(request))
    }
}

/// OpenID discovery of `issuer`, and the JWKS the document names.
pub async fn discover(http: &HttpClient, issuer: IssuerUrl) -> Result<Metadata, DiscoveryError> {
    Metadata::discover_async(issuer, &Transport(http)).await
}
