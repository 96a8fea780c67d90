//! What a snapshot's schema needs on a target that it does not create itself, and the one check
//! of it before `apply --schema create` changes anything.
//!
//! The archive's table of contents names the extensions it creates and the owners of what it
//! restores. It cannot name the roles its grants and policies mention (ACL entries carry SQL, not
//! catalog ids) nor the types its tables use from schemas the snapshot leaves out (`-t` dumps a
//! table, not its types), so generate reads those on the source, in the snapshot's transaction,
//! and the manifest records them (format 4).

use anyhow::{bail, Context, Result};

use crate::engine::manifest::Needs;

/// pg_class, pg_type and pg_extension: catalogs whose objects the table of contents names by oid.
const PG_CLASS: i64 = 1259;
const PG_TYPE: i64 = 1247;
const PG_EXTENSION: i64 = 3079;

/// Read on the source what the archive needs and does not create. `objects` are the (catalog,
/// oid) pairs of the archive's table of contents; `selected` says whether include patterns (-t,
/// -n) chose part of the database (without them pg_dump dumps everything not excluded, including
/// grants on built-in objects, which name no object of their own in the table of contents).
pub fn of_source(
    c: &mut postgres::Client,
    objects: &[(i64, i64)],
    selected: bool,
) -> Result<Needs> {
    let (catalogs, oids): (Vec<i64>, Vec<i64>) = objects.iter().copied().unzip();
    let relations: Vec<i64> = objects
        .iter()
        .filter(|(catalog, _)| *catalog == PG_CLASS)
        .map(|(_, oid)| *oid)
        .collect();
    let extensions: Vec<i64> = objects
        .iter()
        .filter(|(catalog, _)| *catalog == PG_EXTENSION)
        .map(|(_, oid)| *oid)
        .collect();
    let created_types: Vec<i64> = objects
        .iter()
        .filter(|(catalog, _)| *catalog == PG_TYPE)
        .map(|(_, oid)| *oid)
        .collect();
    // Roles named by grants ('a') and policies ('r') on what the archive holds; steep_repl's own
    // objects are left out of snapshots. Column grants are recorded against their table.
    let roles = c
        .query(
            "SELECT DISTINCT d.deptype::text, r.rolname::text
               FROM pg_catalog.pg_shdepend d
               JOIN pg_catalog.pg_roles r ON r.oid = d.refobjid
              WHERE d.dbid = (SELECT oid FROM pg_catalog.pg_database
                               WHERE datname = pg_catalog.current_database())
                AND d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
                AND d.deptype IN ('a', 'r')
                AND (NOT $3 OR (d.classid::int8, d.objid::int8) IN
                       (SELECT * FROM unnest($1::int8[], $2::int8[])))
                AND NOT EXISTS (
                      SELECT FROM pg_catalog.pg_depend e
                        JOIN pg_catalog.pg_extension x ON x.oid = e.refobjid
                       WHERE e.classid = d.classid AND e.objid = d.objid AND e.deptype = 'e'
                         AND x.extname = 'steep_repl')
                -- pg_dump leaves out these schemas, and steep_repl (whose grants `steep init
                -- --grant` makes) is the target's init's business.
                AND coalesce(CASE d.classid
                      WHEN 'pg_catalog.pg_namespace'::pg_catalog.regclass THEN
                        (SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid = d.objid)
                      WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN
                        (SELECT n.nspname FROM pg_catalog.pg_class c
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                          WHERE c.oid = d.objid)
                      WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN
                        (SELECT n.nspname FROM pg_catalog.pg_proc p
                           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                          WHERE p.oid = d.objid)
                      WHEN 'pg_catalog.pg_type'::pg_catalog.regclass THEN
                        (SELECT n.nspname FROM pg_catalog.pg_type t
                           JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
                          WHERE t.oid = d.objid)
                      WHEN 'pg_catalog.pg_default_acl'::pg_catalog.regclass THEN
                        (SELECT n.nspname FROM pg_catalog.pg_default_acl a
                           JOIN pg_catalog.pg_namespace n ON n.oid = a.defaclnamespace
                          WHERE a.oid = d.objid)
                    END, '') NOT IN ('steep_repl', 'information_schema')
              ORDER BY 1, 2",
            &[&catalogs, &oids, &selected],
        )
        .context("reading the roles the snapshot's grants and policies name")?;
    let mut needs = Needs::default();
    for r in &roles {
        let (kind, role): (String, String) = (r.get(0), r.get(1));
        match kind.as_str() {
            "a" => needs.grantees.push(role),
            _ => needs.policy_roles.push(role),
        }
    }
    // Types the archive's tables use (through arrays, domains, ranges, multiranges and composite
    // attributes) that neither PostgreSQL nor the archive creates. An extension's types come
    // with the extension, which the table of contents names.
    needs.types = c
        .query(
            "WITH RECURSIVE used(t) AS (
                 SELECT a.atttypid FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid::int8 = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
                 UNION
                 SELECT x FROM used u
                   JOIN pg_catalog.pg_type ty ON ty.oid = u.t
                  CROSS JOIN LATERAL unnest(ARRAY[
                        NULLIF(ty.typelem, 0), NULLIF(ty.typbasetype, 0),
                        (SELECT rngsubtype FROM pg_catalog.pg_range WHERE rngtypid = ty.oid),
                        (SELECT rngtypid FROM pg_catalog.pg_range WHERE rngmultitypid = ty.oid)]
                      || ARRAY(SELECT atttypid FROM pg_catalog.pg_attribute
                                WHERE attrelid = ty.typrelid AND ty.typrelid <> 0
                                  AND attnum > 0 AND NOT attisdropped)) AS x
                  WHERE x IS NOT NULL)
             SELECT DISTINCT pg_catalog.format('%I.%I', n.nspname, ty.typname)
               FROM used JOIN pg_catalog.pg_type ty ON ty.oid = used.t
               JOIN pg_catalog.pg_namespace n ON n.oid = ty.typnamespace
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND NOT ty.oid::int8 = ANY($2)
                -- an array or a multirange comes with its element or range
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_type e WHERE e.typarray = ty.oid)
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_range g WHERE g.rngmultitypid = ty.oid)
                -- a table's row type comes with the table
                AND NOT (ty.typrelid::int8 = ANY($1))
                -- an extension's type comes with the extension, when the archive creates it
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e
                                 WHERE e.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
                                   AND e.objid = ty.oid AND e.deptype = 'e'
                                   AND e.refobjid::int8 = ANY($3))
              ORDER BY 1",
            &[&relations, &created_types, &extensions],
        )
        .context("reading the types the snapshot's tables use")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(needs)
}

