//! The policy language of `policies/*.toml` (docs/security.md): rules that allow or deny
//! actions on destinations to principals and roles. Deny overrides allow; what no rule allows
//! is denied. Every decision names the rule that made it.
//!
//! ```toml
//! [[rule]]
//! name = "payments-out"
//! effect = "allow"                       # or "deny"
//! roles = ["payments-producer"]          # and/or principals = ["svc-payments"]; "*" = anyone
//! actions = ["send"]                     # send consume browse create delete purge admin, or "*"
//! destinations = ["/queue/payments.*.out", "/topic/audit.>"]   # ">" alone = every destination
//! ```

use std::collections::HashSet;
use std::fmt;

use postbus_model::destination::validate_pattern;
use serde::Deserialize;

use crate::Identity;

/// What a client wants to do to a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Send,
    Consume,
    Browse,
    Create,
    Delete,
    Purge,
    Admin,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Send,
        Action::Consume,
        Action::Browse,
        Action::Create,
        Action::Delete,
        Action::Purge,
        Action::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Send => "send",
            Action::Consume => "consume",
            Action::Browse => "browse",
            Action::Create => "create",
            Action::Delete => "delete",
            Action::Purge => "purge",
            Action::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy file that cannot be used, and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("{file}: not valid policy TOML: {reason}")]
    Syntax { file: String, reason: String },
    #[error("{file}: rule {rule:?}: {reason}")]
    Rule {
        file: String,
        rule: String,
        reason: String,
    },
    #[error("rule name {0:?} is used twice (names must be unique across all policy files)")]
    Duplicate(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    effect: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    actions: Vec<String>,
    destinations: Vec<String>,
}

/// One destination pattern of a rule: a kind (None = any) and a name pattern (None = any).
#[derive(Clone, Debug)]
struct DestinationPattern {
    kind: Option<String>,
    name: Option<String>,
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    file: String,
    allow: bool,
    anyone: bool,
    principals: HashSet<String>,
    roles: HashSet<String>,
    actions: HashSet<Action>,
    destinations: Vec<DestinationPattern>,
}

/// The outcome of a check, with the rule that decided (None: nothing allowed it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rule: Option<String>,
}

impl Decision {
    /// The reason as people read it.
    pub fn explain(&self) -> String {
        match (&self.rule, self.allowed) {
            (Some(r), true) => format!("allowed by rule {r:?}"),
            (Some(r), false) => format!("denied by rule {r:?}"),
            (None, _) => "denied: no rule allows it (default deny)".into(),
        }
    }
}

/// A loaded set of policy files.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    rules: Vec<Rule>,
    /// Admit everything: only for `--allow-anonymous` without policy files.
    allow_all: bool,
}

impl Policies {
    /// Everything allowed (a development broker without policies).
    pub fn allow_all() -> Policies {
        Policies {
            rules: Vec::new(),
            allow_all: true,
        }
    }

    /// How many rules are loaded.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Parses policy files, given as (file name, contents).
    pub fn parse(files: &[(String, String)]) -> Result<Policies, PolicyError> {
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        for (file, text) in files {
            let parsed: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Syntax {
                file: file.clone(),
                reason: e.to_string(),
            })?;
            for spec in parsed.rule {
                let rule = compile(file, spec)?;
                if !names.insert(rule.name.clone()) {
                    return Err(PolicyError::Duplicate(rule.name));
                }
                rules.push(rule);
            }
        }
        Ok(Policies {
            rules,
            allow_all: false,
        })
    }

    /// Whether `who` may do `action` to `destination` (`/queue/NAME`, `/topic/NAME` or a
    /// topic pattern being subscribed to, `/temp-queue/NAME`, `/subscription/NAME`).
    pub fn decide(&self, who: &Identity, action: Action, destination: &str) -> Decision {
        if self.allow_all {
            return Decision {
                allowed: true,
                rule: Some("allow-anonymous (no policies loaded)".into()),
            };
        }
        let (kind, name) = split_destination(destination);
        let applies = |r: &&Rule| {
            r.actions.contains(&action)
                && (r.anyone
                    || r.principals.contains(&who.principal)
                    || who.roles.iter().any(|role| r.roles.contains(role)))
                && r.destinations.iter().any(|d| d.covers(kind, name))
        };
        if let Some(deny) = self.rules.iter().filter(applies).find(|r| !r.allow) {
            return Decision {
                allowed: false,
                rule: Some(format!("{} ({})", deny.name, deny.file)),
            };
        }
        match self.rules.iter().filter(applies).find(|r| r.allow) {
            Some(allow) => Decision {
                allowed: true,
                rule: Some(format!("{} ({})", allow.name, allow.file)),
            },
            None => Decision {
                allowed: false,
                rule: None,
            },
        }
    }
}

fn split_destination(d: &str) -> (&str, &str) {
    d.strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or(("queue", d))
}

