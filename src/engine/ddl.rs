//! pg_dump DDL scripts: split into statements, and post-data run in parallel phases the way
//! pg_restore -j does (indexes and keys, then foreign keys, then the rest in order).

use std::collections::VecDeque;
use std::sync::Mutex;

use anyhow::{anyhow, Result};

use crate::db_error::describe;
use crate::engine::Connect;

/// A pg_dump DDL file as the target should run it: without psql meta-commands (`\\restrict`,
/// ...) and without the statements about steep_repl itself, which `steep init` manages on every
/// node (pg_dump before 17 cannot leave them out, and writes each of them on one line).
pub fn for_target(text: &str) -> String {
    text.lines()
        .filter(|l| {
            !l.starts_with('\\')
                && !l.starts_with("CREATE EXTENSION IF NOT EXISTS steep_repl ")
                && !l.starts_with("COMMENT ON EXTENSION steep_repl ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Statements of a SQL script, split at top-level semicolons (quotes, dollar quotes, comments and
/// parentheses respected), without psql meta-commands (lines starting with a backslash).
pub fn statements(script: &str) -> Vec<String> {
    let text: String = script
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .collect::<Vec<_>>()
        .join("\n");
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut start, mut depth) = (0usize, 0usize, 0i32);
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if i + 1 < b.len() && b[i + 1] == q {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut nest = 1;
                i += 2;
                while i < b.len() && nest > 0 {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        nest += 1;
                        i += 1;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        nest -= 1;
                        i += 1;
                    }
                    i += 1;
                }
                continue;
            }
            b'$' => {
                // $tag$ ... $tag$ (tag: letters, digits, underscore; not after an identifier char)
                let prev_ident = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if !prev_ident
                    && j < b.len()
                    && b[j] == b'$'
                    && !b[i + 1..j].first().is_some_and(u8::is_ascii_digit)
                {
                    let tag = &text[i..=j];
                    if let Some(end) = text[j + 1..].find(tag) {
                        i = j + 1 + end + tag.len();
                        continue;
                    }
                    i = b.len();
                    continue;
                }
            }
            b'(' => depth += 1,
            b')' => depth -= 1,
            b';' if depth == 0 => {
                push_statement(&mut out, &text[start..=i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    push_statement(&mut out, &text[start..]);
    out
}

fn push_statement(out: &mut Vec<String>, s: &str) {
    // Keep it if anything but comments and blanks is in it.
    let code = s.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with("--")
    });
    if code {
        out.push(s.trim().to_string());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Session settings every connection runs first.
    Preamble,
    /// Indexes and primary-key / unique / exclusion constraints: in parallel.
    Keys,
    /// Foreign keys (they need the keys above): in parallel.
    ForeignKeys,
    /// Everything else, in the script's order.
    Rest,
}

fn phase(stmt: &str) -> Phase {
    let flat = stmt
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ");
    let up = flat.to_ascii_uppercase();
    let up = up.trim_start();
    if up.starts_with("SET ") || up.starts_with("SELECT PG_CATALOG.SET_CONFIG(") {
        Phase::Preamble
    } else if up.starts_with("CREATE INDEX ") || up.starts_with("CREATE UNIQUE INDEX ") {
        Phase::Keys
    } else if up.starts_with("ALTER TABLE ") && up.contains(" ADD CONSTRAINT ") {
        if up.contains(" FOREIGN KEY ") {
            Phase::ForeignKeys
        } else if up.contains(" PRIMARY KEY ")
            || up.contains(" UNIQUE ")
            || up.contains(" EXCLUDE ")
        {
            Phase::Keys
        } else {
            Phase::Rest
        }
    } else {
        Phase::Rest
    }
}

/// Run a post-data script: keys in parallel, then foreign keys in parallel, then the rest in
/// order; each statement commits on its own (as with pg_restore). With `resume`, objects an
/// earlier attempt already created ("already exists") are passed over.
pub fn run_post_data(dst: &dyn Connect, script: &str, parallel: usize, resume: bool) -> Result<()> {
    let all = statements(script);
    let preamble: Vec<&String> = all.iter().filter(|s| phase(s) == Phase::Preamble).collect();
    let preamble = preamble
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for wanted in [Phase::Keys, Phase::ForeignKeys, Phase::Rest] {
        let work: Vec<&String> = all.iter().filter(|s| phase(s) == wanted).collect();
        if work.is_empty() {
            continue;
        }
        let lanes = if wanted == Phase::Rest {
            1
        } else {
            parallel.clamp(1, work.len())
        };
        let queue = Mutex::new(work.into_iter().collect::<VecDeque<_>>());
        let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..lanes {
                s.spawn(|| {
                    let run = || -> Result<()> {
                        let mut c = dst.connect()?;
                        c.batch_execute(&preamble)?;
                        loop {
                            if failed.lock().expect("failed").is_some() {
                                return Ok(());
                            }
                            let Some(stmt) = queue.lock().expect("queue").pop_front() else {
                                return Ok(());
                            };
                            if let Err(e) = c.batch_execute(stmt) {
                                let exists = e
                                    .code()
                                    .is_some_and(|c| matches!(c.code(), "42P07" | "42710"));
                                if resume && exists {
                                    continue;
                                }
                                let first = stmt.lines().next().unwrap_or("");
                                return Err(anyhow!("{} (in: {first} ...)", describe(&e)));
                            }
                        }
                    };
                    if let Err(e) = run() {
                        failed.lock().expect("failed").get_or_insert(e);
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().expect("failed") {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_target_drops_meta_commands_and_steep_repl() {
        let text = "\\restrict abc\nSET x = 1;\nCREATE EXTENSION IF NOT EXISTS steep_repl WITH SCHEMA steep_repl;\n\
                    COMMENT ON EXTENSION steep_repl IS 'x';\nCREATE TABLE t (a int);\n\\unrestrict abc\n";
        assert_eq!(for_target(text), "SET x = 1;\nCREATE TABLE t (a int);");
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let script = "\\restrict x\nSET a = 1;\n-- a comment; with a semicolon\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n\
                      CREATE RULE r AS ON INSERT TO t DO INSTEAD (INSERT INTO u VALUES (1); INSERT INTO u VALUES (2));\n\
                      COMMENT ON TABLE t IS 'it''s; here';\n/* block; */ CREATE TABLE \"a;b\" (x int);\nSELECT $tag$;$tag$\n";
        let s = statements(script);
        assert_eq!(s.len(), 6, "{s:#?}");
        assert!(s[1].starts_with("-- a comment") && s[1].ends_with("LANGUAGE sql;"));
        assert!(s[2].contains("INSERT INTO u VALUES (2));"));
        assert!(s[3].ends_with("'it''s; here';"));
        assert!(s[4].contains("\"a;b\""));
        assert_eq!(s[5], "SELECT $tag$;$tag$");
    }

    #[test]
    fn phases() {
        assert_eq!(phase("SET statement_timeout = 0;"), Phase::Preamble);
        assert_eq!(
            phase("SELECT pg_catalog.set_config('search_path', '', false);"),
            Phase::Preamble
        );
        assert_eq!(phase("CREATE INDEX i ON t USING btree (a);"), Phase::Keys);
        assert_eq!(
            phase("ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);"),
            Phase::Keys
        );
        assert_eq!(
            phase("ALTER TABLE ONLY public.c\n    ADD CONSTRAINT c_fk FOREIGN KEY (p) REFERENCES public.p(id);"),
            Phase::ForeignKeys
        );
        assert_eq!(
            phase("ALTER INDEX public.p_pkey ATTACH PARTITION public.c_pkey;"),
            Phase::Rest
        );
        assert_eq!(
            phase("CREATE TRIGGER trg AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();"),
            Phase::Rest
        );
    }
}
