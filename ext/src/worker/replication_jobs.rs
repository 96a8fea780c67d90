//! The replication jobs: init (the library's steps, as `steep replication init` drives them in
//! client mode) and drop. Superusers' jobs only: the replication connection to this server is
//! the worker's own login (a walsender cannot be restricted to a role), so the owner must be a
//! role that may do everything that login may.

use std::time::Duration;

use pgrx::prelude::*;
use serde_json::Value;
use steep::engine::apply::SchemaMode;
use steep::engine::counters::Counters;
use steep::engine::merge::strategy::Strategy;
use steep::engine::replication::init::{self, InitOptions, Node, Source};
use steep::engine::replication::objects;
use steep::engine::Connect;

use crate::merge_api::{resolve_peer, PeerConnect};
use crate::snapshot_api::snapshot_dir;
use crate::worker::job::{JobCtx, JobError};
use crate::worker::snapshot_jobs::{drive, param_str, server_program, worker_connect};
use crate::worker::tx;

/// The job's owner is a superuser now (it may have been demoted since queueing).
fn require_superuser(ctx: &JobCtx) -> Result<(), JobError> {
    let owner = ctx.job.created_by.clone();
    let is_super = tx(move || {
        Spi::get_one_with_args::<bool>(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[owner.as_str().into()],
        )
    })?
    .map_err(|e| JobError::Failed(format!("reading the owner's role: {e}")))?
    .unwrap_or(false);
    if !is_super {
        return Err(JobError::Failed(format!(
            "role {:?} is no longer a superuser: replication jobs are for superusers",
            ctx.job.created_by
        )));
    }
    Ok(())
}

pub fn init(ctx: &mut JobCtx) -> Result<Value, JobError> {
    require_superuser(ctx)?;
    let p = ctx.job.params.clone();
    let o = &p["options"];
    let peer = param_str(&p, "peer")?;
    let owner = ctx.job.created_by.clone();
    let (b_params, _) = tx(move || resolve_peer(&owner, &peer))?.map_err(JobError::Failed)?;
    let from: Source = param_str(&p, "source")?.parse().map_err(JobError::engine)?;
    let schema: SchemaMode = o["schema"]
        .as_str()
        .unwrap_or("verify")
        .parse()
        .map_err(JobError::engine)?;
    let merge_strategy = match o["strategy"].as_str() {
        Some(s) => Some(
            s.parse::<Strategy>()
                .map_err(|e| JobError::Failed(e.to_string()))?,
        ),
        None => None,
    };
    let local = worker_connect(ctx)?;
    let a_params = local.params().clone();
    let peer_connect = PeerConnect(b_params.clone());
    let mut b_for_a = b_params.clone();
    b_for_a.remove("password");
    let opts = InitOptions {
        setup: o["setup"].as_str().unwrap_or("main").to_string(),
        from,
        one_way: o["one_way"].as_bool().unwrap_or(false),
        key_step: o["key_step"].as_i64().unwrap_or(10),
        a_for_b: param_str(o, "a_conninfo")?,
        b_for_a: o["b_conninfo"]
            .as_str()
            .map_or_else(|| b_for_a.to_conninfo(), str::to_string),
        // Server files: the copy passes through the snapshot directory (or the server's
        // temporary directory), in a directory of its own that is removed afterwards.
        work_dir: snapshot_dir()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
        parallel: o["parallel"].as_u64().unwrap_or(2).clamp(1, 64) as usize,
        chunk_bytes: o["chunk_size_mb"].as_u64().unwrap_or(256).max(1) << 20,
        pg_dump: (schema == SchemaMode::Create)
            .then(|| server_program("pg_dump"))
            .flatten(),
        pg_restore: (schema == SchemaMode::Create)
            .then(|| server_program("pg_restore"))
            .flatten(),
        schema,
        marker_timeout: Duration::from_secs(o["marker_timeout_seconds"].as_u64().unwrap_or(60)),
        merge_strategy,
    };
    let progress = Counters::default();
    let report = drive(ctx, &progress, || {
        init::init(
            &Node {
                connect: &local,
                params: &a_params,
            },
            &Node {
                connect: &peer_connect,
                params: &b_params,
            },
            &opts,
            &progress,
            // The engine's thread may not call PostgreSQL's logging; the report says it all.
            &|_| {},
        )
    })?;
    serde_json::to_value(report).map_err(|e| JobError::Failed(e.to_string()))
}

pub fn drop(ctx: &mut JobCtx) -> Result<Value, JobError> {
    require_superuser(ctx)?;
    let setup = param_str(&ctx.job.params, "setup")?;
    let local = worker_connect(ctx)?;
    let progress = Counters::default();
    let removed = drive(ctx, &progress, || {
        let mut c = local.connect()?;
        c.batch_execute(steep::engine::replication::names::PINNED)?;
        let r = objects::remove_setup(&mut [(&mut c, "this node")], &setup);
        if r.failed.is_empty() {
            Ok(r.removed)
        } else {
            anyhow::bail!(
                "removed {}; could not remove: {}",
                if r.removed.is_empty() {
                    "nothing".to_string()
                } else {
                    r.removed.join(", ")
                },
                r.failed.join("; ")
            )
        }
    })?;
    Ok(serde_json::json!({ "removed": removed }))
}
