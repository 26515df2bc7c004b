//! The raw layer: what the user wrote, with positions. Walks toml's spanned
//! document and hands out typed values one key at a time, recording a
//! [`ConfigError`] (file, line, column, key, expectation) for every wrong type
//! and every key nobody asked for, so one run reports every problem.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::ConfigError;

/// A value and where it was written.
#[derive(Debug, Clone)]
pub struct At<T> {
    pub v: T,
    pub span: Range<usize>,
}

/// Collects errors against one source text.
pub struct Diag<'s> {
    file: PathBuf,
    src: &'s str,
    pub errors: Vec<ConfigError>,
}

impl<'s> Diag<'s> {
    pub fn new(file: &Path, src: &'s str) -> Self {
        Diag {
            file: file.to_owned(),
            src,
            errors: Vec::new(),
        }
    }

    /// The file the errors name.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// 1-based line and column of a byte offset in this source.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(self.src, offset)
    }

    pub fn err(&mut self, span: &Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = line_col(self.src, span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
        });
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..src.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}
impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// One TOML table being read. `path` is how errors name it: `identity`,
/// `credential[2]`.
pub struct Table<'i> {
    pub path: String,
    pub span: Range<usize>,
    entries: Vec<(At<String>, At<DeValue<'i>>)>,
}

impl<'i> Table<'i> {
    pub fn from_de(path: String, span: Range<usize>, t: DeTable<'i>) -> Self {
        let mut entries: Vec<_> = t
            .into_iter()
            .map(|(k, v)| {
                let (ks, vs) = (k.span(), v.span());
                (
                    At {
                        v: k.into_inner().into_owned(),
                        span: ks,
                    },
                    At {
                        v: v.into_inner(),
                        span: vs,
                    },
                )
            })
            .collect();
        entries.sort_by_key(|(k, _)| k.span.start);
        Table {
            path,
            span,
            entries,
        }
    }

    /// Dotted name of a key in this table, for error messages.
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A string value without taking it (for cross-references).
    pub fn peek_string(&self, key: &str) -> Option<String> {
        self.entries
            .iter()
            .find(|(k, _)| k.v == key)
            .and_then(|(_, v)| match &v.v {
                DeValue::String(s) => Some(s.to_string()),
                _ => None,
            })
    }

    /// Where a key's value was written, without taking it.
    pub fn peek_span(&self, key: &str) -> Option<Range<usize>> {
        self.entries
            .iter()
            .find(|(k, _)| k.v == key)
            .map(|(_, v)| v.span.clone())
    }

    fn take(&mut self, key: &str) -> Option<(At<String>, At<DeValue<'i>>)> {
        let i = self.entries.iter().position(|(k, _)| k.v == key)?;
        Some(self.entries.remove(i))
    }

    fn wrong(&self, d: &mut Diag<'_>, key: &str, v: &At<DeValue<'_>>, expected: &str) {
        d.err(
            &v.span,
            &self.key(key),
            format!("expected {expected}, found {}", type_name(&v.v)),
        );
    }

    pub fn string(&mut self, d: &mut Diag<'_>, key: &str) -> Option<At<String>> {
        let (_, v) = self.take(key)?;
        match v.v {
            DeValue::String(s) => Some(At {
                v: s.into_owned(),
                span: v.span,
            }),
            _ => {
                self.wrong(d, key, &v, "a string");
                None
            }
        }
    }

