//! The snapshot's schema: a pg_dump custom-format archive (pre-data and post-data) taken at the snapshot's
//! exported snapshot, and restored by pg_restore — pre-data before the data in one transaction,
//! post-data after it in parallel (`pg_restore -j`, which orders entries by their dependencies and
//! locks). steep never edits pg_dump's SQL: what is left out (steep_repl itself, entries a resumed
//! apply already restored) is left out through pg_restore's table of contents (`-l` / `-L`).
//!
//! Both programs reach the server with the rights of the role the work belongs to
//! (`Connect::tool_access`): in client mode with the CLI's connection parameters (the password in
//! the child's environment, never on its command line). In direct mode pg_restore, which runs the
//! archive's SQL, goes through the session proxy, so that SQL runs in sessions restricted to the
//! job's owner; pg_dump, which runs only its own catalog queries (and needs PREPARE, which a
//! restricted session refuses), logs in as the workers do and reads as the owner (`--role`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::conn::ConnParams;
use crate::engine::checksum::sha256_of;
use crate::engine::manifest::{DataFile, SchemaFiles};
use crate::engine::private_dir::PrivateDir;
use crate::engine::{session_proxy, Connect, Tool, ToolAccess};

/// The archive's name inside a snapshot.
pub const ARCHIVE: &str = "schema/schema.dump";
/// The large objects' archive (written only when the source has large objects).
pub const LARGE_OBJECTS: &str = "schema/large_objects.dump";

/// `PROGRAM --version`'s line and its major version; None when it does not run.
pub fn tool_version(program: &Path) -> Option<(String, u32)> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = tool_major(&line);
    (major > 0).then_some((line, major))
}

/// Dump the schema of `src` at the exported snapshot into DIR/schema/schema.dump.
pub fn dump(
    src: &dyn Connect,
    pg_dump: &Path,
    exported: &str,
    dir: &Path,
    large_objects: bool,
    selection: &crate::engine::generate::Selection,
    cancelled: &dyn Fn() -> bool,
) -> Result<SchemaFiles> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir.join("schema"))
        .with_context(|| format!("creating {}/schema", dir.display()))?;
    let (version, major) = tool_version(pg_dump).unwrap_or_default();
    let path = dir.join(ARCHIVE);
    let mut args: Vec<OsString> = vec![
        "--format=custom".into(),
        // The schema: pre-data and post-data, which (unlike --schema-only) includes the
        // REFRESH of each populated materialized view, as pg_dump | pg_restore does.
        "--section=pre-data".into(),
        "--section=post-data".into(),
        // Large objects are an archive of their own (below); pg_dump 15 and 16 would list each
        // one's metadata in pre-data here.
        "-B".into(),
        // steep_repl on a target is `steep init`'s business, not the snapshot's.
        "--exclude-schema=steep_repl".into(),
        format!("--snapshot={exported}").into(),
    ];
    if major >= 17 {
        args.push("--exclude-extension=steep_repl".into());
    }
    if major >= 18 {
        // Planner statistics are the target's own business (ANALYZE), as before 18.
        args.push("--no-statistics".into());
    }
    args.extend(selection.args());
    let mut file_arg = OsString::from("--file=");
    file_arg.push(&path);
    args.push(file_arg);
    run_tool(src, Tool::PgDump, pg_dump, &args, cancelled).context("pg_dump (the schema)")?;
    // Large objects (metadata, owners, privileges and contents) as pg_dump carries them, in an
    // archive of their own: data only, every table's data left out. A large object the role may
    // not read makes pg_dump fail and name it.
    let large_objects = if large_objects {
        let lo_path = dir.join(LARGE_OBJECTS);
        let mut args: Vec<OsString> = vec![
            "--format=custom".into(),
            "--data-only".into(),
            // (-b: --large-objects is 16+, --blobs before)
            "-b".into(),
            "--exclude-table-data=*.*".into(),
            format!("--snapshot={exported}").into(),
        ];
        let mut file_arg = OsString::from("--file=");
        file_arg.push(&lo_path);
        args.push(file_arg);
        run_tool(src, Tool::PgDump, pg_dump, &args, cancelled)
            .context("pg_dump (the large objects)")?;
        Some(archive_file(&lo_path, LARGE_OBJECTS)?)
    } else {
        None
    };
    Ok(SchemaFiles {
        archive: archive_file(&path, ARCHIVE)?,
        pg_dump: version,
        large_objects,
    })
}

