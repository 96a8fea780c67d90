//! User triggers while steep writes a table (a snapshot's load, a merge's rows). steep writes data
//! the way replication applies it: a table's user triggers do not fire (unless a snapshot apply's
//! `--fire-triggers`), so a BEFORE trigger cannot rewrite the written values and an AFTER trigger
//! cannot write rows of its own. The table's owner keeps them from firing inside the table's own
//! transaction — disabled there and enabled again before commit, so no other session ever sees
//! them disabled — and a role that may write the table but does not own it is refused.

use anyhow::{bail, Context, Result};

use crate::sql::quote_ident;

/// Of `tables` (qualified names), those with enabled user triggers the role does not own, each
/// as "table (trigger, ...)": checked before anything is written, so a refusal changes nothing.
pub fn unowned_with_triggers(c: &mut postgres::Client, tables: &[String]) -> Result<Vec<String>> {
    let rows = c
        .query(
            "SELECT c.oid::regclass::text,
                    string_agg(quote_ident(t.tgname), ', ' ORDER BY t.tgname)
             FROM unnest($1::text[]) AS n(name)
             JOIN pg_class c ON c.oid = n.name::regclass
             JOIN pg_trigger t ON t.tgrelid = c.oid
             WHERE NOT t.tgisinternal AND t.tgenabled IN ('O', 'A')
               AND NOT pg_has_role(c.relowner, 'USAGE')
             GROUP BY 1 ORDER BY 1",
            &[&tables],
        )
        .context("reading the target's triggers")?;
    Ok(rows
        .iter()
        .map(|r| format!("{} ({})", r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// The user triggers of a table that were disabled for its load, with how they were enabled.
pub struct Held {
    table: String,
    triggers: Vec<(String, String)>,
}

/// Disable the enabled user triggers of `table` (a qualified name) inside `tx`.
pub fn hold(tx: &mut impl postgres::GenericClient, table: &str) -> Result<Held> {
    let rows = tx
        .query(
            "SELECT t.tgname::text, t.tgenabled::text, pg_has_role(c.relowner, 'USAGE')
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             WHERE t.tgrelid = $1::text::regclass AND NOT t.tgisinternal
               -- REPLICA ones too: they fire when a write runs as session_replication_role
               -- replica (a merge's cycle of NOT DEFERRABLE keys).
               AND t.tgenabled IN ('O', 'A', 'R')
             ORDER BY 1",
            &[&table],
        )
        .with_context(|| format!("reading the triggers of {table}"))?;
    let triggers: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if let Some(row) = rows.first() {
        if !row.get::<_, bool>(2) {
            bail!(
                "{table} has user triggers ({}) that would fire while steep writes it, and only \
                 its owner can keep them from firing: run as the owner (a snapshot apply can let \
                 them fire with --fire-triggers)",
                triggers
                    .iter()
                    .map(|(n, _)| quote_ident(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    for (name, _) in &triggers {
        tx.batch_execute(&format!(
            "ALTER TABLE {table} DISABLE TRIGGER {}",
            quote_ident(name)
        ))
        .with_context(|| format!("keeping trigger {name} of {table} from firing"))?;
    }
    Ok(Held {
        table: table.to_string(),
        triggers,
    })
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }
}

/// Enable again, as they were, the triggers `hold` disabled (before the transaction commits).
pub fn release(tx: &mut impl postgres::GenericClient, held: Held) -> Result<()> {
    for (name, how) in &held.triggers {
        let always = match how.as_str() {
            "A" => "ALWAYS ",
            "R" => "REPLICA ",
            _ => "",
        };
        tx.batch_execute(&format!(
            "ALTER TABLE {} ENABLE {always}TRIGGER {}",
            held.table,
            quote_ident(name)
        ))
        .with_context(|| format!("enabling trigger {name} of {} again", held.table))?;
    }
    Ok(())
}
