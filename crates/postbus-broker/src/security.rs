//! Who a client is and what it may do: authentication (a JWT as the STOMP passcode or the
//! HTTP bearer token, or anonymous when allowed) and authorization by the policies of
//! `policies/`, which reload without a restart. The decisions are `postbus_auth`'s; this
//! module holds the loaded state and reads the policy files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use postbus_auth::{Action, Decision, Identity, Policies, Verifier};

/// The broker's authentication and authorization state.
pub struct Security {
    verifier: Option<Verifier>,
    allow_anonymous: bool,
    policies: RwLock<Arc<Policies>>,
    /// Where the policies come from, for a reload on request (admin API).
    policy_dir: Option<PathBuf>,
}

/// Why a client was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error(
        "authentication required: send a JWT as the passcode (STOMP) or as `Authorization: Bearer` (HTTP)"
    )]
    NoCredentials,
    #[error(
        "authentication failed: {0}; connect again with a valid token (a fresh one from the identity provider if it expired)"
    )]
    Refused(String),
}

impl Security {
    /// Everyone admitted and allowed everything: tests and `--allow-anonymous` without policies.
    pub fn anonymous() -> Security {
        Security {
            verifier: None,
            allow_anonymous: true,
            policies: RwLock::new(Arc::new(Policies::allow_all())),
            policy_dir: None,
        }
    }

    pub fn new(verifier: Option<Verifier>, allow_anonymous: bool, policies: Policies) -> Security {
        Security {
            verifier,
            allow_anonymous,
            policies: RwLock::new(Arc::new(policies)),
            policy_dir: None,
        }
    }

    /// Names the directory the policies were read from, so that [`Security::reload_policies`]
    /// can read it again.
    pub fn with_policy_dir(mut self, dir: PathBuf) -> Security {
        self.policy_dir = Some(dir);
        self
    }

    /// Reads the policy directory again and puts it in force; returns the rule count. A
    /// directory that does not parse keeps the policies in force and says why.
    pub fn reload_policies(&self) -> Result<usize, String> {
        let dir = self.policy_dir.as_deref().ok_or_else(|| {
            "this broker's policies do not come from a directory (start it with --policies DIR)"
                .to_owned()
        })?;
        let p = read_policy_dir(dir)?;
        let n = p.len();
        self.replace_policies(p);
        tracing::info!(dir = %dir.display(), rules = n, "policies reloaded on request");
        Ok(n)
    }

    /// Authenticates a client by its token (the STOMP passcode, the HTTP bearer token) or,
    /// without one, by the subject of its verified TLS client certificate.
    pub fn authenticate(
        &self,
        token: Option<&str>,
        cert_principal: Option<&str>,
    ) -> Result<Identity, AuthFailure> {
        match (token.filter(|t| !t.is_empty()), &self.verifier) {
            (Some(t), Some(v)) => v.verify(t).map_err(|e| AuthFailure::Refused(e.to_string())),
            (None, _) if cert_principal.is_some() => Ok(Identity {
                principal: cert_principal.unwrap_or_default().to_owned(),
                roles: Vec::new(),
                expires_at: None,
            }),
            (None, _) if self.allow_anonymous => Ok(Identity::anonymous()),
            // Anonymous brokers without keys ignore a passcode rather than refuse the client.
            (Some(_), None) if self.allow_anonymous => Ok(Identity::anonymous()),
            (Some(_), None) => Err(AuthFailure::Refused("no JWT keys are configured".into())),
            (None, _) => Err(AuthFailure::NoCredentials),
        }
    }

    /// Whether `who` may do `action` to `destination`.
    pub fn decide(&self, who: &Identity, action: Action, destination: &str) -> Decision {
        self.current().decide(who, action, destination)
    }

    /// The policies in force.
    pub fn current(&self) -> Arc<Policies> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts new policies in force.
    pub fn replace_policies(&self, policies: Policies) {
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policies);
    }
}

/// Reads every `*.toml` file of a policy directory, in name order.
pub fn read_policy_dir(dir: &Path) -> Result<Policies, String> {
    let files = policy_files(dir)?;
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| format!("cannot read policy file {}: {e}", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    Policies::parse(&texts).map_err(|e| e.to_string())
}

fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read policy directory {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// What the reloader compares: each policy file's name, size and modification time.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    policy_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

/// Reloads the policies of `dir` when its files change (checked every `every`). A directory
/// that no longer parses is reported and the policies in force stay; `on_reload` hears of
/// every attempt (for the audit log): Ok(rule count) or Err(why).
pub fn spawn_policy_reloader(
    security: Arc<Security>,
    dir: PathBuf,
    every: Duration,
    on_reload: impl Fn(Result<usize, String>) + Send + 'static,
) {
    tokio::spawn(async move {
        let mut seen = fingerprint(&dir);
        loop {
            tokio::time::sleep(every).await;
            let now = fingerprint(&dir);
            if now == seen {
                continue;
            }
            seen = now;
            match read_policy_dir(&dir) {
                Ok(p) => {
                    let n = p.len();
                    security.replace_policies(p);
                    tracing::info!(dir = %dir.display(), rules = n, "policies reloaded");
                    on_reload(Ok(n));
                }
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "policy files refused; the previous policies stay in force");
                    on_reload(Err(e));
                }
            }
        }
    });
}
