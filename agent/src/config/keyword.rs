//! Config keywords: enums spelt by serde (`rename_all`), so that the parse,
//! a value's name and the list an error message offers all come from the
//! enum's one definition.

use std::fmt;

use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer};

/// The keyword `s` spells, if any.
pub fn parse<T: DeserializeOwned>(s: &str) -> Option<T> {
    let de: StrDeserializer<'_, Error> = s.into_deserializer();
    T::deserialize(de).ok()
}

/// Every spelling `T` accepts, in declaration order.
pub fn names<T: DeserializeOwned>() -> &'static [&'static str] {
    // serde hands the accepted spellings to the error for an unknown one.
    match T::deserialize(StrDeserializer::<Expected>::new("")) {
        Err(Expected(names)) => names,
        Ok(_) => &[],
    }
}

/// The spelling of `v`.
pub fn name<T: DeserializeOwned + PartialEq>(v: &T) -> &'static str {
    names::<T>()
        .iter()
        .copied()
        .find(|n| parse::<T>(n).as_ref() == Some(v))
        .unwrap_or_default()
}

/// `"a", "b" or "c"`: the accepted spellings, for a message.
pub fn quoted_or<T: DeserializeOwned>() -> String {
    let quoted: Vec<String> = names::<T>().iter().map(|n| format!("{n:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

#[derive(Debug)]
struct Expected(&'static [&'static str]);

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected one of {:?}", self.0)
    }
}

impl std::error::Error for Expected {}

impl de::Error for Expected {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Expected(&[])
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Expected(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Three {
        TokenExchange,
        Post,
        IdToken,
    }

    #[test]
    fn a_keyword_enum_parses_names_and_lists_its_spellings_in_order() {
        assert_eq!(names::<Three>(), ["token-exchange", "post", "id-token"]);
        assert_eq!(parse::<Three>("post"), Some(Three::Post));
        assert_eq!(parse::<Three>("Post"), None);
        assert_eq!(parse::<Three>(""), None);
        assert_eq!(name(&Three::TokenExchange), "token-exchange");
        assert_eq!(
            quoted_or::<Three>(),
            r#""token-exchange", "post" or "id-token""#
        );
    }
}
