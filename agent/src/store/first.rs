//! The first exchange of each credential, at start: a token service that is
//! briefly unavailable (no connection, a timeout, 429, 5xx) is tried again
//! with bounded backoff, honouring `Retry-After`; a refusal fails at once.
//! Later exchanges have their own schedule (`[rotation] retry_min`).

use std::time::Duration;

use crate::exchange::{ExchangeError, Issued};
use crate::http::HttpError;

use super::CredentialSource;

/// Why 4: a restart or a deploy of the token service takes seconds; four
/// attempts over about seven seconds ride that out without making a job
/// with a broken config wait long for its error.
pub const ATTEMPTS: u32 = 4;
/// The first retry's delay; doubles each time (1 s, 2 s, 4 s).
const BACKOFF: Duration = Duration::from_secs(1);
/// The most a `Retry-After` may make a start wait per attempt.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(10);

/// Whether an error is worth another attempt, and after how long (`None`:
/// not retried; `Some(None)`: the backoff; `Some(Some(d))`: the service's
/// own `Retry-After`, capped).
pub fn retry_delay(e: &ExchangeError) -> Option<Option<Duration>> {
    match e {
        ExchangeError::Http(
            HttpError::Transport { .. } | HttpError::Timeout { .. } | HttpError::Body { .. },
        ) => Some(None),
        ExchangeError::Refused { status, .. } if *status == 429 || *status >= 500 => Some(None),
        ExchangeError::Busy { retry_after, .. } => Some(Some((*retry_after).min(RETRY_AFTER_CAP))),
        _ => None,
    }
}

fn service_of(e: &ExchangeError) -> String {
    match e {
        ExchangeError::Refused { service, .. } => service.clone(),
        ExchangeError::Busy { refused, .. } => service_of(refused),
        _ => "the token service".into(),
    }
}

/// `source.obtain()`, tried up to [`ATTEMPTS`] times while it fails for a
/// reason [`retry_delay`] retries.
pub async fn obtain(name: &str, source: &dyn CredentialSource) -> Result<Issued, ExchangeError> {
    let mut backoff = BACKOFF;
    let mut attempt = 1;
    loop {
        let e = match source.obtain().await {
            Ok(i) => return Ok(i),
            Err(e) => e,
        };
        let Some(delay) = retry_delay(&e) else {
            return Err(e);
        };
        if attempt >= ATTEMPTS {
            return Err(ExchangeError::Retried {
                service: service_of(&e),
                attempts: attempt,
                last: Box::new(e),
            });
        }
        let wait = delay.unwrap_or(backoff);
        eprintln!(
            "lanyard: credential {name}: {e}; trying again in {} (attempt {} of {ATTEMPTS})",
            humantime::format_duration(wait),
            attempt + 1
        );
        tokio::time::sleep(wait).await;
        backoff *= 2;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16) -> ExchangeError {
        ExchangeError::Refused {
            service: "https://sts.test/token".into(),
            status,
            detail: "no".into(),
            code: None,
        }
    }

    #[test]
    fn only_unavailability_is_retried() {
        assert_eq!(retry_delay(&refused(503)), Some(None));
        assert_eq!(retry_delay(&refused(429)), Some(None));
        assert_eq!(retry_delay(&refused(400)), None);
        assert_eq!(retry_delay(&refused(401)), None);
        assert_eq!(retry_delay(&refused(403)), None);
        let busy = ExchangeError::Busy {
            retry_after: Duration::from_secs(3600),
            refused: Box::new(refused(503)),
        };
        assert_eq!(retry_delay(&busy), Some(Some(RETRY_AFTER_CAP)), "capped");
        let timeout = ExchangeError::Http(HttpError::Timeout {
            endpoint: "x".into(),
            limit: Duration::from_secs(30),
        });
        assert_eq!(retry_delay(&timeout), Some(None));
        let insecure = ExchangeError::Http(HttpError::Insecure("x".into()));
        assert_eq!(retry_delay(&insecure), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        use crate::http::retry_after;
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a past date: now"
        );
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let d = retry_after(&soon).expect("a date");
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(retry_after("soon"), None);
    }
}
