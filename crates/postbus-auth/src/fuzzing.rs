//! The checks the fuzz targets `jwt_verify` and `policy_load` (fuzz/) run on every input,
//! shared with the stable test that replays the committed corpora (tests/fuzz_corpus.rs), so a
//! machine without a nightly toolchain still runs every corpus file through the same code.
//! Pure: no I/O (the keys below are fixed test keys, used nowhere else). Each function panics
//! on a violated property.
//!
//! [`jwt_verify`]: the input, as text, is a token for three verifiers (an HMAC secret allowing
//! HS256; an Ed25519 public key in PEM; the same key in a JWKS with kid `k1`, an issuer and an
//! audience). None panics, every refusal is one bounded line, and a token is only ever accepted
//! if its header has none of [`REFUSED_HEADERS`], a plain kid and an accepted algorithm. Then
//! the input also builds a token: byte 0 picks a fault, byte 1 the signing key, and the rest,
//! split at NUL bytes, gives the subject, a kid, roles, an extra header and an extra claim. The
//! token is correctly signed (by HMAC, by the Ed25519 private key, or by HMAC keyed with the
//! Ed25519 public key: the algorithm-confusion forgery), and each fault must be refused with
//! its own error: `alg` none in any case and unknown algorithms with [`JwtError::Malformed`]
//! saying that the algorithm is unknown; a kid with `../`, `/` or `\`, and a `jku`, `x5u`,
//! `jwk`, `x5c` or `crit` header with [`JwtError::Header`], whatever the signature; a
//! duplicated header parameter with [`JwtError::Malformed`]; a known algorithm the verifier
//! does not accept with [`JwtError::Algorithm`]. A token without a fault, signed with the
//! verifier's own key, is accepted with its subject and roles, so the refusals are not vacuous.
//!
//! [`policy_load`]: the input is policy files (TOML, separated by 0x01 bytes) and, after a NUL,
//! request lines (a principal, comma-separated roles, destinations). Loading never panics; for
//! a set that loads, `decide` answers every action for identities and destinations taken from
//! the request lines and from the policies' own principals, roles and patterns, and: an allowed
//! decision names its rule; appending a deny-everything rule denies everything (a decision an
//! existing deny made stays its decision); appending an allow-everything rule allows what only
//! the default denied and changes nothing else; the order of the files changes no outcome.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value, json};

use crate::jwt::{REFUSED_HEADERS, is_plain_kid};
use crate::{Action, Identity, JwtError, JwtSettings, KeyMaterial, Policies, Verifier};

/// The HMAC secret of the HMAC verifier.
const SECRET: &[u8] = b"fuzz-only-hmac-secret-0123456789";

/// A fixed Ed25519 key pair, made for these checks with `openssl genpkey -algorithm ed25519`.
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGKUrtoyq+GuPuKC+IayvkWXXNmNNd/+A5Rlu7O8P2TS
-----END PRIVATE KEY-----
";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA64ciTx4IIG8SFTDklVuEHWoalxEiwhuFyb4U7lwp8fM=
-----END PUBLIC KEY-----
";
/// The public key's 32 bytes, base64url (the JWK `x`).
const ED_X: &str = "64ciTx4IIG8SFTDklVuEHWoalxEiwhuFyb4U7lwp8fM";

/// 2100-01-01: far enough that a good token does not expire while the corpus is replayed.
const EXP: u64 = 4_102_444_800;

struct Verifiers {
    hmac: Verifier,
    ed: Verifier,
    jwks: Verifier,
}

/// Which verifier, for what it accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Hmac,
    Ed,
    Jwks,
}

impl Which {
    fn accepts(self, alg: Algorithm) -> bool {
        match self {
            Which::Hmac => alg == Algorithm::HS256,
            Which::Ed | Which::Jwks => alg == Algorithm::EdDSA,
        }
    }
}

