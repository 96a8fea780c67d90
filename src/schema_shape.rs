//! A table's shape — what replication and snapshots need two servers to agree on — read with one
//! catalog query and compared with one diff. `steep schema compare` (through the extension's
//! `table_shapes()` and `shape_diff()`, which run this code) and `snapshot apply --schema verify`
//! (which runs the same query text, with or without the extension on the target) both use it.
//!
//! What breaks replication: a table or a column on one side only, a different type, nullability,
//! primary key, partitioning or generated-ness. What does not: defaults and column order (logical
//! replication matches columns by name), and a generated column on one side only (it is computed
//! where it is, never sent).

use serde::{Deserialize, Serialize};

use crate::engine::catalog::USER_RELATION;
use crate::sql::qualified;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnShape {
    pub name: String,
    /// 1-based among the table's live columns (dropped ones do not count).
    pub position: i32,
    /// format_type() with search_path = pg_catalog (schema-qualified outside pg_catalog).
    #[serde(rename = "type")]
    pub type_name: String,
    pub not_null: bool,
    #[serde(default)]
    pub default: Option<String>,
    /// A generated column, stored or virtual (its value is computed, never copied or replicated).
    /// None when the shape came from somewhere that did not say (a 0.3.0 capture, a format-2
    /// manifest): then generated-ness, the default (which may be the generation expression) and
    /// the table's partitioning are not compared.
    #[serde(default)]
    pub generated: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableShape {
    pub schema: String,
    pub name: String,
    /// A partitioned table (its rows live in its partitions).
    #[serde(default)]
    pub partitioned: bool,
    pub columns: Vec<ColumnShape>,
    pub primary_key: Vec<String>,
}

impl TableShape {
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    /// Whether this shape says which columns are generated (see `ColumnShape::generated`).
    fn complete(&self) -> bool {
        self.columns.iter().all(|c| c.generated.is_some())
    }
}

impl ColumnShape {
    pub fn is_generated(&self) -> bool {
        self.generated == Some(true)
    }
}

/// Every user table (plain, partition, partitioned) with its shape, oid and size, in name order.
/// Run with search_path = pg_catalog, pg_temp (type names are then qualified the same way
/// everywhere). Columns: schema, name, partitioned, columns (JSON), primary key (JSON), oid, size.
/// With `sizes` false the size column is 0: reading a table's size waits for its lock, which
/// comparing shapes has no need to.
pub fn table_shapes_sql(sizes: bool) -> String {
    TABLE_SHAPES
        .replace("{user}", USER_RELATION)
        .replace("{sizes}", if sizes { "true" } else { "false" })
}

const TABLE_SHAPES: &str = "
    SELECT n.nspname::text, c.relname::text, c.relkind = 'p',
           (SELECT coalesce(json_agg(json_build_object(
                       'name', a.attname, 'position', a.pos,
                       'type', format_type(a.atttypid, a.atttypmod),
                       'not_null', a.attnotnull,
                       'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                       'generated', a.attgenerated <> '') ORDER BY a.pos), '[]')
            FROM (SELECT x.*, row_number() OVER (ORDER BY x.attnum)::int AS pos
                  FROM pg_attribute x
                  WHERE x.attrelid = c.oid AND x.attnum > 0 AND NOT x.attisdropped) a
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum)::text,
           (SELECT coalesce(json_agg(a.attname ORDER BY k.ord), '[]')
            FROM pg_constraint con
            CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
            WHERE con.conrelid = c.oid AND con.contype = 'p')::text,
           c.oid::int8,
           -- (a partitioned table holds no rows; its size would only wait for its lock)
           CASE WHEN {sizes} AND c.relkind = 'r' THEN pg_relation_size(c.oid) ELSE 0 END::int8
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND {user}
    ORDER BY 1, 2";

/// A shape from TABLE_SHAPES's first five columns (as text).
pub fn from_row(
    schema: String,
    name: String,
    partitioned: bool,
    columns: &str,
    primary_key: &str,
) -> Result<TableShape, serde_json::Error> {
    Ok(TableShape {
        schema,
        name,
        partitioned,
        columns: serde_json::from_str(columns)?,
        primary_key: serde_json::from_str(primary_key)?,
    })
}

/// One way two shapes differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub schema: String,
    pub table: String,
    pub column: Option<String>,
    /// table_missing_on_peer, table_missing_locally, partitioned, primary_key, missing_on_peer,
    /// missing_locally, type, nullable, generated, default, position.
    pub difference: String,
    pub local: Option<String>,
    pub peer: Option<String>,
    pub breaks_replication: bool,
}

/// Which tables count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every table of either side (two nodes that are to replicate).
    Both,
    /// The local side's tables (a snapshot's, against a target that may hold others).
    LocalTables,
}

/// Every difference between `local` and `peer`, ordered by table, then table-level ones first,
/// then by column and kind.
pub fn diff(local: &[TableShape], peer: &[TableShape], scope: Scope) -> Vec<Difference> {
    let mut out = Vec::new();
    let find = |side: &[TableShape], t: &TableShape| {
        side.iter()
            .find(|o| o.schema == t.schema && o.name == t.name)
            .cloned()
    };
    let mut names: Vec<(String, String)> = local
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    if scope == Scope::Both {
        names.extend(peer.iter().map(|t| (t.schema.clone(), t.name.clone())));
    }
    names.sort();
    names.dedup();
    for (schema, name) in names {
        let key = TableShape {
            schema: schema.clone(),
            name: name.clone(),
            partitioned: false,
            columns: Vec::new(),
            primary_key: Vec::new(),
        };
        let d = |column: Option<&str>, what: &str, l: Option<String>, p: Option<String>, b| {
            Difference {
                schema: schema.clone(),
                table: name.clone(),
                column: column.map(str::to_string),
                difference: what.to_string(),
                local: l,
                peer: p,
                breaks_replication: b,
            }
        };
        let (l, p) = match (find(local, &key), find(peer, &key)) {
            (Some(l), Some(p)) => (l, p),
            (Some(_), None) => {
                out.push(d(None, "table_missing_on_peer", None, None, true));
                continue;
            }
            (None, _) => {
                out.push(d(None, "table_missing_locally", None, None, true));
                continue;
            }
        };
        let kind = |t: &TableShape| {
            if t.partitioned {
                "partitioned"
            } else {
                "plain"
            }
            .to_string()
        };
        let complete = l.complete() && p.complete();
        if complete && l.partitioned != p.partitioned {
            out.push(d(None, "partitioned", Some(kind(&l)), Some(kind(&p)), true));
        }
        if l.primary_key != p.primary_key {
            out.push(d(
                None,
                "primary_key",
                Some(l.primary_key.join(", ")),
                Some(p.primary_key.join(", ")),
                true,
            ));
        }
        let mut cols: Vec<Difference> = Vec::new();
        for c in &l.columns {
            if !p.columns.iter().any(|o| o.name == c.name) {
                cols.push(d(
                    Some(&c.name),
                    "missing_on_peer",
                    Some(c.type_name.clone()),
                    None,
                    !c.is_generated(),
                ));
            }
        }
        for c in &p.columns {
            if !l.columns.iter().any(|o| o.name == c.name) {
                cols.push(d(
                    Some(&c.name),
                    "missing_locally",
                    None,
                    Some(c.type_name.clone()),
                    !c.is_generated(),
                ));
            }
        }
        // Order matters only among the columns both sides have: a missing column is reported
        // once, not as a shift of every column after it.
        let rank = |side: &TableShape, other: &TableShape, name: &str| {
            side.columns
                .iter()
                .filter(|c| other.columns.iter().any(|o| o.name == c.name))
                .position(|c| c.name == name)
        };
        let nn = |b: bool| if b { "NOT NULL" } else { "NULL" }.to_string();
        let gen = |b: bool| if b { "generated" } else { "stored" }.to_string();
        for c in &l.columns {
            let Some(o) = p.columns.iter().find(|o| o.name == c.name) else {
                continue;
            };
            let col = Some(c.name.as_str());
            if c.type_name != o.type_name {
                cols.push(d(
                    col,
                    "type",
                    Some(c.type_name.clone()),
                    Some(o.type_name.clone()),
                    true,
                ));
            }
            if c.not_null != o.not_null {
                cols.push(d(
                    col,
                    "nullable",
                    Some(nn(c.not_null)),
                    Some(nn(o.not_null)),
                    true,
                ));
            }
            let known = c.generated.zip(o.generated);
            if let Some((cg, og)) = known.filter(|(a, b)| a != b) {
                cols.push(d(col, "generated", Some(gen(cg)), Some(gen(og)), true));
            }
            if known.is_some() && c.default != o.default {
                cols.push(d(
                    col,
                    "default",
                    c.default.clone(),
                    o.default.clone(),
                    false,
                ));
            }
            if rank(&l, &p, &c.name) != rank(&p, &l, &c.name) {
                cols.push(d(
                    col,
                    "position",
                    Some(c.position.to_string()),
                    Some(o.position.to_string()),
                    false,
                ));
            }
        }
        cols.sort_by(|a, b| (&a.column, &a.difference).cmp(&(&b.column, &b.difference)));
        out.extend(cols);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, position: i32, ty: &str) -> ColumnShape {
        ColumnShape {
            name: name.into(),
            position,
            type_name: ty.into(),
            not_null: false,
            default: None,
            generated: Some(false),
        }
    }

    fn table(name: &str, columns: Vec<ColumnShape>) -> TableShape {
        TableShape {
            schema: "public".into(),
            name: name.into(),
            partitioned: false,
            columns,
            primary_key: vec!["id".into()],
        }
    }

    #[test]
    fn blocking_and_non_blocking_differences() {
        let l = vec![table(
            "t",
            vec![
                col("id", 1, "integer"),
                col("a", 2, "text"),
                ColumnShape {
                    generated: Some(true),
                    ..col("g", 3, "integer")
                },
            ],
        )];
        let mut p = l.clone();
        p[0].columns[1].default = Some("'x'::text".into());
        assert_eq!(
            diff(&l, &p, Scope::Both)
                .iter()
                .map(|d| (d.difference.as_str(), d.breaks_replication))
                .collect::<Vec<_>>(),
            [("default", false)]
        );
        // A generated column on one side only is computed there: not blocking. Generated on
        // one side, stored on the other: blocking.
        p[0].columns.pop();
        assert!(!diff(&l, &p, Scope::Both)
            .iter()
            .any(|d| d.difference == "missing_on_peer" && d.breaks_replication));
        p[0].columns.push(col("g", 3, "integer"));
        assert!(diff(&l, &p, Scope::Both)
            .iter()
            .any(|d| d.difference == "generated" && d.breaks_replication));
        // Partitioned on one side only.
        let mut q = l.clone();
        q[0].partitioned = true;
        assert!(diff(&l, &q, Scope::Both)
            .iter()
            .any(|d| d.difference == "partitioned" && d.breaks_replication));
        // A shape that does not say which columns are generated (an older capture) compares
        // neither generated-ness, defaults nor partitioning.
        let mut old = q.clone();
        for c in &mut old[0].columns {
            c.generated = None;
            c.default = Some("x".into());
        }
        old[0].columns.pop();
        assert!(diff(&l, &old, Scope::Both)
            .iter()
            .all(|d| !d.breaks_replication));
    }

    #[test]
    fn order_counts_only_among_shared_columns_and_scope_picks_tables() {
        let l = vec![table(
            "t",
            vec![
                col("id", 1, "integer"),
                col("x", 2, "text"),
                col("a", 3, "text"),
            ],
        )];
        let p = vec![
            table("t", vec![col("id", 1, "integer"), col("a", 2, "text")]),
            table("extra", vec![col("id", 1, "integer")]),
        ];
        let all = diff(&l, &p, Scope::Both);
        assert_eq!(
            all.iter()
                .map(|d| d.difference.as_str())
                .collect::<Vec<_>>(),
            ["table_missing_locally", "missing_on_peer"]
        );
        let ours = diff(&l, &p, Scope::LocalTables);
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].column.as_deref(), Some("x"));
    }
}
