//! How jobs act as their owner, never as the superuser the workers are.
//!
//! Job work runs under PostgreSQL's *security-restricted operation* with the owner's user id —
//! the mechanism VACUUM, CREATE INDEX and REFRESH MATERIALIZED VIEW use to run a table owner's
//! code. Inside it `current_user` is the owner, every privilege check is the owner's, and
//! `SET ROLE`, `RESET ROLE` and `SET SESSION AUTHORIZATION` are refused, so no trigger, CHECK,
//! default, policy, index expression or DDL the job runs can climb back to the session's
//! superuser. Two places use it:
//! * in the job worker's own process, around the SPI work it does for the owner (`as_owner`);
//! * on each client connection the engine opens to this server (and pg_dump/pg_restore through
//!   the session proxy): `_restrict_session` puts the whole session under it for good.
//!
//! The workers' own bookkeeping runs as the bootstrap superuser with `search_path` pinned to
//! `pg_catalog, pg_temp` (a database owner controls the database's default search_path) and
//! schema-qualified, parameterised statements.

use std::ffi::CString;

use pgrx::prelude::*;

pgrx::extension_sql_file!(
    "../sql/security.sql",
    name = "security",
    requires = ["snapshots", "operations_api", restrict_session]
);

const RESTRICTED: i32 = pg_sys::SECURITY_RESTRICTED_OPERATION as i32;

/// The oid of role `name`, or None when it does not exist.
fn role_oid(name: &str) -> Option<pg_sys::Oid> {
    let c = CString::new(name).ok()?;
    // SAFETY: get_role_oid with missing_ok = true returns InvalidOid instead of raising.
    let oid = unsafe { pg_sys::get_role_oid(c.as_ptr(), true) };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// Whether the session is already restricted (security-restricted operation or a local user id
/// change, as inside a SECURITY DEFINER function).
fn restricted_now() -> bool {
    let (mut user, mut ctx) = (pg_sys::InvalidOid, 0);
    // SAFETY: reads two process globals.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut ctx) };
    ctx != 0
}

/// Run `f` as `owner` under security-restricted operation, then return to the worker's own
/// identity. On an ERROR inside, the transaction's abort restores the identity the transaction
/// started with (PostgreSQL saves it at transaction start), so call this inside a transaction.
pub fn as_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let (mut user, mut ctx) = (pg_sys::InvalidOid, 0);
    // SAFETY: reads two process globals.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut ctx) };
    struct Restore(pg_sys::Oid, i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: puts back what GetUserIdAndSecContext returned.
            unsafe { pg_sys::SetUserIdAndSecContext(self.0, self.1) };
        }
    }
    let _restore = Restore(user, ctx);
    // SAFETY: owner is an existing role's oid; the guard above restores the previous state.
    unsafe { pg_sys::SetUserIdAndSecContext(owner, ctx | RESTRICTED) };
    f()
}

/// Undo what a database owner's `ALTER DATABASE ... SET` could make of a worker's session: pin
/// search_path to pg_catalog (then pg_temp), so the worker's SQL never resolves a function or
/// operator put in front of the built-ins, and drop a `role` setting, which would make the
/// worker act as that role.
pub fn pin_session() {
    // SAFETY: sets GUCs in this process with the highest priority source, outside any
    // transaction-scoped nesting, right after connecting.
    unsafe {
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
        pg_sys::SetConfigOption(
            c"role".as_ptr(),
            c"none".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
    }
}

/// Put this whole session under security-restricted operation as `role`: from here on it acts
/// with exactly that role's rights and can never go back. For the workers' engine connections
/// (steep_repl.worker_conninfo); only a superuser session may do it, and only once. Returns
/// whether the role is a superuser.
#[pg_extern(volatile, name = "_restrict_session")]
fn restrict_session(role: &str) -> bool {
    // SAFETY: superuser() reads the current user's catalog row.
    if !unsafe { pg_sys::superuser() } {
        error!(
            "steep_repl._restrict_session is for the workers' own connections, which must log in \
             as a superuser (steep_repl.worker_conninfo)"
        );
    }
    if restricted_now() {
        error!("this session is already restricted");
    }
    // The restriction outlives the transaction that sets it (the session keeps it until it
    // ends). PostgreSQL's assertion-enabled development builds assert that nothing is restricted
    // between transactions, so there the session would crash: refuse instead.
    if Spi::get_one::<String>("SELECT pg_catalog.current_setting('debug_assertions')")
        .ok()
        .flatten()
        .as_deref()
        == Some("on")
    {
        error!(
            "steep_repl's direct mode does not run on a server built with --enable-cassert \
             (its sessions stay restricted across transactions, which such builds assert \
             against): use client mode"
        );
    }
    let Some(oid) = role_oid(role) else {
        error!("role {role:?} does not exist (it was dropped after the job was queued)");
    };
    // SAFETY: plain catalog lookup of an existing role.
    let is_super = unsafe { pg_sys::superuser_arg(oid) };
    // SAFETY: an existing role; nothing restores this — the session stays restricted until it
    // ends (an aborting transaction restores the state its start saved, which for every later
    // transaction is this one).
    unsafe { pg_sys::SetUserIdAndSecContext(oid, RESTRICTED) };
    is_super
}