fn verifiers() -> &'static Verifiers {
    static V: OnceLock<Verifiers> = OnceLock::new();
    V.get_or_init(|| {
        let hmac = Verifier::new(
            JwtSettings {
                algorithms: vec!["HS256".into()],
                ..JwtSettings::default()
            },
            &[KeyMaterial::HmacSecret(SECRET.to_vec())],
        )
        .expect("the HMAC verifier");
        let ed = Verifier::new(
            JwtSettings::default(),
            &[KeyMaterial::Pem(ED_PUBLIC.as_bytes().to_vec())],
        )
        .expect("the Ed25519 verifier");
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": ED_X}]});
        let jwks = Verifier::new(
            JwtSettings {
                issuer: Some("idp".into()),
                audience: Some("postbus".into()),
                ..JwtSettings::default()
            },
            &[KeyMaterial::Jwks(jwks.to_string().into_bytes())],
        )
        .expect("the JWKS verifier");
        Verifiers { hmac, ed, jwks }
    })
}

/// What a verifier may say about any token: a refusal is one bounded line, and an accepted
/// token's header (read here independently) has no refused parameter, a plain kid and an
/// algorithm the verifier accepts.
fn check_outcome(which: Which, token: &str, result: &Result<Identity, JwtError>) {
    let identity = match result {
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(['\n', '\r']), "multi-line refusal {msg:?}");
            assert!(msg.len() <= 512, "unbounded refusal {msg:?}");
            return;
        }
        Ok(identity) => identity,
    };
    assert!(!identity.principal.is_empty(), "accepted without a subject");
    let header = token.split('.').next().unwrap_or_default();
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_else(|| panic!("accepted a token whose header is no JSON object: {token}"));
    for name in REFUSED_HEADERS {
        assert!(
            !header.contains_key(name),
            "accepted a {name} header: {token}"
        );
    }
    if let Some(kid) = header.get("kid").and_then(Value::as_str) {
        assert!(is_plain_kid(kid), "accepted kid {kid:?}");
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let alg: Algorithm = alg
        .parse()
        .unwrap_or_else(|_| panic!("accepted algorithm {alg:?}"));
    assert!(which.accepts(alg), "accepted {alg:?}");
}

/// Splits the rest of the input at NUL bytes into up to `N` text fields (missing ones empty).
fn fields<const N: usize>(data: &[u8]) -> [String; N] {
    let mut parts = data.split(|&b| b == 0);
    std::array::from_fn(|_| String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned())
}

/// The faults a built token can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    AlgNone,
    UnknownAlg,
    PathKid,
    Refused(&'static str),
    DuplicateParameter,
}

const FAULTS: [Fault; 10] = [
    Fault::None,
    Fault::AlgNone,
    Fault::UnknownAlg,
    Fault::PathKid,
    Fault::Refused("jku"),
    Fault::Refused("x5u"),
    Fault::Refused("jwk"),
    Fault::Refused("x5c"),
    Fault::Refused("crit"),
    Fault::DuplicateParameter,
];

/// How a built token is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signer {
    /// HS256 with the HMAC verifier's secret.
    Hmac,
    /// EdDSA with the Ed25519 private key.
    Ed,
    /// HS256 keyed with the Ed25519 *public* key's PEM: the algorithm-confusion forgery.
    Confused,
    /// HS384 with the right secret: known, but not what the HMAC verifier accepts.
    Hs384,
}

fn sign(message: &str, signer: Signer) -> String {
    let (key, alg) = match signer {
        Signer::Hmac => (EncodingKey::from_secret(SECRET), Algorithm::HS256),
        Signer::Hs384 => (EncodingKey::from_secret(SECRET), Algorithm::HS384),
        Signer::Confused => (
            EncodingKey::from_secret(ED_PUBLIC.as_bytes()),
            Algorithm::HS256,
        ),
        Signer::Ed => (
            EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).expect("the Ed25519 private key"),
            Algorithm::EdDSA,
        ),
    };
    jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).expect("signing")
}

fn alg_name(signer: Signer) -> &'static str {
    match signer {
        Signer::Hmac | Signer::Confused => "HS256",
        Signer::Hs384 => "HS384",
        Signer::Ed => "EdDSA",
    }
}

/// Keeps the characters a kid may have, so a fault-free token's kid is plain.
fn plain(text: &str) -> String {
    let mut kid: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '=' | '+'))
        .take(40)
        .collect();
    if kid.is_empty() {
        kid.push_str("k1");
    }
    kid
}

