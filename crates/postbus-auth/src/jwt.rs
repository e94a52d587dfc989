//! JWT verification with jsonwebtoken: keys from PEM files or a JWKS document, an explicit
//! allow-list of algorithms, `exp`/`nbf` with a leeway, required `iss`/`aud` when configured.
//!
//! Algorithm confusion is ruled out by construction: a key is only ever tried with the
//! algorithms of its own family (an RSA public key is never used as an HMAC secret), an HMAC
//! secret cannot be configured beside public keys, and `none` is not an algorithm at all.
//!
//! No key is ever fetched: this crate has no HTTP client (nor any other I/O), keys are the
//! configured ones only, and a token that points at a key (`jku`, `x5u`), carries one (`jwk`,
//! `x5c`), demands extensions (`crit`) or names its key with a path-like `kid` is refused
//! before its signature is looked at (see [`Verifier::verify`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
    #[error("the token's header is refused: {0}")]
    Header(String),
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

/// Header parameters that point at a key (`jku`, `x5u`), carry one (`jwk`, `x5c`) or demand
/// extensions (`crit`, RFC 7515 4.1.11): postbus uses configured keys only and implements no
/// extension, so a token with any of them is refused, however it is signed.
pub const REFUSED_HEADERS: [&str; 5] = ["jku", "x5u", "jwk", "x5c", "crit"];

/// Whether a `kid` is a plain key name: ASCII letters, digits and `- _ . : = +` (which covers
/// the base64, base64url, hex and UUID names identity providers use), and no `..`. Anything
/// else, a path (`/`, `\`, `../`) above all, is refused: a kid is only ever compared with the
/// configured keys' names, but it is also logged and audited, and must stay harmless if a
/// future key store ever looks keys up by it.
pub fn is_plain_kid(kid: &str) -> bool {
    !kid.contains("..")
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '=' | '+'))
}

/// At most this many characters of a token's own text go into an error message.
const MAX_ECHO_CHARS: usize = 32;