/// A written archive as the manifest lists it (synced first).
fn archive_file(path: &Path, name: &str) -> Result<DataFile> {
    let (sha256, bytes) = sha256_of(File::open(path)?)?;
    File::open(path)?.sync_all()?;
    Ok(DataFile {
        name: name.into(),
        rows: 0,
        raw_bytes: bytes,
        stored_bytes: bytes,
        sha256,
    })
}

/// The table-of-contents lines of large objects (metadata, contents, grants, labels, comments).
fn large_object_lines(toc: &str) -> impl Iterator<Item = &str> {
    toc.lines().filter(|line| {
        entry(line).is_some_and(|e| {
            ["BLOB ", "BLOBS ", "BLOB METADATA ", "LARGE OBJECT "]
                .iter()
                .any(|p| e.starts_with(p))
                || e.starts_with("ACL - LARGE OBJECT ")
                || e.starts_with("SECURITY LABEL - LARGE OBJECT ")
                || e.starts_with("COMMENT - LARGE OBJECT ")
        })
    })
}

/// The roles that own the large objects of their archive, sorted.
pub fn large_object_owners(pg_restore: &Path, archive: &Path) -> Result<Vec<String>> {
    let toc = table_of_contents(pg_restore, archive)?;
    let mut owners: Vec<String> = large_object_lines(&toc)
        .filter_map(entry)
        .filter_map(|e| e.rsplit(' ').next())
        .filter(|o| !o.is_empty() && *o != "-")
        .map(str::to_string)
        .collect();
    owners.sort();
    owners.dedup();
    Ok(owners)
}

/// Restore the snapshot's large objects: those of the archive replace any of the same oid
/// (`--clean`, so an apply again or a resume puts them back as they were), in one transaction.
pub fn restore_large_objects(
    dst: &dyn Connect,
    r: Restore<'_>,
    cancelled: &dyn Fn() -> bool,
) -> Result<()> {
    let toc = table_of_contents(r.pg_restore, r.archive)?;
    // Only what belongs to large objects (an archive of another pg_dump could hold more).
    let mut list = String::new();
    for line in large_object_lines(&toc) {
        list.push_str(line);
        list.push('\n');
    }
    let tmp = PrivateDir::new("steep-toc")?;
    let list_path = tmp.path().join("toc.list");
    std::fs::write(&list_path, list)?;
    let mut args: Vec<OsString> = vec![
        "--clean".into(),
        "--if-exists".into(),
        "--single-transaction".into(),
        "--exit-on-error".into(),
    ];
    if r.no_owner {
        args.push("--no-owner".into());
    }
    if r.no_privileges {
        args.push("--no-privileges".into());
    }
    let mut l = OsString::from("--use-list=");
    l.push(&list_path);
    args.push(l);
    args.push(r.archive.into());
    run_tool(dst, Tool::PgRestore, r.pg_restore, &args, cancelled)
        .context("pg_restore (the large objects)")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    PreData,
    PostData,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::PreData => "pre-data",
            Section::PostData => "post-data",
        }
    }
}

/// What pg_restore needs to restore one section of a snapshot's archive.
pub struct Restore<'a> {
    pub pg_restore: &'a Path,
    pub archive: &'a Path,
    /// The pg_dump version line the archive was written with (from the manifest).
    pub pg_dump: &'a str,
    pub parallel: usize,
    /// Entries whose object the target already has are left out (a resumed apply).
    pub skip_existing: Option<&'a mut postgres::Client>,
    /// pg_restore's --no-owner / --no-privileges.
    pub no_owner: bool,
    pub no_privileges: bool,
}

/// `pg_restore --list` of the archive.
fn table_of_contents(pg_restore: &Path, archive: &Path) -> Result<String> {
    let toc = Command::new(pg_restore)
        .arg("--list")
        .arg(archive)
        .output()
        .with_context(|| format!("running {}", pg_restore.display()))?;
    if !toc.status.success() {
        bail!(
            "pg_restore --list {}: {}",
            archive.display(),
            String::from_utf8_lossy(&toc.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&toc.stdout).into_owned())
}

/// The (catalog oid, object oid, description) of every entry of the archive's table of contents
/// that names an object by oid (ACLs and comments name none).
pub fn catalog_objects(
    pg_restore_or_dump: &Path,
    archive: &Path,
) -> Result<Vec<(i64, i64, String)>> {
    // pg_restore sits next to the pg_dump that wrote the archive.
    let pg_restore = pg_restore_or_dump.with_file_name("pg_restore");
    let toc = table_of_contents(&pg_restore, archive)?;
    Ok(toc
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            // "ID; CATALOG OID DESC SCHEMA TAG OWNER"
            let (_, rest) = l.split_once("; ")?;
            let mut it = rest.splitn(3, ' ');
            let (catalog, oid) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?);
            let desc = entry(l)?.split(' ').next()?.to_string();
            (catalog != 0).then_some((catalog, oid, desc))
        })
        .collect())
}

