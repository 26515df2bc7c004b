//! `docs/config.md` documents exactly the keys the parser accepts, section
//! by section (each `## [table]` or `## [[credential]] exchange = "kind"`
//! heading is followed by a table whose first column is the key), so the
//! reference cannot drift from the code. A key added to a parser list
//! without a row fails here, naming the key and the section to add it to.

use std::collections::{BTreeMap, BTreeSet};

use super::super::credential::{accepted_keys, applicable_keys, from_keys};
use super::super::identity::{IDENTITY_KEYS, LOGIN_KEYS};
use super::super::keyword;
use super::super::model::ExchangeKind;
use super::super::proxy::PROXY_KEYS;
use super::super::route::ROUTE_KEYS;
use super::super::settings::{AUDIT_KEYS, ROTATION_KEYS, UPSTREAM_KEYS};
use super::super::TOP_KEYS;

const DOC: &str = "docs/config.md";

/// A documented row: the key and its type, default and example cells.
#[derive(Debug)]
struct Row {
    key: String,
    cells: Vec<String>,
}

/// The parser's sections: heading (as written after `## `, without
/// backticks) → the keys it accepts there.
fn parser_sections() -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut out = BTreeMap::new();
    let set = |keys: &[&'static str]| keys.iter().copied().collect::<BTreeSet<_>>();
    out.insert("[identity]".to_owned(), set(IDENTITY_KEYS));
    out.insert("[login]".to_owned(), set(LOGIN_KEYS));
    out.insert("[[route]]".to_owned(), set(ROUTE_KEYS));
    out.insert("[proxy]".to_owned(), set(PROXY_KEYS));
    out.insert("[upstream]".to_owned(), set(UPSTREAM_KEYS));
    out.insert("[audit]".to_owned(), set(AUDIT_KEYS));
    out.insert("[rotation]".to_owned(), set(ROTATION_KEYS));
    for name in keyword::names::<ExchangeKind>() {
        let Some(kind) = keyword::parse::<ExchangeKind>(name) else {
            continue;
        };
        let keys = applicable_keys(Some(Some(kind)), false).concat();
        out.insert(format!("[[credential]] exchange = \"{name}\""), set(&keys));
        if let Some(keys) = from_keys(kind) {
            out.insert(
                format!("[[credential]] from a \"{name}\" credential"),
                set(&keys),
            );
        }
    }
    out
}

/// `docs/config.md`'s key sections: every `## ` heading that starts with
/// `[` (after backticks are removed) and the rows of the table under it.
fn doc_sections(src: &str) -> Result<BTreeMap<String, Vec<Row>>, String> {
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in src.lines().enumerate() {
        if let Some(h) = line.strip_prefix("## ") {
            let h = h.replace('`', "").trim().to_owned();
            current = h.starts_with('[').then(|| h.clone());
            if let Some(h) = &current {
                if out.insert(h.clone(), Vec::new()).is_some() {
                    return Err(format!("{DOC}:{}: section \"## {h}\" appears twice", n + 1));
                }
            }
            continue;
        }
        if line.starts_with('#') && !line.starts_with("###") {
            current = None;
            continue;
        }
        let (Some(h), Some(row)) = (&current, line.trim().strip_prefix('|')) else {
            continue;
        };
        let cells: Vec<String> = row
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        let first = cells[0].as_str();
        if first == "key" || first.starts_with("---") {
            continue;
        }
        let key = first
            .strip_prefix('`')
            .and_then(|k| k.strip_suffix('`'))
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .ok_or_else(|| {
                format!(
                    "{DOC}:{}: in \"## {h}\", the first cell must be one key in backticks, got {first:?}",
                    n + 1
                )
            })?;
        out.entry(h.clone()).or_default().push(Row {
            key: key.to_owned(),
            cells,
        });
    }
    Ok(out)
}

