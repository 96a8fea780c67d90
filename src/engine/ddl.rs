//! pg_dump DDL scripts: split into statements, and post-data run in parallel phases the way
//! pg_restore -j does (indexes and keys, then foreign keys, then the rest in order), never two
//! statements at once whose table locks conflict.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

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

/// The tables a post-data statement locks. CREATE INDEX takes SHARE, which other index builds on
/// the table share; ALTER TABLE ... ADD CONSTRAINT takes SHARE ROW EXCLUSIVE or stronger, on the
/// referenced table too for a foreign key. Statements whose locks conflict never run at once (as
/// in pg_restore -j): two foreign keys of a cycle would otherwise deadlock, and a lane would sit
/// blocked behind another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Locks {
    tables: Vec<String>,
    exclusive: bool,
}

impl Locks {
    fn conflicts(&self, other: &Locks) -> bool {
        (self.exclusive || other.exclusive) && self.tables.iter().any(|t| other.tables.contains(t))
    }
}

/// A token of a DDL statement, as far as classifying it needs: words, quoted identifiers (with
/// their quotes), string literals, single punctuation characters. Comments are skipped.
#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    Word(&'a str),
    Quoted(&'a str),
    Literal,
    Punct(char),
}

fn tokens(stmt: &str) -> Vec<Tok<'_>> {
    let b = stmt.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = stmt[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
        } else if c == b'"' || c == b'\'' {
            let start = i;
            i += 1;
            while i < b.len() {
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
            out.push(if c == b'"' {
                Tok::Quoted(&stmt[start..i])
            } else {
                Tok::Literal
            });
        } else if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            out.push(Tok::Word(&stmt[start..i]));
        } else {
            // Multi-byte characters only occur inside words and quotes, handled above.
            out.push(Tok::Punct(c as char));
            i += 1;
        }
    }
    out
}

fn is_word(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
}

/// A possibly qualified name at `*i` (`public.t`, `"Odd ""S"""."t"`), unquoted parts folded to
/// lower case as PostgreSQL does; `*i` moves past it.
fn name_at(toks: &[Tok], i: &mut usize) -> Option<String> {
    let mut parts = Vec::new();
    loop {
        match toks.get(*i)? {
            Tok::Word(w) => parts.push(w.to_lowercase()),
            Tok::Quoted(q) => parts.push((*q).to_string()),
            _ => return None,
        }
        *i += 1;
        if toks.get(*i) != Some(&Tok::Punct('.')) {
            return Some(parts.join("."));
        }
        *i += 1;
    }
}

/// The statement's phase, and the tables it locks when it runs in a parallel phase.
fn classify(stmt: &str) -> (Phase, Locks) {
    let t = tokens(stmt);
    let rest = (Phase::Rest, Locks::default());
    if is_word(t.first(), "SET") {
        return (Phase::Preamble, Locks::default());
    }
    if is_word(t.first(), "SELECT") {
        let mut i = 1;
        let is_set_config = name_at(&t, &mut i).as_deref() == Some("pg_catalog.set_config");
        return if is_set_config {
            (Phase::Preamble, Locks::default())
        } else {
            rest
        };
    }
    if is_word(t.first(), "CREATE") {
        let mut i = 1 + usize::from(is_word(t.get(1), "UNIQUE"));
        if !is_word(t.get(i), "INDEX") {
            return rest;
        }
        // CREATE INDEX [name] ON [ONLY] table: an index whatever follows; its table if readable.
        i += 1;
        if !is_word(t.get(i), "ON") {
            name_at(&t, &mut i);
        }
        let table = is_word(t.get(i), "ON")
            .then(|| {
                i += 1 + usize::from(is_word(t.get(i + 1), "ONLY"));
                name_at(&t, &mut i)
            })
            .flatten();
        return (
            Phase::Keys,
            Locks {
                tables: table.into_iter().collect(),
                exclusive: false,
            },
        );
    }
    if !(is_word(t.first(), "ALTER") && is_word(t.get(1), "TABLE")) {
        return rest;
    }
    let mut i = 2 + usize::from(is_word(t.get(2), "ONLY"));
    let Some(table) = name_at(&t, &mut i) else {
        return rest;
    };
    if !(is_word(t.get(i), "ADD") && is_word(t.get(i + 1), "CONSTRAINT")) {
        return rest;
    }
    i += 2;
    if name_at(&t, &mut i).is_none() {
        return rest;
    }
    let mut locks = Locks {
        tables: vec![table],
        exclusive: true,
    };
    let kind = t.get(i);
    let phase = if is_word(kind, "FOREIGN") {
        let mut j = i;
        while j < t.len() && !is_word(t.get(j), "REFERENCES") {
            j += 1;
        }
        j += 1;
        locks.tables.extend(name_at(&t, &mut j));
        Phase::ForeignKeys
    } else if is_word(kind, "PRIMARY") || is_word(kind, "UNIQUE") || is_word(kind, "EXCLUDE") {
        Phase::Keys
    } else {
        return rest;
    };
    (phase, locks)
}

/// Statements of one phase, and which run now.
struct Board<'a> {
    waiting: VecDeque<(&'a str, Locks)>,
    running: Vec<Locks>,
    failed: Option<anyhow::Error>,
}