/// The oids of the relations the archive's table of contents lists as tables or sequences
/// (pg_class is catalog 1259).
pub fn relation_oids(objects: &[(i64, i64, String)]) -> Vec<i64> {
    objects
        .iter()
        .filter(|(catalog, _, desc)| *catalog == 1259 && (desc == "TABLE" || desc == "SEQUENCE"))
        .map(|(_, oid, _)| *oid)
        .collect()
}

/// What the archive's objects need on a target: the extensions it creates and the roles that own
/// what it restores (steep_repl's own entries left out), each sorted, from one read of its table
/// of contents.
pub struct Prerequisites {
    pub extensions: Vec<String>,
    pub owners: Vec<String>,
}

pub fn prerequisites(pg_restore: &Path, archive: &Path) -> Result<Prerequisites> {
    let toc = table_of_contents(pg_restore, archive)?;
    let kept = filter_toc(&toc, &HashSet::new());
    let entries: Vec<&str> = kept.lines().filter_map(entry).collect();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v
    };
    Ok(Prerequisites {
        extensions: sorted(
            entries
                .iter()
                .filter_map(|e| e.strip_prefix("EXTENSION - "))
                .filter_map(|rest| rest.split(' ').next())
                .map(str::to_string)
                .collect(),
        ),
        owners: sorted(
            entries
                .iter()
                .filter_map(|e| e.rsplit(' ').next())
                .filter(|o| !o.is_empty() && *o != "-")
                .map(str::to_string)
                .collect(),
        ),
    })
}

/// Restore one section into `dst`: pre-data in one transaction, post-data `parallel` at a time.
pub fn restore(
    dst: &dyn Connect,
    section: Section,
    mut r: Restore<'_>,
    cancelled: &dyn Fn() -> bool,
) -> Result<()> {
    let need = tool_major(r.pg_dump);
    match tool_version(r.pg_restore) {
        None => bail!("{} does not run", r.pg_restore.display()),
        Some((have, major)) if major < need => bail!(
            "{} is {have}, older than the pg_dump that wrote the snapshot's schema ({}): use \
             pg_restore {need} or newer",
            r.pg_restore.display(),
            r.pg_dump
        ),
        Some(_) => {}
    }
    let toc = table_of_contents(r.pg_restore, r.archive)?;
    let existing = match r.skip_existing.as_deref_mut() {
        Some(c) => existing_objects(c)?,
        None => HashSet::new(),
    };
    let list = filter_toc(&toc, &existing);
    // Post-data in parallel runs in two passes: indexes and the constraints indexes belong to
    // (with their partitions' attachments) first, then the rest. In one pass pg_restore -j can
    // run `ALTER INDEX ... ATTACH PARTITION` beside a foreign key added to the partitioned table,
    // and the two deadlock (seen in the parity test).
    let passes = match section {
        Section::PostData if r.parallel > 1 => vec![
            only_entries(&list, is_index_entry),
            only_entries(&list, |e| !is_index_entry(e)),
        ],
        _ => vec![list],
    };
    for list in passes {
        restore_list(dst, section, &r, &list, cancelled)?;
    }
    Ok(())
}

/// An index, a constraint with an index of its own, or a partition's index attached.
fn is_index_entry(e: &str) -> bool {
    e.starts_with("INDEX ") || e.starts_with("CONSTRAINT ")
}

