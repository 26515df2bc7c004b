//! Two routes with the same canonical scheme, host, port and path prefix:
//! the second could never be chosen (the first in config wins a tie), so
//! the config is refused with both lines named.

use super::*;

const HEAD: &str = "[identity]\nsource = \"github\"\n\n\
[[credential]]\nname = \"gw\"\nexchange = \"passthrough\"\n\n\
[[credential]]\nname = \"other\"\nexchange = \"passthrough\"\n";

fn with_routes(a: &str, b: &str) -> String {
    format!(
        "{HEAD}\n[[route]]\nurl = \"{a}\"\ncredential = \"gw\"\n\n\
         [[route]]\nurl = \"{b}\"\ncredential = \"other\"\nmethods = [\"POST\"]\n"
    )
}

#[test]
fn the_same_canonical_route_twice_names_both_lines() {
    // Spelt differently, the same after canonicalisation.
    for (a, b) in [
        ("https://api.example.com/v1/", "https://api.example.com/v1/"),
        (
            "https://API.example.com./v1",
            "https://api.example.com:443/v1/",
        ),
        ("https://*.example.com/", "https://*.EXAMPLE.com"),
    ] {
        let src = with_routes(a, b);
        let first = src.find(&format!("url = \"{a}\"")).expect("a");
        let second = src.rfind(&format!("url = \"{b}\"")).expect("b");
        let (l1, _) = raw::line_col(&src, first);
        let (l2, _) = raw::line_col(&src, second);
        let errs = match Config::parse(Path::new("lanyard.toml"), &src) {
            Err(ConfigErrors::Invalid(v)) => v,
            Err(other) => panic!("{a} / {b}: expected Invalid, got {other}"),
            Ok(_) => panic!("{a} / {b}: duplicate routes were accepted"),
        };
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let dup = all
            .iter()
            .find(|e| e.contains("same"))
            .unwrap_or_else(|| panic!("{a} / {b}: no duplicate error in {all:#?}"));
        assert!(
            dup.starts_with(&format!("lanyard.toml:{l2}:")) && dup.contains("route[1].url"),
            "the error points at the second route: {dup}"
        );
        assert!(
            dup.contains(&format!("lanyard.toml:{l1}:")) && dup.contains("route[0]"),
            "and names the first one's line: {dup}"
        );
    }
}

#[test]
fn routes_that_differ_in_scheme_host_port_or_path_are_kept() {
    for (a, b) in [
        ("https://api.example.com/v1/", "https://api.example.com/v2/"),
        (
            "https://api.example.com/v1/",
            "https://api.example.com:8443/v1/",
        ),
        ("https://api.example.com/", "https://*.example.com/"),
        (
            "https://api.example.com/v1/",
            "https://api.example.com/v1/admin/",
        ),
        ("http://127.0.0.1:8080/", "https://127.0.0.1:8080/"),
    ] {
        let c = parse(&with_routes(a, b)).unwrap_or_else(|e| panic!("{a} / {b}: {e}"));
        assert_eq!(c.routes.len(), 2);
    }
}
