//! The CLI's configuration file: connection settings (`url`, `token`, `stomp`,
//! `database_url`) for people who do not want to repeat them on every command.
//!
//! Where it is: `--config PATH`, else `POSTBUS_CONFIG`, else `$XDG_CONFIG_HOME/postbus/cli.toml`
//! (`~/.config/postbus/cli.toml` when `XDG_CONFIG_HOME` is not set). A flag or an environment
//! variable wins over the file. A default file that does not exist is fine; a file named with
//! `--config`/`POSTBUS_CONFIG` that does not exist, or any file that does not parse, is an
//! error that names the file and what is wrong with it.
//!
//! ```toml
//! url = "http://broker-1:8161"
//! token = "eyJ..."
//! stomp = "broker-1:61613"
//! database_url = "postgresql://postbus@db-1/postbus"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Cli;
use crate::api::ApiError;

/// The keys of `cli.toml`; all optional, nothing else allowed (a misspelt key is reported
/// rather than silently ignored).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The broker's HTTP admin API, as `--url`.
    pub url: Option<String>,
    /// Bearer token for the admin API, as `--token`.
    pub token: Option<String>,
    /// The broker's STOMP address, as `--stomp`.
    pub stomp: Option<String>,
    /// PostgreSQL URL, as `--database-url`.
    pub database_url: Option<String>,
}

/// The default file: `$XDG_CONFIG_HOME/postbus/cli.toml`, else `$HOME/.config/postbus/cli.toml`
/// (None when neither variable is set).
pub fn default_path() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.or_else(|| {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".config"))
    })?;
    Some(base.join("postbus").join("cli.toml"))
}

/// Reads and parses a configuration file.
pub fn read(path: &Path) -> Result<FileConfig, ApiError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ApiError::Usage(format!(
            "cannot read the configuration file {}: {e} (give an existing file with --config, or unset POSTBUS_CONFIG)",
            path.display()
        ))
    })?;
    parse(&text).map_err(|e| {
        ApiError::Usage(format!(
            "the configuration file {} is not valid: {e} (its keys are url, token, stomp and database_url, all strings)",
            path.display()
        ))
    })
}

fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.message().to_owned())
}

/// Fills the connection settings that no flag or environment variable gave from the
/// configuration file, if there is one.
pub fn apply(cli: &mut Cli) -> Result<(), ApiError> {
    let file = match &cli.config {
        Some(explicit) => read(explicit)?,
        None => match default_path() {
            Some(p) if p.exists() => read(&p)?,
            _ => return Ok(()),
        },
    };
    let FileConfig {
        url,
        token,
        stomp,
        database_url,
    } = file;
    fill(&mut cli.url, url);
    fill(&mut cli.token, token);
    fill(&mut cli.stomp, stomp);
    fill(&mut cli.database_url, database_url);
    Ok(())
}

/// Flags and environment (already in `slot`) win over the file.
fn fill(slot: &mut Option<String>, from_file: Option<String>) {
    if slot.is_none() {
        *slot = from_file.filter(|v| !v.is_empty());
    }
}
