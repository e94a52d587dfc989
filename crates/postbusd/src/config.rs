//! postbusd's configuration: a TOML file, then `POSTBUS_<SECTION>_<KEY>` environment
//! variables, then command-line flags, each overriding the one before. docs/configuration.md
//! lists every key.

use std::path::PathBuf;

use anyhow::{Context, bail};
use postbus_broker::BrokerConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub stomp: StompConfig,
    pub http: HttpConfig,
    pub security: SecurityConfig,
    pub dev: DevConfig,
    pub broker: BrokerConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL. Unset: development mode starts a private PostgreSQL under dev.data_dir.
    pub url: Option<String>,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
    /// How long data sent to PostgreSQL may go unacknowledged before the connection counts
    /// as broken (TCP_USER_TIMEOUT), ms.
    pub tcp_user_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            pool_size: 16,
            connect_timeout_ms: 5_000,
            tcp_user_timeout_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StompConfig {
    pub listen: String,
}

impl Default for StompConfig {
    fn default() -> Self {
        StompConfig {
            listen: "127.0.0.1:61613".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Empty string: no HTTP listener.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8161".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Admit connections without credentials (development only).
    pub allow_anonymous: bool,
    /// Development quickstart: with no JWT keys configured, make an HMAC key under the data
    /// directory, mint a token for principal `dev` with role `operator`, and print it.
    pub dev_token: bool,
    /// Public keys (PEM: RSA, EC or Ed25519) that verify JWTs.
    pub jwt_keys: Vec<PathBuf>,
    /// A JWKS file with the verification keys.
    pub jwt_jwks: Option<PathBuf>,
    /// A file holding a shared HMAC secret (HS256/384/512; never beside public keys).
    pub jwt_hmac_secret_file: Option<PathBuf>,
    /// Accepted algorithms; empty: all of the configured keys' families.
    pub jwt_algorithms: Vec<String>,
    /// Required `iss` claim.
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    pub jwt_leeway_s: u64,
    /// The claim that lists the principal's roles.
    pub jwt_roles_claim: String,
    /// Directory of policy files (`*.toml`). Required with JWT authentication (default
    /// `policies`); with `allow_anonymous` and none given, everything is allowed.
    pub policies_dir: Option<PathBuf>,
    /// How often the policy files are checked for changes, ms.
    pub policy_reload_ms: u64,
    /// TLS certificate chain (PEM) for the STOMP and HTTP listeners; with `tls_key`, both
    /// listeners speak TLS only.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs client certificates; clients then authenticate with one.
    pub tls_client_ca: Option<PathBuf>,
    /// With a client CA: "required" (every client shows a certificate) or "optional" (a client
    /// without one authenticates with a token).
    pub tls_client_auth: String,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            allow_anonymous: false,
            dev_token: false,
            jwt_keys: Vec::new(),
            jwt_jwks: None,
            jwt_hmac_secret_file: None,
            jwt_algorithms: Vec::new(),
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_s: 30,
            jwt_roles_claim: "roles".into(),
            policies_dir: None,
            policy_reload_ms: 2000,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_client_auth: "required".into(),
        }
    }
}

impl SecurityConfig {
    /// Whether any JWT verification key is configured.
    pub fn jwt_configured(&self) -> bool {
        !self.jwt_keys.is_empty() || self.jwt_jwks.is_some() || self.jwt_hmac_secret_file.is_some()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevConfig {
    /// Where development mode keeps its private PostgreSQL cluster.
    pub data_dir: PathBuf,
}

impl Default for DevConfig {
    fn default() -> Self {
        DevConfig {
            data_dir: PathBuf::from(".postbus"),
        }
    }
}

/// Reads the file (if any) and overlays `POSTBUS_*` variables from `env`.
pub fn load(
    file: Option<&std::path::Path>,
    env: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<Config> {
    let mut table: toml::Table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            text.parse()
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?
        }
        None => toml::Table::new(),
    };
    for (key, value) in env {
        let Some(rest) = key.strip_prefix("POSTBUS_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, field)) = rest.split_once('_') else {
            continue;
        };
        if !["database", "stomp", "http", "security", "dev", "broker"].contains(&section) {
            continue;
        }
        let section = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section) = section else {
            bail!("config: [{key}] is not a table");
        };
        section.insert(field.to_owned(), env_value(&value));
    }
    let config: Config = toml::Value::Table(table)
        .try_into()
        .context("invalid configuration (see docs/configuration.md for every key)")?;
    Ok(config)
}

/// An environment value as TOML: a number or boolean when it reads as one, else a string.
fn env_value(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = v.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match v {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(v.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_defaults() {
        let env = vec![
            ("POSTBUS_BROKER_MAX_CONNECTIONS".to_owned(), "7".to_owned()),
            (
                "POSTBUS_DATABASE_URL".to_owned(),
                "postgresql://x@127.0.0.1/db".to_owned(),
            ),
            (
                "POSTBUS_SECURITY_ALLOW_ANONYMOUS".to_owned(),
                "true".to_owned(),
            ),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let c = load(None, env.into_iter()).unwrap();
        assert_eq!(c.broker.max_connections, 7);
        assert_eq!(
            c.database.url.as_deref(),
            Some("postgresql://x@127.0.0.1/db")
        );
        assert!(c.security.allow_anonymous);
        assert_eq!(c.stomp.listen, "127.0.0.1:61613");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let env = vec![("POSTBUS_BROKER_MAX_CONECTIONS".to_owned(), "7".to_owned())];
        let err = load(None, env.into_iter()).unwrap_err();
        assert!(format!("{err:#}").contains("max_conections"), "{err:#}");
    }
}
