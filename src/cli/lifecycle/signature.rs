//! The catalog signature: one line per object of steep_repl, read from a server, embedded per
//! version, and compared (doctor, repair, the upgrade tests).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::embedded::{self};

/// One catalog object of the extension.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SigEntry {
    pub kind: String,
    pub identity: String,
    pub definition: String,
}

impl std::fmt::Display for SigEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.identity)
    }
}

/// The extension's catalog objects as this server has them.
pub fn catalog_signature(client: &mut postgres::Client) -> Result<Vec<SigEntry>> {
    let mut tx = client.transaction()?;
    // Names come out schema-qualified only when their schema is not on the search_path.
    tx.batch_execute("SET LOCAL search_path = pg_catalog, pg_temp")?;
    let rows = tx
        .query(embedded::catalog_signature_query(), &[])
        .context("reading the steep_repl catalog signature")?;
    tx.commit()?;
    let mut out: Vec<SigEntry> = rows
        .iter()
        .map(|r| SigEntry {
            kind: r.get(0),
            identity: r.get(1),
            definition: r.get(2),
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Text form, one object per line: kind, identity, definition separated by tabs.
pub fn render_signature(entries: &[SigEntry]) -> String {
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
    };
    let mut out = String::new();
    for e in entries {
        out.push_str(&format!(
            "{}\t{}\t{}\n",
            esc(&e.kind),
            esc(&e.identity),
            esc(&e.definition)
        ));
    }
    out
}

pub fn parse_signature(text: &str) -> Result<Vec<SigEntry>> {
    let unesc = |s: &str| {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('t') => out.push('\t'),
                    Some('n') => out.push('\n'),
                    Some(o) => out.push(o),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let parts: Vec<&str> = line.splitn(3, '\t').collect();
        let [kind, identity, definition] = parts[..] else {
            bail!("malformed signature line {}: {line:?}", i + 1);
        };
        out.push(SigEntry {
            kind: unesc(kind),
            identity: unesc(identity),
            definition: unesc(definition),
        });
    }
    out.sort();
    Ok(out)
}

/// The signature `version` ships with.
pub fn embedded_signature(version: &str) -> Option<Vec<SigEntry>> {
    embedded::signature_text(version).and_then(|t| parse_signature(t).ok())
}

#[derive(Debug, Default, Serialize)]
pub struct SigDiff {
    pub missing: Vec<SigEntry>,
    pub extra: Vec<SigEntry>,
    /// (expected, actual)
    pub changed: Vec<(SigEntry, SigEntry)>,
}

impl SigDiff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }

    /// A one-line summary naming up to a few objects.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let names = |v: &mut dyn Iterator<Item = &SigEntry>| {
            let all: Vec<String> = v.map(ToString::to_string).collect();
            let shown = all.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            if all.len() > 3 {
                format!("{shown} and {} more", all.len() - 3)
            } else {
                shown
            }
        };
        if !self.missing.is_empty() {
            parts.push(format!("missing {}", names(&mut self.missing.iter())));
        }
        if !self.extra.is_empty() {
            parts.push(format!("unexpected {}", names(&mut self.extra.iter())));
        }
        if !self.changed.is_empty() {
            parts.push(format!(
                "changed {}",
                names(&mut self.changed.iter().map(|(e, _)| e))
            ));
        }
        parts.join("; ")
    }
}

pub fn diff_signatures(expected: &[SigEntry], actual: &[SigEntry]) -> SigDiff {
    let key = |e: &SigEntry| (e.kind.clone(), e.identity.clone());
    let exp: BTreeMap<_, _> = expected.iter().map(|e| (key(e), e)).collect();
    let act: BTreeMap<_, _> = actual.iter().map(|e| (key(e), e)).collect();
    let mut d = SigDiff::default();
    for (k, e) in &exp {
        match act.get(k) {
            None => d.missing.push((*e).clone()),
            Some(a) if a.definition != e.definition => d.changed.push(((*e).clone(), (*a).clone())),
            Some(_) => {}
        }
    }
    for (k, a) in &act {
        if !exp.contains_key(k) {
            d.extra.push((*a).clone());
        }
    }
    d
}
