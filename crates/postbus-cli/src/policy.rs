//! `postbus policy check`: asks the policy files (no broker needed) whether a principal with
//! roles may do an action to a destination, and names the rule that decided. With `--url` the
//! broker's policies in force decide instead (`admin.rs`), and `postbus policy reload` makes
//! the broker reread its policy directory.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use postbus_auth::{Action, Identity, Policies};

use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Decide one request: exit code 0 when allowed, 1 when denied.
    ///
    /// Without --url the policy files of --policies decide (no broker needed); with --url the
    /// policies in force on that broker do.
    Check(CheckArgs),
    /// Make the broker reread its policy directory now (admin API only: needs --url).
    ///
    /// A directory that does not parse is refused (exit 1, with the parse error) and the
    /// policies in force stay.
    Reload,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Directory of policy files (*.toml); not read with --url.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// The principal (a token's `sub`).
    #[arg(long)]
    pub principal: String,
    /// Roles, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "")]
    pub roles: Vec<String>,
    /// send, consume, browse, create, delete, purge or admin.
    #[arg(long)]
    pub action: String,
    /// e.g. /queue/payments.sepa.out, /topic/ledger.>, /temp-queue/NAME.
    #[arg(long)]
    pub destination: String,
}

/// Runs the command; returns the exit code.
pub async fn run(cli: &Cli, cmd: &PolicyCmd) -> anyhow::Result<i32> {
    let a = match (cmd, &cli.url) {
        (PolicyCmd::Reload, _) => {
            crate::admin::policy_reload(cli).await?;
            return Ok(0);
        }
        (PolicyCmd::Check(a), Some(url)) => return crate::admin::policy_check(cli, url, a).await,
        (PolicyCmd::Check(a), None) => a,
    };
    let action = Action::parse(&a.action).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown action {:?}: use send, consume, browse, create, delete, purge or admin",
            a.action
        )
    })?;
    let policies = load(&a.policies)?;
    let who = Identity {
        principal: a.principal.clone(),
        roles: a.roles.iter().filter(|r| !r.is_empty()).cloned().collect(),
        expires_at: None,
    };
    let d = policies.decide(&who, action, &a.destination);
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "allowed": d.allowed,
                "rule": d.rule,
                "principal": who.principal,
                "roles": who.roles,
                "action": action.as_str(),
                "destination": a.destination,
            })
        );
    } else {
        println!(
            "{}: {} {} {} ({})",
            if d.allowed { "ALLOW" } else { "DENY" },
            who.principal,
            action,
            a.destination,
            d.explain()
        );
    }
    Ok(if d.allowed { 0 } else { 1 })
}

fn load(dir: &std::path::Path) -> anyhow::Result<Policies> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read policy directory {}: {e} (give --policies DIR)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut texts = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    Ok(Policies::parse(&texts)?)
}
