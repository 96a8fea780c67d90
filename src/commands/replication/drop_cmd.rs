//! `steep replication drop`: remove a setup from this node (and the peer): subscriptions first,
//! then slots, publications, marker rows, and the key scheme (increments restored).

use anyhow::Result;
use clap::Args;

use super::SetupName;
use crate::commands::require_extension;
use crate::context::Ctx;
use steep::engine::replication::{names, objects};

#[derive(Args)]
pub struct DropArgs {
    /// The other node too (its connection string).
    #[arg(long, value_name = "CONNINFO")]
    peer: Option<String>,
    #[command(flatten)]
    setup: SetupName,
}

impl DropArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        names::check_setup(&self.setup.name)?;
        let (mut a, _) = ctx.open()?;
        require_extension(&mut a)?;
        let mut b = match &self.peer {
            Some(p) => {
                let pb = ctx.other_params(p, "--peer")?;
                let mut b = steep::cli::client::connect(&pb)?;
                require_extension(&mut b)?;
                Some(b)
            }
            None => None,
        };
        a.batch_execute(names::PINNED)?;
        // Subscriptions on both nodes go before any slot, so no walsender holds a slot to drop.
        let removal = match b.as_mut() {
            Some(b) => {
                b.batch_execute(names::PINNED)?;
                objects::remove_setup(&mut [(&mut a, "A"), (b, "B")], &self.setup.name)
            }
            None => objects::remove_setup(&mut [(&mut a, "A")], &self.setup.name),
        };
        let removed = removal.removed;
        if !removal.failed.is_empty() {
            for r in &removed {
                ctx.out.status("Removed", r);
            }
            anyhow::bail!(
                "could not remove everything of setup {}: {}",
                self.setup.name,
                removal.failed.join("; ")
            );
        }
        if ctx.out.json {
            return ctx.out.json(&serde_json::json!({
                "setup": self.setup.name,
                "removed": removed,
            }));
        }
        if removed.is_empty() {
            ctx.out.status(
                "Unchanged",
                format!("nothing of setup {} here", self.setup.name),
            );
        } else {
            for r in &removed {
                ctx.out.status("Removed", r);
            }
        }
        Ok(())
    }
}
