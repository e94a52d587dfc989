//! JWT verification with jsonwebtoken: keys from PEM files or a JWKS document, an explicit
//! allow-list of algorithms, `exp`/`nbf` with a leeway, required `iss`/`aud` when configured.
//!
//! Algorithm confusion is ruled out by construction: a key is only ever tried with the
//! algorithms of its own family (an RSA public key is never used as an HMAC secret), an HMAC
//! secret cannot be configured beside public keys, and `none` is not an algorithm at all.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use jsonwebtoken::{AlgorithmFamily, errors::ErrorKind};

use crate::Identity;

/// Verification settings (docs/security.md, `[security.jwt]`).
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// Accepted algorithms by name (`RS256`, `ES256`, `EdDSA`, `HS256`, ...). Empty: every
    /// algorithm of the configured keys' families.
    pub algorithms: Vec<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_s: u64,
    /// The claim holding the roles: an array of strings, or one space-separated string.
    pub roles_claim: String,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            algorithms: Vec::new(),
            issuer: None,
            audience: None,
            leeway_s: 30,
            roles_claim: "roles".into(),
        }
    }
}

/// Key material as read from a file.
#[derive(Clone, Debug)]
pub enum KeyMaterial {
    /// A public key in PEM (RSA, EC P-256/P-384 or Ed25519).
    Pem(Vec<u8>),
    /// A JWKS document (`{"keys": [...]}`).
    Jwks(Vec<u8>),
    /// A shared HMAC secret (HS256/384/512); never together with public keys.
    HmacSecret(Vec<u8>),
}

/// Why a token (or the configuration) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("JWT configuration: {0}")]
    Config(String),
    #[error("the token is not a JWT: {0}")]
    Malformed(String),
    #[error("the token's algorithm {0} is not accepted (accepted: {1})")]
    Algorithm(String, String),
    #[error("no configured key verifies the token's signature")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's issuer is not the configured one")]
    Issuer,
    #[error("the token's audience does not include the configured one")]
    Audience,
    #[error("the token has no {0} claim")]
    MissingClaim(String),
    #[error("the token was refused: {0}")]
    Invalid(String),
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

/// Verifies tokens against the configured keys.
pub struct Verifier {
    keys: Vec<Key>,
    allowed: Vec<Algorithm>,
    settings: JwtSettings,
}

fn family_algorithms(f: AlgorithmFamily) -> &'static [Algorithm] {
    match f {
        AlgorithmFamily::Hmac => &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        AlgorithmFamily::Rsa => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmFamily::Ec => &[Algorithm::ES256, Algorithm::ES384],
        AlgorithmFamily::Ed => &[Algorithm::EdDSA],
    }
}

fn parse_pem(pem: &[u8]) -> Result<DecodingKey, JwtError> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| {
            JwtError::Config(
                "a key file is not an RSA, EC or Ed25519 public key in PEM (BEGIN PUBLIC KEY)"
                    .into(),
            )
        })
}

