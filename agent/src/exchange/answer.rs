//! Token answers as typed structs. Each secret field is parsed straight into
//! its secret type ([`Credential`]); nothing holds the token in a
//! `serde_json::Value` to be copied out later. Fields are read leniently, as
//! the services' own JSON is: a field of an unexpected type reads as absent
//! (and its value is dropped unkept), so the caller's "no access_token"
//! style messages stay the ones a reader can act on. Non-secret numbers and
//! flags stay JSON values: services send `"3600"` as often as `3600`.
//! Error answers become one message in [`refusal`].

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use url::Url;

use super::ExchangeError;
use crate::http::endpoint;
use crate::identity::truncate;
use crate::secret::redact;
use crate::wipe::WipedJson;

use crate::secret::{Credential, Secret};

/// A JSON string as `T`; any other JSON value reads as `None`.
pub(super) struct Loose<T>(pub Option<T>);

/// A JSON object as `T`; any other JSON value (null, a string, …) reads as
/// `None`. A top-level array never fills a struct by position.
pub(super) struct Obj<T>(pub Option<T>);

/// RFC 6749 §5.1 / RFC 8693 §2.2.1 success answer.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(super) struct TokenAnswer {
    pub access_token: Option<Loose<Credential>>,
    pub token_type: Option<Loose<String>>,
    pub expires_in: Option<Value>,
}

/// Vault login and `renew-self` answer: the `auth` block.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(super) struct VaultAnswer {
    /// `None` when absent; `"auth": null` is a present, empty block.
    #[serde(deserialize_with = "present")]
    pub auth: Option<Obj<VaultAuth>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(super) struct VaultAuth {
    pub client_token: Option<Loose<Credential>>,
    pub lease_duration: Option<Value>,
    pub renewable: Option<Value>,
}

/// A KV v2 read: `data.data` holds the secret's fields. Every string field
/// is a secret (only the configured one is kept); the rest are wiped as
/// they drop.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(super) struct KvAnswer {
    pub data: Option<Obj<KvData>>,
    pub lease_duration: Option<Value>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(super) struct KvData {
    pub data: Option<Obj<BTreeMap<String, Loose<Secret>>>>,
}

/// A field that is there, even as `null` (serde reads a `null` `Option`
/// as absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Parse a token answer. A top-level value that is not an object reads as
/// an empty answer (the caller names the missing field). The error is a
/// problem for `BadAnswer`, and never quotes the body.
pub(super) fn parse<T: for<'de> Deserialize<'de> + Default>(
    body: &[u8],
) -> Result<T, &'static str> {
    match serde_json::from_slice::<Obj<T>>(body) {
        Ok(Obj(v)) => Ok(v.unwrap_or_default()),
        // Every field takes any JSON value, so a data error is a repeated
        // field: two values, and no telling which one the service meant.
        Err(e) if e.is_data() => Err("an object that repeats a field"),
        Err(_) => Err("a body that is not JSON"),
    }
}

/// Reads and drops whatever value is next.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The scalar cases every lenient visitor answers with `None`.
macro_rules! none_for_other_values {
    () => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    };
}

impl<'de, T: From<String>> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: From<String>> Visitor<'de> for V<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<T>, E> {
                Ok(Some(T::from(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Option<T>, E> {
                Ok(Some(T::from(v)))
            }
            none_for_other_values!();
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
                skip_seq(seq).map(|()| None)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
                skip_map(map).map(|()| None)
            }
        }
        d.deserialize_any(V(PhantomData)).map(Loose)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Option<T>, E> {
                Ok(None)
            }
            none_for_other_values!();
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
                skip_seq(seq).map(|()| None)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Some)
            }
        }
        d.deserialize_any(V(PhantomData)).map(Obj)
    }
}

/// [`refusal`] of a whole response: a 429 or 5xx with `Retry-After` keeps
/// it, for the first exchange's retries.
pub(crate) fn refusal_of(
    service: &Url,
    resp: &crate::http::Response,
    secrets: &[&Secret],
) -> ExchangeError {
    let refused = refusal(service, resp.status, &resp.body, secrets);
    let busy = resp.status == http::StatusCode::TOO_MANY_REQUESTS || resp.status.is_server_error();
    match resp.retry_after {
        Some(retry_after) if busy => ExchangeError::Busy {
            retry_after,
            refused: Box::new(refused),
        },
        _ => refused,
    }
}