/// The differences, each a sentence saying what to change where.
fn problems(src: &str) -> Vec<String> {
    let docs = match doc_sections(src) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
    let code = parser_sections();
    let mut out = Vec::new();
    for (section, keys) in &code {
        let Some(rows) = docs.get(section) else {
            out.push(format!(
                "{DOC} has no section \"## {section}\"; the parser accepts there: {}",
                keys.iter().copied().collect::<Vec<_>>().join(", ")
            ));
            continue;
        };
        let mut seen = BTreeSet::new();
        for r in rows {
            if !seen.insert(r.key.as_str()) {
                out.push(format!(
                    "{DOC}: \"## {section}\" documents `{}` twice",
                    r.key
                ));
            }
            if !keys.contains(r.key.as_str()) {
                out.push(format!(
                    "{DOC}: \"## {section}\" documents `{}`, which the parser does not accept there (remove the row, or add the key to the parser's list)",
                    r.key
                ));
            }
            if r.cells.len() != 5 || r.cells[1..4].iter().any(String::is_empty) {
                out.push(format!(
                    "{DOC}: \"## {section}\" row `{}` needs five cells, the type, default and example not empty: | key | type | default | example | meaning |",
                    r.key
                ));
            }
        }
        for k in keys {
            if !seen.contains(k) {
                out.push(format!(
                    "{DOC}: key `{k}` is accepted by the parser but not documented: add a row \"| `{k}` | type | default | example | meaning |\" under \"## {section}\""
                ));
            }
        }
    }
    for section in docs.keys() {
        if !code.contains_key(section) {
            out.push(format!(
                "{DOC} has a section \"## {section}\" that the parser does not know (sections: {})",
                code.keys().cloned().collect::<Vec<_>>().join("; ")
            ));
        }
    }
    out
}

#[test]
fn docs_config_md_documents_exactly_the_keys_the_parser_accepts() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
    let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let found = problems(&src);
    assert!(
        found.is_empty(),
        "{} problem(s) between {DOC} and the config parser:\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

#[test]
fn every_parser_list_is_covered_by_some_section() {
    // Every table the file may have has at least one section, and every
    // key a [[credential]] accepts applies to some kind: a key the parser
    // takes but no section lists would otherwise go undocumented.
    let code = parser_sections();
    for top in TOP_KEYS {
        let plain = format!("[{top}]");
        let array = format!("[[{top}]]");
        assert!(
            code.keys()
                .any(|s| *s == plain || s == &array || s.starts_with(&format!("{array} "))),
            "table `{top}` has no section in parser_sections(); add one (and its part of {DOC})"
        );
    }
    let documented: BTreeSet<&str> = code
        .iter()
        .filter(|(s, _)| s.starts_with("[[credential]]"))
        .flat_map(|(_, k)| k.iter().copied())
        .collect();
    let accepted: BTreeSet<&str> = accepted_keys().into_iter().collect();
    let stray: Vec<&&str> = accepted.difference(&documented).collect();
    assert!(
        stray.is_empty(),
        "[[credential]] accepts {stray:?}, but no exchange kind or `from` read takes them"
    );
}

#[test]
fn a_missing_or_extra_row_is_named_with_its_section() {
    // The checker itself: one section with a row missing and one too many.
    let mut src = String::new();
    for (section, keys) in parser_sections() {
        src.push_str(&format!("## `{section}`\n\n| key | type | default | example | meaning |\n| --- | --- | --- | --- | --- |\n"));
        for k in keys {
            if section == "[proxy]" && k == "egress" {
                continue;
            }
            src.push_str(&format!("| `{k}` | string | none | `x` | m |\n"));
        }
        if section == "[audit]" {
            src.push_str("| `colour` | string | none | `x` | m |\n");
        }
    }
    assert!(problems(&src).len() == 2, "{:?}", problems(&src));
    let p = problems(&src).join("\n");
    assert!(p.contains("key `egress` is accepted by the parser but not documented: add a row \"| `egress` | type | default | example | meaning |\" under \"## [proxy]\""), "{p}");
    assert!(
        p.contains("\"## [audit]\" documents `colour`, which the parser does not accept there"),
        "{p}"
    );
    let without = src.replace("## `[rotation]`", "## Rotation");
    assert!(
        problems(&without)
            .iter()
            .any(|p| p.contains("no section \"## [rotation]\"")),
        "{:?}",
        problems(&without)
    );
}

/// The first ```toml block of a markdown file.
fn first_toml_block(src: &str) -> Option<String> {
    let start = src.find("```toml\n")? + "```toml\n".len();
    let len = src[start..].find("```")?;
    Some(src[start..start + len].to_owned())
}

#[test]
fn the_minimal_files_in_the_readme_and_config_md_parse() {
    // The annotated file a newcomer copies first must be a valid config.
    for file in ["README.md", "docs/config.md"] {
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let toml = first_toml_block(&src).unwrap_or_else(|| panic!("{file} has no ```toml block"));
        let c = super::parse(&toml).unwrap_or_else(|e| panic!("{file}'s first toml block: {e}"));
        assert!(!c.credentials.is_empty() && !c.routes.is_empty(), "{file}");
    }
}
