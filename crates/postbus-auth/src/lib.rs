//! Authentication and authorization for postbus, as pure logic (no I/O): the caller reads key
//! and policy files and hands their contents here, so every decision can be unit-tested.
//!
//! - [`jwt`]: verifies a JSON Web Token (the STOMP passcode, an HTTP bearer token) against
//!   configured keys, with an explicit algorithm allow-list, and yields an [`Identity`].
//! - [`policy`]: the TOML policy language of `policies/`: who may do what to which
//!   destinations; deny overrides allow, and nothing is allowed unless a rule allows it.
//! - [`fuzzing`]: the checks of the `jwt_verify` and `policy_load` fuzz targets (fuzz/).
//!
//! The crate has no HTTP client: verification keys are only ever the configured ones.

pub mod fuzzing;
pub mod jwt;
pub mod policy;

pub use jwt::{JwtError, JwtSettings, KeyMaterial, Verifier};
pub use policy::{Action, Decision, Policies, PolicyError};

/// Who a client is, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The principal: the token's `sub` claim (or `anonymous`).
    pub principal: String,
    /// Roles (groups) from the configured claim.
    pub roles: Vec<String>,
    /// When the credentials end (epoch seconds), if they do.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// The identity of a client admitted without credentials (`--allow-anonymous`).
    pub fn anonymous() -> Identity {
        Identity {
            principal: "anonymous".into(),
            roles: Vec::new(),
            expires_at: None,
        }
    }
}
