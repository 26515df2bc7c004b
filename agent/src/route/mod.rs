//! Routes: the runtime model `config` builds and the proxy, TLS and doctor
//! read. It sits between the two and imports neither.
//! - `host`: the one canonical parse of a destination (`host[:port]`) and
//!   host patterns;
//! - `path`: the one check of a request path or route path prefix;
//! - `model`: a route (where, which credential, how) and its URL;
//! - `table`: a listener's routes and the matcher's decision.

mod host;
mod model;
mod path;
mod table;

use std::fmt;

pub use host::{fast_and_slow_answers, parse_authority, Destination, HostPattern, TargetError};
pub use model::{parse_route_url, AwsSigning, IdentityKinds, Route, Template};
pub use path::check_path;
pub use table::{Decision, RouteTable, SessionIdentity};

/// The two schemes lanyard proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// `http` or `https`, exactly (a URL parser lowercases it first).
    pub fn parse(s: &str) -> Option<Scheme> {
        match s {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `host[:port]`, the port only when it is not this scheme's default.
    pub fn authority(self, host: impl fmt::Display, port: u16) -> String {
        if port == self.default_port() {
            host.to_string()
        } else {
            format!("{host}:{port}")
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_name_their_default_port_and_drop_it_from_an_authority() {
        assert_eq!(Scheme::parse("https"), Some(Scheme::Https));
        assert_eq!(Scheme::parse("http"), Some(Scheme::Http));
        assert_eq!(Scheme::parse("ftp"), None);
        assert_eq!(Scheme::Https.authority("a.example", 443), "a.example");
        assert_eq!(Scheme::Https.authority("a.example", 80), "a.example:80");
        assert_eq!(Scheme::Http.authority("127.0.0.1", 80), "127.0.0.1");
        assert_eq!(Scheme::Http.authority("127.0.0.1", 443), "127.0.0.1:443");
    }
}
