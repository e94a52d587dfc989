//! postbusd's side of security: reads the key and policy files the configuration names, builds
//! the broker's `Security`, refuses to start unauthenticated unless told, and the development
//! quickstart token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use postbus_auth::{JwtSettings, KeyMaterial, Policies, Verifier};
use postbus_broker::security::{Security, read_policy_dir};

use crate::config::{Config, SecurityConfig};

/// How long the development token is valid.
const DEV_TOKEN_DAYS: u64 = 30;

/// The listeners' TLS, when a certificate is configured.
pub fn tls(cfg: &SecurityConfig) -> anyhow::Result<Option<Arc<postbus_broker::tls::Tls>>> {
    use postbus_broker::tls::{ClientAuth, Tls, TlsFiles};
    let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => {
            if cfg.tls_client_ca.is_some() {
                bail!("tls_client_ca needs tls_cert and tls_key (the listeners' own certificate)");
            }
            return Ok(None);
        }
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => bail!("TLS needs both tls_cert and tls_key (--tls-cert FILE --tls-key FILE)"),
    };
    let client_auth = match cfg.tls_client_auth.as_str() {
        "required" => ClientAuth::Required,
        "optional" => ClientAuth::Optional,
        other => bail!("tls_client_auth {other:?} is neither \"required\" nor \"optional\""),
    };
    let tls = Tls::load(TlsFiles {
        cert,
        key,
        client_ca: cfg.tls_client_ca.clone(),
        client_auth,
    })
    .map_err(anyhow::Error::msg)
    .context("TLS")?;
    tracing::info!(
        not_after = tls.not_after(),
        client_ca = cfg.tls_client_ca.is_some(),
        "TLS on the STOMP and HTTP listeners"
    );
    Ok(Some(tls))
}

/// The policy directory in use, if any.
pub fn policy_dir(cfg: &SecurityConfig) -> Option<PathBuf> {
    match &cfg.policies_dir {
        Some(d) => Some(d.clone()),
        None if cfg.jwt_configured() || cfg.tls_client_ca.is_some() => {
            Some(PathBuf::from("policies"))
        }
        None => None,
    }
}

/// Builds the broker's security from the configuration.
pub fn build(cfg: &SecurityConfig) -> anyhow::Result<Arc<Security>> {
    let verifier = if cfg.jwt_configured() {
        let mut material = Vec::new();
        for k in &cfg.jwt_keys {
            material.push(KeyMaterial::Pem(read(k, "JWT key")?));
        }
        if let Some(j) = &cfg.jwt_jwks {
            material.push(KeyMaterial::Jwks(read(j, "JWKS")?));
        }
        if let Some(h) = &cfg.jwt_hmac_secret_file {
            let secret = read(h, "HMAC secret")?;
            material.push(KeyMaterial::HmacSecret(trim_newline(secret)));
        }
        let settings = JwtSettings {
            algorithms: cfg.jwt_algorithms.clone(),
            issuer: cfg.jwt_issuer.clone(),
            audience: cfg.jwt_audience.clone(),
            leeway_s: cfg.jwt_leeway_s,
            roles_claim: cfg.jwt_roles_claim.clone(),
        };
        Some(Verifier::new(settings, &material).context("JWT authentication")?)
    } else if cfg.allow_anonymous || cfg.tls_client_ca.is_some() {
        // Anonymous, or client certificates only.
        None
    } else {
        bail!(
            "no authentication is configured: give --jwt-key FILE or --jwt-jwks FILE, or --tls-client-ca FILE \
             for client certificates (see docs/security.md), --dev-token for a development token, \
             or --allow-anonymous (development only)"
        );
    };
    let policies = match policy_dir(cfg) {
        Some(dir) => {
            let p = read_policy_dir(&dir).map_err(anyhow::Error::msg).with_context(|| {
                format!(
                    "cannot load the policies of {} (give --policies DIR; docs/security.md describes the format)",
                    dir.display()
                )
            })?;
            if p.is_empty() {
                tracing::warn!(dir = %dir.display(), "no policy rules: every action is denied");
            }
            tracing::info!(dir = %dir.display(), rules = p.len(), "policies loaded");
            p
        }
        None => Policies::allow_all(),
    };
    if cfg.allow_anonymous {
        tracing::warn!(
            "ANONYMOUS ACCESS: clients without a token are admitted (--allow-anonymous); do not expose this broker"
        );
    }
    let security = Security::new(verifier, cfg.allow_anonymous, policies);
    Ok(Arc::new(match policy_dir(cfg) {
        Some(dir) => security.with_policy_dir(dir),
        None => security,
    }))
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} file {}", path.display()))
}

fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    v
}

/// The development quickstart: an HMAC key under the data directory (made once), a token for
/// principal `dev` with role `operator`, written to `<data-dir>/dev-token`; the configuration
/// then verifies with that key and, without a policy directory, uses `policies/` when it is
/// there or a development policy that lets `operator` do everything.
pub fn dev_quickstart(cfg: &mut Config) -> anyhow::Result<String> {
    let dir = &cfg.dev.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key_file = dir.join("dev-jwt.secret");
    if !key_file.exists() {
        let secret: [u8; 32] = rand::random();
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&key_file, hex.as_bytes())?;
    }
    let secret = trim_newline(read(&key_file, "development key")?);
    let exp = jsonwebtoken::get_current_timestamp() + DEV_TOKEN_DAYS * 86_400;
    let claims =
        serde_json::json!({"sub": "dev", "roles": ["operator"], "exp": exp, "iss": "postbus-dev"});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .context("minting the development token")?;
    write_private(&dir.join("dev-token"), token.as_bytes())?;
    cfg.security.jwt_hmac_secret_file = Some(key_file);
    if cfg.security.policies_dir.is_none() {
        let repo = PathBuf::from("policies");
        if repo.is_dir() {
            cfg.security.policies_dir = Some(repo);
        } else {
            let own = dir.join("dev-policies");
            std::fs::create_dir_all(&own)?;
            std::fs::write(
                own.join("dev.toml"),
                "# Written by postbusd --dev-token: the development operator may do everything.\n\
                 [[rule]]\nname = \"dev-operator\"\neffect = \"allow\"\nroles = [\"operator\"]\n\
                 actions = [\"*\"]\ndestinations = [\">\"]\n",
            )?;
            cfg.security.policies_dir = Some(own);
        }
    }
    tracing::warn!(
        "development token mode: a token for `dev` (role operator) is in {}; do not use this in production",
        dir.join("dev-token").display()
    );
    Ok(token)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}