/// The list with every entry `keep` refuses commented out.
fn only_entries(list: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(list.len());
    for line in list.lines() {
        if entry(line).is_some_and(|e| !keep(e)) {
            out.push(';');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn restore_list(
    dst: &dyn Connect,
    section: Section,
    r: &Restore<'_>,
    list: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<()> {
    let tmp = PrivateDir::new("steep-toc")?;
    let list_path = tmp.path().join("toc.list");
    std::fs::write(&list_path, list)?;
    let mut args: Vec<OsString> = vec![
        format!("--section={}", section.name()).into(),
        "--exit-on-error".into(),
    ];
    if r.no_owner {
        args.push("--no-owner".into());
    }
    if r.no_privileges {
        args.push("--no-privileges".into());
    }
    match section {
        Section::PreData => args.push("--single-transaction".into()),
        Section::PostData => args.push(format!("--jobs={}", r.parallel.clamp(1, 64)).into()),
    }
    let mut l = OsString::from("--use-list=");
    l.push(&list_path);
    args.push(l);
    args.push(r.archive.into());
    run_tool(dst, Tool::PgRestore, r.pg_restore, &args, cancelled)
        .with_context(|| format!("pg_restore --section={}", section.name()))
}

/// The major version in a `pg_dump (PostgreSQL) 18.6` line (0 when there is none). Debian
/// appends its own version after the number.
pub fn tool_major(version_line: &str) -> u32 {
    version_line
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A `pg_restore -l` entry line without its dump id and catalog ids: "DESC SCHEMA TAG OWNER".
fn entry(line: &str) -> Option<&str> {
    if line.starts_with(';') {
        return None;
    }
    let (_, rest) = line.split_once("; ")?;
    let mut it = rest.splitn(3, ' ');
    it.next()?;
    it.next()?;
    it.next()
}

/// The table of contents with steep_repl's own entries (pg_dump before 17 cannot leave the
/// extension out) and the already existing objects commented out, as pg_restore's `-L` reads it.
/// An entry is "DESC SCHEMA TAG OWNER": it matches an existing object when everything before its
/// last word (the owner) is that object's "DESC SCHEMA TAG " — exactly, so index `a` does not
/// stand for index `a b`.
pub fn filter_toc(toc: &str, existing: &HashSet<String>) -> String {
    let mut out = String::with_capacity(toc.len());
    for line in toc.lines() {
        let drop = entry(line).is_some_and(|e| {
            e.starts_with("EXTENSION - steep_repl ")
                || e.starts_with("COMMENT - EXTENSION steep_repl ")
                // Privileges granted on steep_repl's own objects (`steep init --grant`): pg_dump
                // keeps them even with the schema excluded; they are the target's init's business.
                || e.starts_with("ACL steep_repl ")
                // Large objects are the large-object archive's (snapshots taken before
                // -B (--no-blobs) held their metadata here).
                || e.starts_with("BLOB")
                || e.starts_with("LARGE OBJECT")
                || e.starts_with("COMMENT - LARGE OBJECT ")
                || e.starts_with("ACL - LARGE OBJECT ")
                || e.starts_with("SECURITY LABEL - LARGE OBJECT ")
                || e.rsplit_once(' ')
                    .is_some_and(|(head, _owner)| existing.contains(&format!("{head} ")))
        });
        if drop {
            out.push(';');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The target's indexes, constraints, triggers, policies and rules, each as the start of the
/// table-of-contents entry that would create it ("DESC SCHEMA TAG ").
fn existing_objects(c: &mut postgres::Client) -> Result<HashSet<String>> {
    let rows = c.query(
        "SELECT 'INDEX ' || n.nspname || ' ' || i.relname || ' '
           FROM pg_catalog.pg_class i JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace
          WHERE i.relkind IN ('i', 'I')
         UNION ALL
         SELECT CASE co.contype WHEN 'f' THEN 'FK CONSTRAINT ' WHEN 'c' THEN 'CHECK CONSTRAINT '
                                ELSE 'CONSTRAINT ' END
                || n.nspname || ' ' || t.relname || ' ' || co.conname || ' '
           FROM pg_catalog.pg_constraint co JOIN pg_catalog.pg_class t ON t.oid = co.conrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
         UNION ALL
         SELECT 'STATISTICS ' || n.nspname || ' ' || s.stxname || ' '
           FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
         UNION ALL
         SELECT 'PUBLICATION - ' || p.pubname || ' ' FROM pg_catalog.pg_publication p
         UNION ALL
         SELECT 'TRIGGER ' || n.nspname || ' ' || t.relname || ' ' || tg.tgname || ' '
           FROM pg_catalog.pg_trigger tg JOIN pg_catalog.pg_class t ON t.oid = tg.tgrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
          WHERE NOT tg.tgisinternal
         UNION ALL
         SELECT 'POLICY ' || n.nspname || ' ' || t.relname || ' ' || p.polname || ' '
           FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class t ON t.oid = p.polrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
         UNION ALL
         SELECT 'RULE ' || n.nspname || ' ' || t.relname || ' ' || r.rulename || ' '
           FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class t ON t.oid = r.ev_class
           JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
          WHERE r.rulename <> '_RETURN'",
        &[],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Run a libpq program (pg_dump, pg_restore) against the server `c` reaches, as `c`'s own
/// connections would: the password only in the child's environment, none of the caller's PG*
/// variables (the connection string says everything). `cancelled` stops it within a second.
fn run_tool(
    c: &dyn Connect,
    tool: Tool,
    program: &Path,
    args: &[OsString],
    cancelled: &dyn Fn() -> bool,
) -> Result<()> {
    match c.tool_access(tool)? {
        ToolAccess::Params { mut params, role } => {
            let password = params.get("password").map(str::to_string);
            params.remove("password");
            let mut args = args.to_vec();
            if let Some(role) = role {
                args.push(format!("--role={role}").into());
            }
            spawn(
                program,
                &args,
                &params.to_conninfo(),
                password.as_deref(),
                cancelled,
            )
        }
        ToolAccess::Proxy { dbname, user } => session_proxy::with_proxy(c, |dir| {
            let mut p = ConnParams::default();
            p.set("host", dir.to_string_lossy())?;
            p.set("port", session_proxy::PORT.to_string())?;
            p.set("dbname", dbname)?;
            p.set("user", user)?;
            spawn(program, args, &p.to_conninfo(), None, cancelled)
        }),
    }
}

fn spawn(
    program: &Path,
    args: &[OsString],
    conninfo: &str,
    password: Option<&str>,
    cancelled: &dyn Fn() -> bool,
) -> Result<()> {
    let mut cmd = Command::new(program);
    // The engine's thread blocks every signal (so a worker's PostgreSQL handlers keep them) and a
    // backend ignores some; a child inherits both. pg_dump and pg_restore must see our SIGTERM to
    // cancel their queries before they exit: they start with a clean signal state.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [
                libc::SIGHUP,
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGPIPE,
                libc::SIGTERM,
                libc::SIGUSR1,
                libc::SIGUSR2,
                libc::SIGCHLD,
                libc::SIGTTIN,
                libc::SIGTTOU,
                libc::SIGXFSZ,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    // A process group of its own: `pg_restore -j` forks workers, and a cancel must stop them too
    // (they also hold the stderr pipe open).
    cmd.process_group(0)
        .args(args)
        .arg(format!("--dbname={conninfo}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stopping: Option<Instant> = None;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if cancelled() {
            match stopping {
                // SIGTERM first: pg_restore and pg_dump then cancel their own queries.
                None => {
                    // SAFETY: signalling our own child's process group.
                    unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
                    stopping = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_millis(500) => {
                    // SAFETY: as above.
                    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = reader.join().unwrap_or_default();
    if stopping.is_some() {
        return Err(crate::engine::error::cancelled(&format!(
            "{} was stopped",
            program.display()
        )));
    }
    if !status.success() {
        let err = err.trim();
        if err.is_empty() {
            bail!("{} ended with {status} and said nothing", program.display());
        }
        bail!("{err}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toc_leaves_out_steep_repl_and_existing_objects() {
        let toc = ";\n; Archive created at 2026-11-26\n\
                   5; 2615 2200 SCHEMA - public pg_database_owner\n\
                   2; 3079 16385 EXTENSION - steep_repl \n\
                   3; 0 0 COMMENT - EXTENSION steep_repl \n\
                   210; 1259 16390 TABLE public t bob\n\
                   3300; 2606 16395 CONSTRAINT public t t_pkey bob\n\
                   3301; 1259 16396 INDEX public t_v_idx bob\n\
                   3302; 2606 16397 FK CONSTRAINT public c c_pid_fkey bob\n";
        let existing: HashSet<String> = ["CONSTRAINT public t t_pkey ", "INDEX public a "]
            .into_iter()
            .map(String::from)
            .collect();
        let out = filter_toc(
            &format!(
                "{toc}3303; 1259 16398 INDEX public a b bob\n3304; 1259 16399 INDEX public a bob\n"
            ),
            &existing,
        );
        assert!(
            out.contains("\n3303; 1259"),
            "index `a b` is not index `a`: {out}"
        );
        assert!(out.contains("\n;3304; 1259"), "{out}");
        let dropped: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with(";2") || l.starts_with(";3"))
            .collect();
        assert_eq!(dropped.len(), 4, "{out}");
        assert!(out.contains(";2; 3079 16385 EXTENSION - steep_repl"));
        assert!(
            filter_toc(
                "5; 0 0 ACL steep_repl FUNCTION _compression(spec text) postgres\n",
                &HashSet::new()
            )
            .starts_with(';'),
            "grants on steep_repl's functions are left out"
        );
        assert!(out.contains(";3300; 2606"));
        assert!(out.contains("\n3301; 1259 16396 INDEX"));
        assert!(
            out.contains("\n3302; 2606"),
            "an FK is not a CONSTRAINT entry: {out}"
        );
        assert!(out.contains("\n210; 1259 16390 TABLE public t bob"));
    }

    #[test]
    fn majors_of_version_lines() {
        assert_eq!(tool_major("pg_dump (PostgreSQL) 18.6"), 18);
        assert_eq!(
            tool_major("pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"),
            15
        );
        assert_eq!(tool_major(""), 0);
    }
}