    /// A string, or an array of strings (`audience = "a"` or `["a", "b"]`).
    pub fn strings(&mut self, d: &mut Diag<'_>, key: &str) -> Option<At<Vec<String>>> {
        let (_, v) = self.take(key)?;
        match v.v {
            DeValue::String(s) => Some(At {
                v: vec![s.into_owned()],
                span: v.span,
            }),
            DeValue::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in items {
                    let span = item.span();
                    match item.into_inner() {
                        DeValue::String(s) => out.push(s.into_owned()),
                        other => {
                            d.err(
                                &span,
                                &self.key(key),
                                format!(
                                    "expected an array of strings, found {} in it",
                                    type_name(&other)
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(At {
                    v: out,
                    span: v.span,
                })
            }
            _ => {
                self.wrong(d, key, &v, "a string or an array of strings");
                None
            }
        }
    }

    pub fn bool(&mut self, d: &mut Diag<'_>, key: &str) -> Option<At<bool>> {
        let (_, v) = self.take(key)?;
        match v.v {
            DeValue::Boolean(b) => Some(At { v: b, span: v.span }),
            _ => {
                self.wrong(d, key, &v, "a boolean (true or false)");
                None
            }
        }
    }

    /// A number; integers are accepted where a float is expected.
    pub fn number(&mut self, d: &mut Diag<'_>, key: &str) -> Option<At<f64>> {
        let (_, v) = self.take(key)?;
        let parsed = match &v.v {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(i) if i.radix() == 10 => {
                i.as_str().replace('_', "").parse::<f64>().ok()
            }
            _ => None,
        };
        match parsed {
            Some(n) if n.is_finite() => Some(At { v: n, span: v.span }),
            _ => {
                self.wrong(d, key, &v, "a number");
                None
            }
        }
    }

    pub fn integer(&mut self, d: &mut Diag<'_>, key: &str) -> Option<At<i64>> {
        let (_, v) = self.take(key)?;
        let parsed = match &v.v {
            DeValue::Integer(i) => {
                i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()
            }
            _ => None,
        };
        match parsed {
            Some(n) => Some(At { v: n, span: v.span }),
            None => {
                self.wrong(d, key, &v, "an integer");
                None
            }
        }
    }

    /// A sub-table (`[proxy]`).
    pub fn table(&mut self, d: &mut Diag<'_>, key: &str) -> Option<Table<'i>> {
        let (_, v) = self.take(key)?;
        match v.v {
            DeValue::Table(t) => Some(Table::from_de(self.key(key), v.span, t)),
            _ => {
                self.wrong(d, key, &v, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[credential]]`), each named `key[i]`.
    pub fn tables(&mut self, d: &mut Diag<'_>, key: &str) -> Vec<Table<'i>> {
        let Some((_, v)) = self.take(key) else {
            return Vec::new();
        };
        match v.v {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    let span = item.span();
                    match item.into_inner() {
                        DeValue::Table(t) => {
                            out.push(Table::from_de(format!("{key}[{i}]"), span, t))
                        }
                        other => d.err(
                            &span,
                            key,
                            format!("expected a table ([[{key}]]), found {}", type_name(&other)),
                        ),
                    }
                }
                out
            }
            _ => {
                self.wrong(d, key, &v, &format!("an array of tables ([[{key}]])"));
                Vec::new()
            }
        }
    }

    /// Every key not taken is an error that lists what this table accepts.
    pub fn finish(&mut self, d: &mut Diag<'_>, accepted: &[&str]) {
        for (k, _) in std::mem::take(&mut self.entries) {
            let place = if self.path.is_empty() {
                "at the top level".to_owned()
            } else {
                format!("in [{}]", self.path)
            };
            d.err(
                &k.span,
                &self.key(&k.v),
                format!(
                    "unknown key `{}` {place}; expected one of: {}",
                    k.v,
                    accepted.join(", ")
                ),
            );
        }
    }
}

/// Parse a TOML document. Syntax errors come back as config errors with
/// positions; on any, no partial document is returned.
pub fn parse<'i>(d: &mut Diag<'_>, src: &'i str) -> Option<Table<'i>> {
    let (doc, errors) = DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            d.err(&span, "", format!("invalid TOML: {}", e.message().trim()));
        }
        return None;
    }
    let span = doc.span();
    Some(Table::from_de(String::new(), span, doc.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 11), (2, 6));
    }
}
