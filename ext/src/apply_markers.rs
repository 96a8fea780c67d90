//! Snapshot apply's resume markers: a table and three SQL functions the engine calls inside each
//! table's load transaction. The SQL is in ../sql/apply_markers.sql.

pgrx::extension_sql_file!(
    "../sql/apply_markers.sql",
    name = "apply_markers",
    requires = ["security"]
);