/// An error answer turned into a message: OAuth `error`/`error_description`,
/// Vault `errors[]`, else the body itself, truncated, tokens redacted.
pub(crate) fn refusal(
    service: &Url,
    status: http::StatusCode,
    body: &[u8],
    secrets: &[&Secret],
) -> ExchangeError {
    let service = endpoint(service);
    // An error body may echo a token; its strings are wiped with it.
    let parsed = WipedJson::parse(body).ok();
    let (code, detail) = match parsed.as_deref() {
        Some(Value::Object(m)) if m.contains_key("error") => {
            // Entra ID adds `error_codes`; its documentation names an error
            // by the first as `AADSTS<n>`, the code doctor explains.
            let aadsts = m
                .get("error_codes")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_u64)
                .map(|n| format!("AADSTS{n}"));
            let error = m.get("error").and_then(Value::as_str).map(str::to_owned);
            let desc = m.get("error_description").and_then(Value::as_str);
            let detail = match (&error, desc) {
                (Some(c), Some(d)) => format!("{c}: {d}"),
                (Some(c), None) => c.clone(),
                _ => m.get("error").map(|e| e.to_string()).unwrap_or_default(),
            };
            (aadsts.or(error), detail)
        }
        Some(Value::Object(m)) if m.contains_key("errors") => {
            let errs: Vec<String> = m
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            e.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| e.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                None,
                if errs.is_empty() {
                    "(no message)".into()
                } else {
                    errs.join("; ")
                },
            )
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let t = text.trim();
            (
                None,
                if t.is_empty() {
                    "(empty body)".into()
                } else {
                    t.to_owned()
                },
            )
        }
    };
    ExchangeError::Refused {
        service,
        status: status.as_u16(),
        detail: truncate(&redact(&detail, secrets), 500),
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_land_in_their_types_and_odd_shapes_read_as_absent() {
        let a: TokenAnswer = parse(
            br#"{"access_token":"canary-at","token_type":"Bearer","expires_in":"60","x":[1,{"y":2}]}"#,
        )
        .expect("answer");
        assert_eq!(
            a.access_token
                .and_then(|t| t.0)
                .map(|t| t.expose().to_owned()),
            Some("canary-at".to_owned())
        );
        let a: TokenAnswer = parse(br#"{"access_token":{"nested":"canary"}}"#).expect("answer");
        assert!(a.access_token.is_some_and(|t| t.0.is_none()));
        // A top-level array does not fill fields by position.
        let a: TokenAnswer = parse(br#"["canary-at","Bearer",60]"#).expect("answer");
        assert!(a.access_token.is_none() && a.token_type.is_none());
        let v: VaultAnswer = parse(br#"{"auth":null}"#).expect("answer");
        assert!(v.auth.is_some_and(|a| a.0.is_none()));
    }

    #[test]
    fn bad_bodies_are_named_without_quoting_them() {
        let e =
            parse::<TokenAnswer>(br#"{"access_token":"canary-1","access_token":"canary-2"}"#).err();
        assert_eq!(e, Some("an object that repeats a field"));
        assert_eq!(
            parse::<TokenAnswer>(br#"{"access_token":"canary"#).err(),
            Some("a body that is not JSON")
        );
    }

    #[test]
    fn kv_fields_are_secrets() {
        let k: KvAnswer = parse(br#"{"data":{"data":{"b":"canary-b","a":7}},"lease_duration":0}"#)
            .expect("answer");
        let fields = k
            .data
            .and_then(|d| d.0)
            .and_then(|d| d.data)
            .and_then(|d| d.0);
        let fields = fields.expect("fields");
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(fields["a"].0.is_none());
        assert_eq!(fields["b"].0.as_ref().map(Secret::expose), Some("canary-b"));
    }
}