impl DestinationPattern {
    fn covers(&self, kind: &str, name: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.name.as_deref().is_none_or(|p| pattern_covers(p, name))
    }
}

/// Whether every name that `inner` (a name, or a subscription pattern) stands for is matched
/// by policy pattern `outer`: `*` is one segment, `>` one or more trailing segments.
fn pattern_covers(outer: &str, inner: &str) -> bool {
    let o: Vec<&str> = outer.split('.').collect();
    let i: Vec<&str> = inner.split('.').collect();
    for (k, seg) in o.iter().enumerate() {
        match *seg {
            ">" => return i.len() > k,
            "*" => {
                if k >= i.len() || i[k] == ">" {
                    return false;
                }
            }
            lit => {
                if k >= i.len() || i[k] != lit {
                    return false;
                }
            }
        }
    }
    o.len() == i.len()
}

fn compile(file: &str, spec: RuleSpec) -> Result<Rule, PolicyError> {
    let err = |reason: String| PolicyError::Rule {
        file: file.to_owned(),
        rule: spec.name.clone(),
        reason,
    };
    if spec.name.trim().is_empty() {
        return Err(err("a rule needs a name".into()));
    }
    let allow = match spec.effect.as_str() {
        "allow" => true,
        "deny" => false,
        other => {
            return Err(err(format!(
                "effect {other:?} is neither \"allow\" nor \"deny\""
            )));
        }
    };
    if spec.principals.is_empty() && spec.roles.is_empty() {
        return Err(err(
            "name who it is for: principals = [...] and/or roles = [...] (\"*\" = anyone)".into(),
        ));
    }
    let anyone = spec.principals.iter().any(|p| p == "*") || spec.roles.iter().any(|r| r == "*");
    let mut actions = HashSet::new();
    for a in &spec.actions {
        if a == "*" {
            actions.extend(Action::ALL);
        } else {
            actions.insert(Action::parse(a).ok_or_else(|| {
                err(format!(
                    "unknown action {a:?} (send, consume, browse, create, delete, purge, admin, or \"*\")"
                ))
            })?);
        }
    }
    if actions.is_empty() {
        return Err(err("actions = [...] is empty".into()));
    }
    let mut destinations = Vec::new();
    for d in &spec.destinations {
        destinations.push(parse_pattern(d).map_err(err)?);
    }
    if destinations.is_empty() {
        return Err(err("destinations = [...] is empty".into()));
    }
    let _ = &spec.description;
    Ok(Rule {
        name: spec.name.clone(),
        file: file.to_owned(),
        allow,
        anyone,
        principals: spec.principals.iter().cloned().collect(),
        roles: spec.roles.iter().cloned().collect(),
        actions,
        destinations,
    })
}

