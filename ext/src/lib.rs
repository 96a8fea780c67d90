//! steep_repl: the extension half of steep. It installs with `CREATE EXTENSION` with or without
//! `shared_preload_libraries`; the background-worker features need the preload.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

/// Version of the loaded shared library (compare with `pg_extension.extversion`).
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn version_matches_the_crate() {
        let v = Spi::get_one::<String>("SELECT steep_repl.version()").unwrap();
        assert_eq!(v.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }

    #[pg_test]
    fn version_matches_extversion() {
        let v = Spi::get_one::<String>(
            "SELECT extversion FROM pg_extension WHERE extname = 'steep_repl'",
        )
        .unwrap();
        assert_eq!(v.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }

    #[pg_test]
    fn loaded_through_shared_preload_libraries() {
        let v = Spi::get_one::<String>("SHOW shared_preload_libraries")
            .unwrap()
            .unwrap_or_default();
        assert!(v.split(',').any(|l| l.trim() == "steep_repl"), "{v}");
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'steep_repl'"]
    }
}