impl Verifier {
    /// Builds a verifier; refuses configurations that would allow algorithm confusion.
    pub fn new(settings: JwtSettings, material: &[KeyMaterial]) -> Result<Verifier, JwtError> {
        let mut keys = Vec::new();
        for m in material {
            match m {
                KeyMaterial::Pem(pem) => keys.push(Key {
                    kid: None,
                    key: parse_pem(pem)?,
                }),
                KeyMaterial::Jwks(json) => {
                    let set: JwkSet = serde_json::from_slice(json).map_err(|e| {
                        JwtError::Config(format!("the JWKS file is not valid: {e}"))
                    })?;
                    for jwk in &set.keys {
                        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                            JwtError::Config(format!("a JWKS key cannot be used: {e}"))
                        })?;
                        keys.push(Key {
                            kid: jwk.common.key_id.clone(),
                            key,
                        });
                    }
                }
                KeyMaterial::HmacSecret(secret) => {
                    if secret.len() < 32 {
                        return Err(JwtError::Config(
                            "an HMAC secret must be at least 32 bytes".into(),
                        ));
                    }
                    keys.push(Key {
                        kid: None,
                        key: DecodingKey::from_secret(secret),
                    })
                }
            }
        }
        if keys.is_empty() {
            return Err(JwtError::Config("no verification key is configured".into()));
        }
        let mut families: Vec<AlgorithmFamily> = Vec::new();
        for k in &keys {
            if !families.contains(&k.key.family()) {
                families.push(k.key.family());
            }
        }
        if families.contains(&AlgorithmFamily::Hmac) && families.len() > 1 {
            return Err(JwtError::Config(
                "an HMAC secret cannot be configured beside public keys (a public key must never serve as an HMAC secret)".into(),
            ));
        }
        let possible: Vec<Algorithm> = families
            .iter()
            .flat_map(|f| family_algorithms(*f).iter().copied())
            .collect();
        let allowed = if settings.algorithms.is_empty() {
            possible
        } else {
            let mut allowed = Vec::new();
            for name in &settings.algorithms {
                let alg: Algorithm = name.parse().map_err(|_| {
                    JwtError::Config(format!(
                        "unknown algorithm {name:?} (none is never accepted; use e.g. RS256, ES256, EdDSA, HS256)"
                    ))
                })?;
                if !possible.contains(&alg) {
                    return Err(JwtError::Config(format!(
                        "algorithm {name} does not fit any configured key"
                    )));
                }
                allowed.push(alg);
            }
            allowed
        };
        Ok(Verifier {
            keys,
            allowed,
            settings,
        })
    }

    fn allowed_names(&self) -> String {
        self.allowed
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Verifies `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, JwtError> {
        let header = decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        if !self.allowed.contains(&header.alg) {
            return Err(JwtError::Algorithm(
                format!("{:?}", header.alg),
                self.allowed_names(),
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.settings.leeway_s;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &self.settings.issuer {
            validation.set_issuer(&[iss]);
        }
        match &self.settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let candidates = self.keys.iter().filter(|k| {
            k.key.family() == header.alg.family()
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        });
        let mut last = JwtError::Signature;
        for k in candidates {
            match decode::<serde_json::Map<String, serde_json::Value>>(token, &k.key, &validation) {
                Ok(data) => return self.identity(&data.claims),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => JwtError::Signature,
                        ErrorKind::ExpiredSignature => return Err(JwtError::Expired),
                        ErrorKind::ImmatureSignature => return Err(JwtError::NotYetValid),
                        ErrorKind::InvalidIssuer => return Err(JwtError::Issuer),
                        ErrorKind::InvalidAudience => return Err(JwtError::Audience),
                        ErrorKind::MissingRequiredClaim(c) => {
                            return Err(JwtError::MissingClaim(c.clone()));
                        }
                        _ => JwtError::Invalid(e.to_string()),
                    }
                }
            }
        }
        Err(last)
    }

    fn identity(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Identity, JwtError> {
        let principal = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| JwtError::MissingClaim("sub".into()))?
            .to_owned();
        let roles = match claims.get(&self.settings.roles_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let expires_at = claims.get("exp").and_then(|e| e.as_u64());
        Ok(Identity {
            principal,
            roles,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs_token(claims: serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn verifier(settings: JwtSettings) -> Verifier {
        Verifier::new(settings, &[KeyMaterial::HmacSecret(SECRET.to_vec())]).unwrap()
    }

    #[test]
    fn a_good_token_names_its_principal_and_roles() {
        let v = verifier(JwtSettings::default());
        let t = hs_token(
            serde_json::json!({"sub": "svc-payments", "exp": now() + 60, "roles": ["payments", "ops"]}),
            Algorithm::HS256,
            SECRET,
        );
        let id = v.verify(&t).unwrap();
        assert_eq!(id.principal, "svc-payments");
        assert_eq!(id.roles, ["payments", "ops"]);
    }

    #[test]
    fn refusals_say_why() {
        let v = verifier(JwtSettings {
            issuer: Some("bank-idp".into()),
            audience: Some("postbus".into()),
            algorithms: vec!["HS256".into()],
            leeway_s: 5,
            ..JwtSettings::default()
        });
        let ok =
            serde_json::json!({"sub": "a", "exp": now() + 60, "iss": "bank-idp", "aud": "postbus"});
        assert!(
            v.verify(&hs_token(ok.clone(), Algorithm::HS256, SECRET))
                .is_ok()
        );
        let mut expired = ok.clone();
        expired["exp"] = (now() - 60).into();
        assert_eq!(
            v.verify(&hs_token(expired, Algorithm::HS256, SECRET)),
            Err(JwtError::Expired)
        );
        let mut early = ok.clone();
        early["nbf"] = (now() + 600).into();
        assert_eq!(
            v.verify(&hs_token(early, Algorithm::HS256, SECRET)),
            Err(JwtError::NotYetValid)
        );
        let mut iss = ok.clone();
        iss["iss"] = "evil".into();
        assert_eq!(
            v.verify(&hs_token(iss, Algorithm::HS256, SECRET)),
            Err(JwtError::Issuer)
        );
        let mut aud = ok.clone();
        aud["aud"] = "other".into();
        assert_eq!(
            v.verify(&hs_token(aud, Algorithm::HS256, SECRET)),
            Err(JwtError::Audience)
        );
        let other = b"ffffffffffffffffffffffffffffffff";
        assert_eq!(
            v.verify(&hs_token(ok.clone(), Algorithm::HS256, other)),
            Err(JwtError::Signature)
        );
        assert!(matches!(
            v.verify(&hs_token(ok.clone(), Algorithm::HS512, SECRET)),
            Err(JwtError::Algorithm(..))
        ));
        let no_sub = serde_json::json!({"exp": now() + 60, "iss": "bank-idp", "aud": "postbus"});
        assert!(matches!(
            v.verify(&hs_token(no_sub, Algorithm::HS256, SECRET)),
            Err(JwtError::MissingClaim(_))
        ));
        // alg "none": header {"alg":"none"}, no signature.
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ"
        );
        assert!(matches!(v.verify(&none), Err(JwtError::Malformed(_))));
        assert!(matches!(
            v.verify("not a token"),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn confusing_configurations_are_refused() {
        assert!(matches!(
            Verifier::new(JwtSettings::default(), &[]),
            Err(JwtError::Config(_))
        ));
        assert!(matches!(
            Verifier::new(
                JwtSettings::default(),
                &[KeyMaterial::HmacSecret(b"short".to_vec())]
            ),
            Err(JwtError::Config(_))
        ));
        assert!(matches!(
            Verifier::new(
                JwtSettings {
                    algorithms: vec!["none".into()],
                    ..JwtSettings::default()
                },
                &[KeyMaterial::HmacSecret(SECRET.to_vec())]
            ),
            Err(JwtError::Config(_))
        ));
        assert!(matches!(
            Verifier::new(
                JwtSettings {
                    algorithms: vec!["RS256".into()],
                    ..JwtSettings::default()
                },
                &[KeyMaterial::HmacSecret(SECRET.to_vec())]
            ),
            Err(JwtError::Config(_))
        ));
        assert!(matches!(
            Verifier::new(
                JwtSettings::default(),
                &[KeyMaterial::Pem(b"garbage".to_vec())]
            ),
            Err(JwtError::Config(_))
        ));
    }
}