fn parse_pattern(d: &str) -> Result<DestinationPattern, String> {
    if d == ">" {
        return Ok(DestinationPattern {
            kind: None,
            name: None,
        });
    }
    let Some((kind, name)) = d.strip_prefix('/').and_then(|r| r.split_once('/')) else {
        return Err(format!(
            "destination {d:?} must look like /queue/NAME, /topic/NAME, /temp-queue/NAME, /subscription/NAME or /*/NAME (or \">\" for all)"
        ));
    };
    let kind = match kind {
        "*" => None,
        "queue" | "topic" | "temp-queue" | "subscription" => Some(kind.to_owned()),
        other => return Err(format!("unknown destination kind {other:?} in {d:?}")),
    };
    let name = if name == ">" {
        None
    } else if kind.as_deref() == Some("subscription") {
        Some(name.to_owned())
    } else {
        validate_pattern(name).map_err(|e| format!("destination {d:?}: {e}"))?;
        Some(name.to_owned())
    };
    Ok(DestinationPattern { kind, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(p: &str, roles: &[&str]) -> Identity {
        Identity {
            principal: p.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            expires_at: None,
        }
    }

    const BANK: &str = r#"
[[rule]]
name = "payments-producer"
effect = "allow"
roles = ["payments-producer"]
actions = ["send", "create"]
destinations = ["/queue/payments.*.out"]

[[rule]]
name = "ledger"
effect = "allow"
principals = ["svc-ledger"]
actions = ["consume"]
destinations = ["/queue/payments.>", "/topic/ledger.>"]

[[rule]]
name = "auditor-browses"
effect = "allow"
roles = ["auditor"]
actions = ["browse"]
destinations = [">"]

[[rule]]
name = "auditor-never-consumes"
effect = "deny"
roles = ["auditor"]
actions = ["consume"]
destinations = [">"]

[[rule]]
name = "operator"
effect = "allow"
roles = ["operator"]
actions = ["*"]
destinations = [">"]
"#;

    fn bank() -> Policies {
        Policies::parse(&[("bank.toml".into(), BANK.into())]).unwrap()
    }

    #[test]
    fn allow_deny_and_default_deny_name_their_rule() {
        let p = bank();
        let d = p.decide(
            &who("svc-pay", &["payments-producer"]),
            Action::Send,
            "/queue/payments.eu.out",
        );
        assert!(d.allowed);
        assert_eq!(d.rule.as_deref(), Some("payments-producer (bank.toml)"));
        // One segment only for `*`.
        assert!(
            !p.decide(
                &who("svc-pay", &["payments-producer"]),
                Action::Send,
                "/queue/payments.eu.x.out"
            )
            .allowed
        );
        assert!(
            !p.decide(
                &who("svc-pay", &["payments-producer"]),
                Action::Consume,
                "/queue/payments.eu.out"
            )
            .allowed
        );
        assert!(
            p.decide(
                &who("svc-ledger", &[]),
                Action::Consume,
                "/queue/payments.eu.out"
            )
            .allowed
        );
        assert!(
            p.decide(&who("svc-ledger", &[]), Action::Consume, "/topic/ledger.>")
                .allowed
        );
        // Deny overrides allow: an auditor who is also an operator still may not consume.
        let d = p.decide(
            &who("eve", &["auditor", "operator"]),
            Action::Consume,
            "/queue/x",
        );
        assert!(!d.allowed);
        assert_eq!(
            d.rule.as_deref(),
            Some("auditor-never-consumes (bank.toml)")
        );
        assert!(
            p.decide(
                &who("eve", &["auditor"]),
                Action::Browse,
                "/queue/payments.eu.out"
            )
            .allowed
        );
        let d = p.decide(&who("nobody", &[]), Action::Send, "/queue/x");
        assert_eq!(
            d,
            Decision {
                allowed: false,
                rule: None
            }
        );
        assert!(d.explain().contains("default deny"));
    }

    #[test]
    fn a_subscription_pattern_needs_a_rule_covering_all_it_matches() {
        let p = Policies::parse(&[(
            "t.toml".into(),
            r#"
[[rule]]
name = "one-level"
effect = "allow"
principals = ["s"]
actions = ["consume"]
destinations = ["/topic/orders.*"]
"#
            .into(),
        )])
        .unwrap();
        let s = who("s", &[]);
        assert!(p.decide(&s, Action::Consume, "/topic/orders.eu").allowed);
        assert!(p.decide(&s, Action::Consume, "/topic/orders.*").allowed);
        assert!(!p.decide(&s, Action::Consume, "/topic/orders.>").allowed);
        assert!(!p.decide(&s, Action::Consume, "/queue/orders.eu").allowed);
    }

    #[test]
    fn broken_files_are_refused_with_where_and_why() {
        for (text, needle) in [
            ("[[rule]]\nname = \"a\"", "missing field"),
            (
                "[[rule]]\nname=\"a\"\neffect=\"maybe\"\nroles=[\"r\"]\nactions=[\"send\"]\ndestinations=[\">\"]",
                "neither",
            ),
            (
                "[[rule]]\nname=\"a\"\neffect=\"allow\"\nactions=[\"send\"]\ndestinations=[\">\"]",
                "who it is for",
            ),
            (
                "[[rule]]\nname=\"a\"\neffect=\"allow\"\nroles=[\"r\"]\nactions=[\"fly\"]\ndestinations=[\">\"]",
                "unknown action",
            ),
            (
                "[[rule]]\nname=\"a\"\neffect=\"allow\"\nroles=[\"r\"]\nactions=[\"send\"]\ndestinations=[\"queue/x\"]",
                "must look like",
            ),
            (
                "[[rule]]\nname=\"a\"\neffect=\"allow\"\nroles=[\"r\"]\nactions=[\"send\"]\ndestinations=[\"/queue/a.>.b\"]",
                "destination",
            ),
            ("this is not toml", "not valid policy TOML"),
        ] {
            let e = Policies::parse(&[("f.toml".into(), text.into())])
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.contains("f.toml"), "{e}");
        }
        let dup = "[[rule]]\nname=\"a\"\neffect=\"allow\"\nroles=[\"r\"]\nactions=[\"send\"]\ndestinations=[\">\"]\n";
        let e = Policies::parse(&[("1.toml".into(), dup.into()), ("2.toml".into(), dup.into())])
            .unwrap_err();
        assert_eq!(e, PolicyError::Duplicate("a".into()));
    }

    #[test]
    fn covering() {
        assert!(pattern_covers("a.>", "a.b.c"));
        assert!(pattern_covers("a.>", "a.>"));
        assert!(!pattern_covers("a.>", "a"));
        assert!(pattern_covers("a.*.c", "a.*.c"));
        assert!(!pattern_covers("a.*", "a.>"));
        assert!(pattern_covers("a.b", "a.b"));
        assert!(!pattern_covers("a.b", "a.*"));
    }
}
