//! `--schema verify`'s findings in an apply's words, and the sequences it needs.

use anyhow::Result;

use super::SchemaMismatch;
use crate::engine::catalog::{self};
use crate::engine::manifest::Manifest;
use crate::schema_shape;
use crate::sql::{qualified, quote_ident};

/// A blocking difference in the words of an apply (the snapshot is the local side).
pub(crate) fn describe_for_apply(d: &schema_shape::Difference) -> String {
    let name = qualified(&d.schema, &d.table);
    let col = d
        .column
        .as_ref()
        .map(|c| format!("{name}.{}", quote_ident(c)))
        .unwrap_or_else(|| name.clone());
    let v = |x: &Option<String>| x.clone().unwrap_or_default();
    match d.difference.as_str() {
        "table_missing_on_peer" => format!("table {name} is missing"),
        "missing_on_peer" => format!("{col}: column missing"),
        "missing_locally" => format!("{col}: column only on the target"),
        "type" => format!(
            "{col}: type {} in the snapshot, {} on the target",
            v(&d.local),
            v(&d.peer)
        ),
        "primary_key" => format!(
            "{name}: primary key ({}) in the snapshot, ({}) on the target",
            v(&d.local),
            v(&d.peer)
        ),
        _ => format!(
            "{col}: {} in the snapshot, {} on the target",
            v(&d.local),
            v(&d.peer)
        ),
    }
}

pub(super) fn check_sequences(c: &mut postgres::Client, m: &Manifest) -> Result<()> {
    let have: Vec<(String, String)> = catalog::sequences(c)?;
    let missing: Vec<String> = m
        .sequences
        .iter()
        .filter(|s| !have.iter().any(|(a, b)| *a == s.schema && *b == s.name))
        .map(|s| format!("sequence {} is missing", qualified(&s.schema, &s.name)))
        .collect();
    if !missing.is_empty() {
        return Err(SchemaMismatch(missing).into());
    }
    Ok(())
}
