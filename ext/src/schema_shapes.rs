//! The one table-shape query and the one shape diff (the library's `schema_shape`), exposed to
//! SQL: fingerprints are captured from `table_shapes()` and compared with `shape_diff()`, the
//! same code `snapshot apply --schema verify` runs. The SQL that uses them is in
//! ../sql/schema_shapes.sql.

use pgrx::prelude::*;
use pgrx::JsonB;
use steep::schema_shape::{self, Scope, TableShape};

pgrx::extension_sql_file!(
    "../sql/schema_shapes.sql",
    name = "schema_shapes",
    requires = ["fingerprints", "security", table_shapes, shape_diff]
);

/// Every user table's shape, read now with the library's catalog query.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn table_shapes() -> TableIterator<
    'static,
    (
        name!(schema_name, String),
        name!(table_name, String),
        name!(partitioned, bool),
        name!(column_definitions, JsonB),
        name!(primary_key, Vec<String>),
    ),
> {
    let shapes: Vec<TableShape> = Spi::connect(|c| {
        let mut out = Vec::new();
        for r in c.select(&schema_shape::table_shapes_sql(false), None, &[])? {
            let shape = schema_shape::from_row(
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<bool>(3)?.unwrap_or(false),
                &r.get::<String>(4)?.unwrap_or_else(|| "[]".into()),
                &r.get::<String>(5)?.unwrap_or_else(|| "[]".into()),
            )
            .unwrap_or_else(|e| error!("reading table shapes: {e}"));
            out.push(shape);
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| error!("reading table shapes: {e}"));
    TableIterator::new(shapes.into_iter().map(|t| {
        let cols = serde_json::to_value(&t.columns).unwrap_or_default();
        (t.schema, t.name, t.partitioned, JsonB(cols), t.primary_key)
    }))
}

/// Every difference between two sets of shapes (jsonb arrays of {schema, name, partitioned,
/// columns, primary_key}); with `every_table` false only the local side's tables count.
#[pg_extern(immutable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn shape_diff(
    local: JsonB,
    peer: JsonB,
    every_table: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(schema_name, String),
        name!(table_name, String),
        name!(column_name, Option<String>),
        name!(difference, String),
        name!(local_value, Option<String>),
        name!(peer_value, Option<String>),
        name!(breaks_replication, bool),
    ),
> {
    let parse = |v: JsonB, side: &str| -> Vec<TableShape> {
        serde_json::from_value(v.0)
            .unwrap_or_else(|e| error!("shape_diff: the {side} shapes are malformed: {e}"))
    };
    let (l, p) = (parse(local, "local"), parse(peer, "peer"));
    let scope = if every_table {
        Scope::Both
    } else {
        Scope::LocalTables
    };
    TableIterator::new(schema_shape::diff(&l, &p, scope).into_iter().map(|d| {
        (
            d.schema,
            d.table,
            d.column,
            d.difference,
            d.local,
            d.peer,
            d.breaks_replication,
        )
    }))
}
