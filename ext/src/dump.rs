//! What a pg_dump of a database with steep_repl carries, and that it restores with
//! `pg_restore -j N`. The SQL is in ../sql/dump.sql.

pgrx::extension_sql_file!(
    "../sql/dump.sql",
    name = "dump",
    requires = ["security", "fingerprints", "nodes"]
);