/// What the archive's table of contents says it needs.
pub struct FromArchive<'a> {
    pub extensions: &'a [String],
    pub owners: &'a [String],
}

/// Before anything is created: refuse with the whole list of what the target lacks — extensions
/// its PostgreSQL does not have, roles that own objects (unless `--no-owner`), roles granted
/// privileges (unless `--no-privileges`), roles policies name, and types the tables use — each
/// with its fix. (Whether the applying role may give objects to an existing role is left to
/// pg_restore, which names it.)
pub fn check(
    c: &mut postgres::Client,
    archive: FromArchive<'_>,
    needs: &Needs,
    no_owner: bool,
    no_privileges: bool,
) -> Result<()> {
    let mut missing = |sql: &str, names: &[String]| -> Result<Vec<String>> {
        Ok(c.query(sql, &[&names])
            .context("checking what the snapshot needs on the target")?
            .iter()
            .map(|r| r.get(0))
            .collect())
    };
    const ROLES: &str = "SELECT pg_catalog.quote_ident(o) FROM unnest($1::text[]) AS o
                          WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = o)
                          ORDER BY 1";
    let none = Vec::new();
    let mut problems = Vec::new();
    let extensions = missing(
        "SELECT e FROM unnest($1::text[]) AS e
          WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_available_extensions a WHERE a.name = e)
          ORDER BY 1",
        archive.extensions,
    )?;
    if !extensions.is_empty() {
        problems.push(format!(
            "extensions its PostgreSQL does not have installed: {} (install their packages on \
             the target's server)",
            extensions.join(", ")
        ));
    }
    let owners = missing(ROLES, if no_owner { &none } else { archive.owners })?;
    if !owners.is_empty() {
        problems.push(format!(
            "roles that own the snapshot's objects: {} (create them, or apply with --no-owner to \
             make the applying role the owner)",
            owners.join(", ")
        ));
    }
    let grantees = missing(
        ROLES,
        if no_privileges {
            &none
        } else {
            &needs.grantees
        },
    )?;
    if !grantees.is_empty() {
        problems.push(format!(
            "roles the snapshot's grants name: {} (create them, or apply with --no-privileges to \
             leave grants out)",
            grantees.join(", ")
        ));
    }
    let policy_roles = missing(ROLES, &needs.policy_roles)?;
    if !policy_roles.is_empty() {
        problems.push(format!(
            "roles the snapshot's row-security policies name: {} (create them)",
            policy_roles.join(", ")
        ));
    }
    let types = missing(
        "SELECT t FROM unnest($1::text[]) AS t WHERE pg_catalog.to_regtype(t) IS NULL ORDER BY 1",
        &needs.types,
    )?;
    if !types.is_empty() {
        problems.push(format!(
            "types the snapshot's tables use and it does not create: {} (create them, or take \
             the snapshot with the schemas that define them, -n)",
            types.join(", ")
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "the target lacks what the snapshot needs; nothing was changed:\n  - {}",
        problems.join("\n  - ")
    )
}
