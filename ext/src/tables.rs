//! The extension's tables: created before anything else in the install script.

pgrx::extension_sql_file!("../sql/tables.sql", name = "tables", bootstrap);
