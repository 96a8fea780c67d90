//! `ask`: each conflict side by side — both row images, the differing columns highlighted — and
//! the operator's answer, saved the moment it is given (an interrupted run resumes at the next
//! undecided conflict).

use std::io::IsTerminal;

use anyhow::{Context, Result};

use crate::commands::Usage;
use crate::context::Ctx;
use steep::cli::output::{table, Output};
use steep::engine::merge::conflicts::{self, Conflict};
use steep::engine::merge::ledger::{self, Decisions};
use steep::engine::merge::strategy::Resolution;

/// Whether prompts can be shown and answered here.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

pub fn no_terminal() -> anyhow::Error {
    Usage(
        "strategy ask needs a terminal to ask at, and there is none: give the answers in a \
         decisions file (steep merge analyze --decisions-out FILE writes one; fill in each \
         \"decision\", then steep merge run --decisions FILE), or choose another --strategy"
            .into(),
    )
    .into()
}

/// How far an answer reaches.
#[derive(Clone, Copy, PartialEq)]
enum Reach {
    One,
    Table,
    All,
}

/// The answer typed: l, r, s (this conflict), L, R, S (the rest of this table), l!, r!, s! (every
/// remaining conflict), q (stop).
fn parse(answer: &str) -> Option<Option<(Resolution, Reach)>> {
    let a = answer.trim();
    if a == "q" {
        return Some(None);
    }
    let (letter, all) = match a.strip_suffix('!') {
        Some(l) => (l, true),
        None => (a, false),
    };
    let (r, upper) = match letter {
        "l" => (Resolution::KeepLocal, false),
        "r" => (Resolution::KeepRemote, false),
        "s" => (Resolution::Skip, false),
        "L" => (Resolution::KeepLocal, true),
        "R" => (Resolution::KeepRemote, true),
        "S" => (Resolution::Skip, true),
        _ => return None,
    };
    let reach = match (all, upper) {
        (true, _) => Reach::All,
        (false, true) => Reach::Table,
        (false, false) => Reach::One,
    };
    Some(Some((r, reach)))
}

fn value(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "NULL".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Both rows side by side, differing columns marked.
fn show(out: &Output, c: &Conflict, n: usize, total: usize) {
    out.show(format!(
        "\nconflict {n} of {total}: {} key {}",
        c.table, c.key
    ));
    let cols: Vec<String> = c
        .local_row
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = cols
        .iter()
        .map(|col| {
            let differs = c.differing_columns.contains(col);
            let (l, r) = (value(c.local_row.get(col)), value(c.remote_row.get(col)));
            if differs {
                vec![
                    Output::highlight(&format!("* {col}")),
                    Output::highlight(&l),
                    Output::highlight(&r),
                ]
            } else {
                vec![format!("  {col}"), l, r]
            }
        })
        .collect();
    out.show(table(&["column", "local", "remote"], &rows));
}

/// The conflicts without a decision made on these very rows (one made on rows that changed
/// since does not count).
pub fn undecided<'a>(conflicts: &'a [Conflict], decided: &Decisions) -> Vec<&'a Conflict> {
    conflicts
        .iter()
        .filter(|x| {
            let hashes = (x.local_hash.parse().ok(), x.remote_hash.parse().ok());
            decided
                .get(&(x.table.clone(), x.key.clone()))
                .is_none_or(|d| (d.local_hash, d.remote_hash) != hashes)
        })
        .collect()
}

/// Ask about every conflict not decided yet (on these very rows); each answer saved at once.
/// Returns false when the operator stopped (q).
pub fn ask(
    ctx: &Ctx,
    c: &mut postgres::Client,
    merge_id: &str,
    role: &str,
    conflicts: &[Conflict],
    decided: &Decisions,
) -> Result<bool> {
    let open = undecided(conflicts, decided);
    if open.is_empty() {
        return Ok(true);
    }
    if !interactive() {
        return Err(no_terminal());
    }
    ctx.out.note(format!(
        "{} conflicts to decide. Answers: l keep local, r keep remote, s skip (leave both); \
         L R S the same for the rest of the table; l! r! s! the same for every remaining \
         conflict; q stop (answers so far are kept: steep merge run --resume {merge_id})",
        open.len()
    ));
    // Typed answers are saved at once; those a sticky answer covers are saved together, before
    // the next prompt (or at the end).
    let decided_by = format!("operator {role}");
    let mut pending: Vec<(String, String, &str, ledger::Decision)> = Vec::new();
    let flush = |c: &mut postgres::Client,
                 pending: &mut Vec<(String, String, &str, ledger::Decision)>|
     -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let all: Vec<ledger::Decided> = pending
            .iter()
            .map(|(schema, table, key, decision)| ledger::Decided {
                schema,
                table,
                key,
                decision,
            })
            .collect();
        ledger::save_decisions(c, merge_id, &all)?;
        pending.clear();
        Ok(())
    };
    let mut sticky: Option<(Resolution, Reach, String)> = None;
    for (n, x) in open.iter().enumerate() {
        let (answer, typed) = match &sticky {
            Some((r, Reach::All, _)) => (*r, false),
            Some((r, Reach::Table, t)) if *t == x.table => (*r, false),
            _ => {
                flush(c, &mut pending)?;
                show(&ctx.out, x, n + 1, open.len());
                let (r, reach) = loop {
                    let typed: String = dialoguer::Input::new()
                        .with_prompt("keep [l]ocal, [r]emote, [s]kip (L/R/S rest of table, l!/r!/s! all, q stop)")
                        .allow_empty(true)
                        .interact_text()
                        .context("reading the answer")?;
                    match parse(&typed) {
                        Some(None) => return Ok(false),
                        Some(Some(a)) => break a,
                        None => ctx.out.show("answer l, r, s, L, R, S, l!, r!, s! or q"),
                    }
                };
                if reach != Reach::One {
                    sticky = Some((r, reach, x.table.clone()));
                }
                (r, true)
            }
        };
        let (schema, table) = conflicts::split_table(&x.table)?;
        pending.push((
            schema,
            table,
            &x.key,
            ledger::Decision {
                local_hash: x.local_hash.parse().ok(),
                remote_hash: x.remote_hash.parse().ok(),
                resolution: answer,
                decided_by: decided_by.clone(),
            },
        ));
        if typed {
            flush(c, &mut pending)?;
        }
    }
    flush(c, &mut pending)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_reach_one_the_table_or_all() {
        assert!(parse("q").unwrap().is_none());
        let a = |s: &str| parse(s).unwrap().unwrap();
        assert!(matches!(a("l"), (Resolution::KeepLocal, Reach::One)));
        assert!(matches!(a(" R "), (Resolution::KeepRemote, Reach::Table)));
        assert!(matches!(a("s!"), (Resolution::Skip, Reach::All)));
        assert!(parse("x").is_none());
        assert!(parse("").is_none());
    }
}
