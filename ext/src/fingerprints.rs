//! Schema fingerprints: capture, compare, per-column diff, export/import between nodes.
//! Catalog access only: no privilege on the fingerprinted tables is needed.

pgrx::extension_sql_file!(
    "../sql/fingerprints.sql",
    name = "fingerprints",
    requires = ["tables", "nodes"]
);
