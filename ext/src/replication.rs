//! Replication init's tables on each node (marker rows, the key scheme) and its status function.
//! The SQL is in ../sql/replication.sql; the steps themselves are the library's
//! (`steep::engine::replication`), driven by `steep replication`.

pgrx::extension_sql_file!(
    "../sql/replication.sql",
    name = "replication",
    requires = ["merge_apply"]
);