/// Client-supplied text for an error message: truncated, quoted and escaped (one line).
fn echo(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// A JSON object that refuses duplicate member names: RFC 7515 4 lets a JWS parser either
/// reject them or keep the last, and jsonwebtoken's own header parsing might keep another
/// one than this check saw, so they are refused.
struct UniqueObject(serde_json::Map<String, serde_json::Value>);

impl<'de> serde::Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueObject, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                    if out.contains_key(&key) {
                        return Err(serde::de::Error::custom(format_args!(
                            "the header parameter {} appears twice",
                            echo(&key)
                        )));
                    }
                    out.insert(key, value);
                }
                Ok(UniqueObject(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The token's header as a JSON object, read independently of jsonwebtoken so that every
/// parameter it has (known to jsonwebtoken or not) can be checked.
fn raw_header(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "a JWT is three base64url parts separated by dots".into(),
        ));
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| JwtError::Malformed(format!("the header is not base64url: {e}")))?;
    serde_json::from_slice::<UniqueObject>(&json)
        .map(|o| o.0)
        .map_err(|e| JwtError::Malformed(format!("the header is not a JSON object: {e}")))
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
                        if let Some(kid) = &jwk.common.key_id
                            && !is_plain_kid(kid)
                        {
                            return Err(JwtError::Config(format!(
                                "the JWKS key id {} would never match: tokens whose kid is not \
                                 letters, digits and - _ . : = + (no paths) are refused",
                                echo(kid)
                            )));
                        }
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
    ///
    /// Keys come only from the configuration: this crate has no HTTP client and fetches
    /// nothing, so a `jku` or `x5u` URL is never followed, and a key carried in the token
    /// (`jwk`, `x5c`) is never used. Such tokens, tokens demanding extensions (`crit`), tokens
    /// with an unknown algorithm or `none`, and tokens whose `kid` is not a plain name (see
    /// [`is_plain_kid`]) are refused before any signature is checked.
    pub fn verify(&self, token: &str) -> Result<Identity, JwtError> {
        let raw = raw_header(token)?;
        let alg = match raw.get("alg") {
            Some(serde_json::Value::String(alg)) => alg,
            Some(_) => return Err(JwtError::Malformed("the alg header is not a string".into())),
            None => return Err(JwtError::Malformed("the header has no alg".into())),
        };
        // `none` (in any spelling) and unknown algorithms: the kind stays Malformed, as
        // jsonwebtoken's header parsing would have it, with a message that says why.
        if alg.parse::<Algorithm>().is_err() {
            return Err(JwtError::Malformed(format!(
                "its alg {} is no signature algorithm postbus knows (accepted: {})",
                echo(alg),
                self.allowed_names()
            )));
        }
        // Refused rather than ignored, so a client learns at once that such a token will
        // never work here.
        if let Some(name) = REFUSED_HEADERS.iter().find(|h| raw.contains_key(**h)) {
            return Err(JwtError::Header(format!(
                "it has a {name} parameter, but postbus takes keys only from its \
                 configuration and supports no header extensions (name a configured key with kid)"
            )));
        }
        if let Some(kid) = raw.get("kid").and_then(|k| k.as_str())
            && !is_plain_kid(kid)
        {
            return Err(JwtError::Header(
                "its kid may hold only letters, digits and - _ . : = + (no paths, no \"..\")"
                    .into(),
            ));
        }
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
        assert!(
            matches!(v.verify(&none), Err(JwtError::Malformed(m)) if m.contains("alg \"none\""))
        );
        assert!(matches!(
            v.verify("not a token"),
            Err(JwtError::Malformed(_))
        ));
    }

    /// A token with `header` (a JSON object) and good claims, correctly signed with SECRET.
    fn signed_with_header(header: serde_json::Value) -> String {
        use base64::Engine as _;
        let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = serde_json::json!({"sub": "a", "exp": now() + 60});
        let message = format!("{}.{}", b64(&header), b64(&claims));
        let key = EncodingKey::from_secret(SECRET);
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{sig}")
    }

    #[test]
    fn key_carrying_headers_and_path_kids_are_refused_even_when_signed() {
        let v = verifier(JwtSettings::default());
        let ok = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "key-1_2.3:4=+"});
        assert!(v.verify(&signed_with_header(ok)).is_ok());
        for (name, value) in [
            ("jku", serde_json::json!("https://evil.example/jwks.json")),
            ("x5u", serde_json::json!("https://evil.example/cert.pem")),
            ("jwk", serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})),
            ("x5c", serde_json::json!(["MIIB"])),
            ("crit", serde_json::json!(["b64"])),
            ("jku", serde_json::Value::Null),
        ] {
            let mut h = serde_json::json!({"alg": "HS256"});
            h[name] = value;
            let e = v.verify(&signed_with_header(h)).unwrap_err();
            assert!(
                matches!(&e, JwtError::Header(m) if m.contains(name)),
                "{name}: {e}"
            );
        }
        for kid in [
            "../keys/a",
            "/etc/passwd",
            "a\\b",
            "..",
            "a..b",
            "k\n1",
            "ключ",
            "a b",
        ] {
            let h = serde_json::json!({"alg": "HS256", "kid": kid});
            let e = v.verify(&signed_with_header(h)).unwrap_err();
            assert!(matches!(e, JwtError::Header(_)), "{kid:?}: {e}");
        }
        for alg in ["none", "None", "HS999", ""] {
            let h = serde_json::json!({"alg": alg});
            let e = v.verify(&signed_with_header(h)).unwrap_err();
            assert!(
                matches!(&e, JwtError::Malformed(m) if m.contains("no signature algorithm")),
                "{alg:?}: {e}"
            );
        }
        // A duplicate parameter could be read one way here and another by jsonwebtoken.
        let dup = r#"{"alg":"HS256","kid":"../x","kid":"ok"}"#;
        let token = signed_with_header(serde_json::json!({"alg": "HS256"}));
        let rest = token.split_once('.').unwrap().1;
        use base64::Engine as _;
        let e = v
            .verify(&format!("{}.{rest}", URL_SAFE_NO_PAD.encode(dup)))
            .unwrap_err();
        assert!(
            matches!(&e, JwtError::Malformed(m) if m.contains("twice")),
            "{e}"
        );
        let long = "x".repeat(10_000);
        let e = v.verify(&signed_with_header(serde_json::json!({"alg": long})));
        assert!(e.unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn confusing_configurations_are_refused() {
        let jwks = br#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "../k1",
            "x": "64ciTx4IIG8SFTDklVuEHWoalxEiwhuFyb4U7lwp8fM"}]}"#;
        assert!(matches!(
            Verifier::new(JwtSettings::default(), &[KeyMaterial::Jwks(jwks.to_vec())]),
            Err(JwtError::Config(m)) if m.contains("never match")
        ));
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