/// The `jwt_verify` target. See the module documentation.
pub fn jwt_verify(data: &[u8]) {
    let v = verifiers();
    let all = [
        (Which::Hmac, &v.hmac),
        (Which::Ed, &v.ed),
        (Which::Jwks, &v.jwks),
    ];
    if let Ok(token) = std::str::from_utf8(data) {
        for (which, verifier) in all {
            check_outcome(which, token, &verifier.verify(token));
        }
    }

    let [fault, signer, rest @ ..] = data else {
        return;
    };
    let fault = FAULTS[usize::from(*fault) % FAULTS.len()];
    let signer =
        [Signer::Hmac, Signer::Ed, Signer::Confused, Signer::Hs384][usize::from(signer & 3)];
    let [sub, kid_text, roles, extra_header, extra_claim] = fields::<5>(rest);

    // The header as text, so a duplicated parameter can be written.
    let mut header = Map::new();
    header.insert("alg".into(), json!(alg_name(signer)));
    header.insert("typ".into(), json!("JWT"));
    // The JWKS verifier's key is k1; other plain kids match no key there.
    let kid = if signer == Signer::Ed && kid_text.len() % 2 == 0 {
        "k1".to_owned()
    } else {
        plain(&kid_text)
    };
    header.insert("kid".into(), json!(kid));
    if !extra_header.is_empty() {
        header.insert(format!("x-{extra_header}"), json!(extra_header));
    }
    let mut duplicate = None;
    match fault {
        Fault::None => {}
        Fault::AlgNone => {
            let spelling = ["none", "None", "NONE", "nOnE"][kid_text.len() % 4];
            header.insert("alg".into(), json!(spelling));
        }
        Fault::UnknownAlg => {
            let alg = format!("{kid_text}X");
            if alg.parse::<Algorithm>().is_err() {
                header.insert("alg".into(), json!(alg));
            } else {
                header.insert("alg".into(), json!("HS999"));
            }
        }
        Fault::PathKid => {
            let path = ["../", "/", "\\", ".."][sub.len() % 4];
            let cut = kid_text.len() / 2;
            let cut = (0..=cut)
                .rev()
                .find(|&i| kid_text.is_char_boundary(i))
                .unwrap_or(0);
            let kid = format!("{}{path}{}", &kid_text[..cut], &kid_text[cut..]);
            header.insert("kid".into(), json!(kid));
        }
        Fault::Refused(name) => {
            let value = match name {
                "jku" | "x5u" => json!(format!("https://keys.example/{extra_header}")),
                // The embedded-key attack: the token carries the very key that signed it.
                "jwk" if signer == Signer::Ed => {
                    json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": kid})
                }
                "jwk" => json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(SECRET)}),
                "x5c" => json!([URL_SAFE_NO_PAD.encode(extra_header.as_bytes())]),
                _ => json!([extra_header]),
            };
            header.insert(name.into(), value);
        }
        Fault::DuplicateParameter => {
            duplicate = Some(format!(",\"kid\":{}", json!(format!("../{kid_text}"))));
        }
    }
    let mut header_text = Value::Object(header).to_string();
    if let Some(dup) = duplicate {
        header_text.insert_str(header_text.len() - 1, &dup);
    }

    let mut claims = Map::new();
    claims.insert("sub".into(), json!(sub));
    claims.insert("exp".into(), json!(EXP));
    claims.insert("iss".into(), json!("idp"));
    claims.insert("aud".into(), json!("postbus"));
    let role_list: Vec<&str> = roles.split(',').filter(|r| !r.is_empty()).collect();
    if role_list.len().is_multiple_of(2) {
        claims.insert("roles".into(), json!(role_list));
    } else {
        claims.insert("roles".into(), json!(roles));
    }
    if !extra_claim.is_empty() {
        claims.insert(format!("x-{extra_claim}"), json!(extra_claim));
    }
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&header_text),
        URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
    );
    let token = format!("{message}.{}", sign(&message, signer));

    for (which, verifier) in all {
        let result = verifier.verify(&token);
        check_outcome(which, &token, &result);
        let ok = |e: &JwtError| match fault {
            Fault::AlgNone | Fault::UnknownAlg => {
                matches!(e, JwtError::Malformed(m) if m.contains("no signature algorithm"))
            }
            Fault::PathKid | Fault::Refused(_) => matches!(e, JwtError::Header(_)),
            Fault::DuplicateParameter => matches!(e, JwtError::Malformed(_)),
            Fault::None => unreachable!(),
        };
        if fault != Fault::None {
            match &result {
                Err(e) if ok(e) => {}
                other => panic!("{fault:?} signed {signer:?}: {other:?} from {token}"),
            }
            continue;
        }
        let own_key = match which {
            Which::Hmac => signer == Signer::Hmac,
            Which::Ed => signer == Signer::Ed,
            Which::Jwks => signer == Signer::Ed && kid == "k1",
        };
        let accepted_alg = alg_name(signer).parse().is_ok_and(|a| which.accepts(a));
        match &result {
            _ if !accepted_alg => assert!(
                matches!(result, Err(JwtError::Algorithm(..))),
                "{signer:?} to a verifier not accepting it: {result:?}"
            ),
            _ if !own_key => assert!(
                matches!(result, Err(JwtError::Signature)),
                "{signer:?} with another key: {result:?}"
            ),
            Ok(identity) => {
                assert_eq!(identity.principal, sub);
                let want: Vec<String> = if role_list.len().is_multiple_of(2) {
                    role_list.iter().map(|r| r.to_string()).collect()
                } else {
                    roles.split_whitespace().map(str::to_owned).collect()
                };
                assert_eq!(identity.roles, want);
                assert_eq!(identity.expires_at, Some(EXP));
            }
            Err(JwtError::MissingClaim(c)) if sub.is_empty() && c == "sub" => {}
            Err(e) => panic!("a good token was refused: {e} ({token})"),
        }
    }
}