impl<'a> Board<'a> {
    /// The next statement whose locks conflict with nothing running, now marked running; None
    /// when nothing waits or everything waiting conflicts (the caller waits for a change).
    fn take(&mut self) -> Option<(&'a str, Locks)> {
        let pos = self
            .waiting
            .iter()
            .position(|(_, l)| !self.running.iter().any(|r| r.conflicts(l)))?;
        let item = self.waiting.remove(pos)?;
        self.running.push(item.1.clone());
        Some(item)
    }
}

/// Run a post-data script: keys in parallel, then foreign keys in parallel, then the rest in
/// order; each statement commits on its own (as with pg_restore). Two statements that lock the
/// same table in conflicting modes never run at once. With `resume`, objects an earlier attempt
/// already created ("already exists") are passed over.
pub fn run_post_data(dst: &dyn Connect, script: &str, parallel: usize, resume: bool) -> Result<()> {
    let all: Vec<(String, Phase, Locks)> = statements(script)
        .into_iter()
        .map(|s| {
            let (phase, locks) = classify(&s);
            (s, phase, locks)
        })
        .collect();
    let preamble = all
        .iter()
        .filter(|(_, p, _)| *p == Phase::Preamble)
        .map(|(s, _, _)| s.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for wanted in [Phase::Keys, Phase::ForeignKeys, Phase::Rest] {
        let waiting: VecDeque<(&str, Locks)> = all
            .iter()
            .filter(|(_, p, _)| *p == wanted)
            .map(|(s, _, l)| (s.as_str(), l.clone()))
            .collect();
        if waiting.is_empty() {
            continue;
        }
        let lanes = if wanted == Phase::Rest {
            1
        } else {
            parallel.clamp(1, waiting.len())
        };
        let board = Mutex::new(Board {
            waiting,
            running: Vec::new(),
            failed: None,
        });
        let changed = Condvar::new();
        std::thread::scope(|s| {
            for _ in 0..lanes {
                s.spawn(|| {
                    let run = || -> Result<()> {
                        let mut c = dst.connect()?;
                        c.batch_execute(&preamble)?;
                        loop {
                            let (stmt, locks) = {
                                let mut b = board.lock().expect("board");
                                loop {
                                    if b.failed.is_some() || b.waiting.is_empty() {
                                        return Ok(());
                                    }
                                    if let Some(item) = b.take() {
                                        break item;
                                    }
                                    b = changed.wait(b).expect("board");
                                }
                            };
                            let result = c.batch_execute(stmt);
                            {
                                let mut b = board.lock().expect("board");
                                if let Some(p) = b.running.iter().position(|r| *r == locks) {
                                    b.running.remove(p);
                                }
                                changed.notify_all();
                            }
                            if let Err(e) = result {
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
                        board.lock().expect("board").failed.get_or_insert(e);
                        changed.notify_all();
                    }
                });
            }
        });
        if let Some(e) = board.into_inner().expect("board").failed {
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

    fn phase(stmt: &str) -> Phase {
        classify(stmt).0
    }

    fn locks(stmt: &str) -> Locks {
        classify(stmt).1
    }

    #[test]
    fn what_statements_lock() {
        let fk = "ALTER TABLE ONLY \"Odd \"\"S\"\"\".\"T b\"\n    ADD CONSTRAINT \"fk; x\" FOREIGN KEY (\"p REFERENCES q\") REFERENCES Public.P(id) DEFERRABLE;";
        assert_eq!(
            locks(fk),
            Locks {
                tables: vec!["\"Odd \"\"S\"\"\".\"T b\"".into(), "public.p".into()],
                exclusive: true
            }
        );
        assert_eq!(
            locks("CREATE UNIQUE INDEX \"i ON x\" ON ONLY public.t USING btree (a);"),
            Locks {
                tables: vec!["public.t".into()],
                exclusive: false
            }
        );
        assert_eq!(
            locks("CREATE TRIGGER trg AFTER INSERT ON t EXECUTE FUNCTION f();"),
            Locks::default()
        );
        // Index builds share a table; a key or foreign key has it to itself.
        let (i1, i2) = (
            locks("CREATE INDEX a ON public.t (x);"),
            locks("CREATE INDEX b ON public.t (y);"),
        );
        let pk = locks("ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);");
        assert!(!i1.conflicts(&i2));
        assert!(i1.conflicts(&pk) && pk.conflicts(&i2));
        assert!(!pk.conflicts(&locks("CREATE INDEX c ON public.u (y);")));
    }

    #[test]
    fn the_two_foreign_keys_of_a_cycle_never_run_at_once() {
        let a = "ALTER TABLE ONLY public.cyc_a ADD CONSTRAINT a_fk FOREIGN KEY (b_id) REFERENCES public.cyc_b(id);";
        let b = "ALTER TABLE ONLY public.cyc_b ADD CONSTRAINT b_fk FOREIGN KEY (a_id) REFERENCES public.cyc_a(id);";
        let other = "ALTER TABLE ONLY public.x ADD CONSTRAINT x_fk FOREIGN KEY (y) REFERENCES public.y(id);";
        let mut board = Board {
            waiting: [a, b, other].iter().map(|s| (*s, locks(s))).collect(),
            running: Vec::new(),
            failed: None,
        };
        assert_eq!(board.take().map(|x| x.0), Some(a));
        // b waits for a; the unrelated one goes ahead of it.
        assert_eq!(board.take().map(|x| x.0), Some(other));
        assert_eq!(board.take(), None);
        board.running.remove(0);
        assert_eq!(board.take().map(|x| x.0), Some(b));
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
