//! What snapshot apply keeps on the target besides the rows: resume markers (a table and three
//! SQL functions the engine calls inside each table's load transaction), and start_apply's
//! fire_triggers. The SQL is in ../sql/apply_markers.sql and ../sql/apply_triggers.sql.

pgrx::extension_sql_file!(
    "../sql/apply_markers.sql",
    name = "apply_markers",
    requires = ["security"]
);

pgrx::extension_sql_file!(
    "../sql/apply_triggers.sql",
    name = "apply_triggers",
    requires = ["snapshots", "security"]
);