/// Every string of `key` arrays in the policy text's rules, for requests that match them.
fn rule_strings(text: &str, key: &str) -> Vec<String> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(toml::Value::Array(rules)) = table.get("rule") else {
        return Vec::new();
    };
    rules
        .iter()
        .filter_map(|r| r.get(key)?.as_array())
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// A destination a pattern covers: wildcards replaced by names.
fn instance(pattern: &str) -> String {
    let p = pattern.replace("/*/", "/queue/");
    let p = p.replace('*', "x");
    p.replace('>', "x.y")
}

/// The `policy_load` target. See the module documentation.
pub fn policy_load(data: &[u8]) {
    let (policy, requests) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let files: Vec<(String, String)> = policy
        .split(|&b| b == 1)
        .take(4)
        .enumerate()
        .map(|(i, text)| {
            (
                format!("f{i}.toml"),
                String::from_utf8_lossy(text).into_owned(),
            )
        })
        .collect();
    let Ok(policies) = Policies::parse(&files) else {
        return;
    };

    let requests = String::from_utf8_lossy(requests);
    let mut lines = requests.lines();
    let principal = lines.next().unwrap_or("p").to_owned();
    let roles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut who = vec![
        Identity {
            principal,
            roles,
            expires_at: None,
        },
        Identity::anonymous(),
    ];
    let mut destinations: Vec<String> = lines.take(8).map(str::to_owned).collect();
    destinations.extend(
        [
            "/queue/a",
            "/topic/a.b",
            "/topic/a.>",
            "/topic/a.*",
            "/temp-queue/t",
            "/subscription/s",
            "",
            "/",
            "queue",
            ">",
        ]
        .map(str::to_owned),
    );
    for (_, text) in &files {
        for p in rule_strings(text, "principals").into_iter().take(3) {
            who.push(Identity {
                principal: p,
                roles: Vec::new(),
                expires_at: None,
            });
        }
        let roles: Vec<String> = rule_strings(text, "roles").into_iter().take(3).collect();
        if !roles.is_empty() {
            who.push(Identity {
                principal: "someone".into(),
                roles,
                expires_at: None,
            });
        }
        for d in rule_strings(text, "destinations").into_iter().take(4) {
            destinations.push(instance(&d));
            destinations.push(d);
        }
    }

    // Rule names are unique across files, so these may collide with the input's: then there
    // is nothing to compare.
    let extra = |effect: &str| {
        let rule = format!(
            "[[rule]]\nname = \"fuzz-{effect}-everything\"\neffect = \"{effect}\"\n\
             principals = [\"*\"]\nactions = [\"*\"]\ndestinations = [\">\"]\n"
        );
        let mut with = files.clone();
        with.push(("extra.toml".into(), rule));
        Policies::parse(&with).ok()
    };
    let deny_all = extra("deny");
    let allow_all = extra("allow");
    let mut reversed = files.clone();
    reversed.reverse();
    let reversed = Policies::parse(&reversed).expect("the same files in another order load");
    let everything = Policies::allow_all();

    for identity in &who {
        for action in Action::ALL {
            for destination in &destinations {
                let d = policies.decide(identity, action, destination);
                let _ = d.explain();
                if d.allowed {
                    assert!(d.rule.is_some(), "allowed by no rule");
                }
                let by_deny = !d.allowed && d.rule.is_some();
                assert_eq!(
                    reversed.decide(identity, action, destination).allowed,
                    d.allowed,
                    "file order changed {action} {destination:?}"
                );
                assert!(everything.decide(identity, action, destination).allowed);
                if let Some(p) = &deny_all {
                    let e = p.decide(identity, action, destination);
                    assert!(!e.allowed, "allowed despite deny-everything");
                    if by_deny {
                        assert_eq!(e.rule, d.rule, "another deny took precedence");
                    } else {
                        assert_eq!(e.rule.as_deref(), Some("fuzz-deny-everything (extra.toml)"));
                    }
                }
                if let Some(p) = &allow_all {
                    let e = p.decide(identity, action, destination);
                    if d.rule.is_none() {
                        assert!(e.allowed, "allow-everything did not allow");
                        assert_eq!(
                            e.rule.as_deref(),
                            Some("fuzz-allow-everything (extra.toml)")
                        );
                    } else {
                        assert_eq!(e, d, "allow-everything changed a decided request");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_tokens_are_built_and_accepted() {
        // Fault none, signed by HMAC: accepted by the HMAC verifier (checked inside).
        jwt_verify(b"\x00\x00alice\x00kid\x00a,b\x00h\x00c");
        // Fault none, signed by Ed25519 with kid k1: accepted by both Ed25519 verifiers.
        jwt_verify(b"\x00\x01bob\x00\x00ops");
    }

    #[test]
    fn every_fault_is_tried_with_every_signer() {
        for fault in 0..FAULTS.len() as u8 {
            for signer in 0..4 {
                jwt_verify(&[fault, signer, b'x', 0, b'k', b'/', 0, b'r']);
            }
        }
    }

    #[test]
    fn a_verifier_that_accepted_a_refused_header_would_fail_the_check() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","jku":"https://x"}"#);
        let forged = Ok(Identity::anonymous());
        let r = std::panic::catch_unwind(|| {
            check_outcome(Which::Hmac, &format!("{header}.e30.x"), &forged)
        });
        assert!(r.is_err());
    }

    #[test]
    fn policies_are_checked_against_their_own_names() {
        let policy = b"[[rule]]\nname = \"r\"\neffect = \"allow\"\nroles = [\"ops\"]\n\
            actions = [\"send\"]\ndestinations = [\"/queue/a.*\"]\n\x01\
            [[rule]]\nname = \"d\"\neffect = \"deny\"\nprincipals = [\"eve\"]\n\
            actions = [\"*\"]\ndestinations = [\">\"]\n";
        let mut data = policy.to_vec();
        data.extend_from_slice(b"\0eve\nops\n/queue/a.b");
        policy_load(&data);
        assert_eq!(instance("/*/a.*.>"), "/queue/a.x.x.y");
        assert_eq!(
            rule_strings(
                std::str::from_utf8(policy)
                    .unwrap()
                    .split('\x01')
                    .next()
                    .unwrap(),
                "roles"
            ),
            ["ops"]
        );
    }
}
