//! Negation normal form: `NOT` pushed down until it sits only directly
//! above a leaf predicate.
//!
//! Every rewrite here is an exact equivalence in this crate's three-valued
//! logic, so `evaluate` gives the same answer before and after (a property
//! test checks this on random selectors and messages):
//!
//! - `NOT NOT x` is `x`; De Morgan's laws hold for Kleene logic, so
//!   `NOT (a AND b)` is `NOT a OR NOT b` and vice versa.
//! - `NOT (x IN ...)`, `NOT (x LIKE ...)`, `NOT (x IS NULL)` become `NOT IN`,
//!   `NOT LIKE`, `IS NOT NULL`: all three give UNKNOWN exactly when the
//!   positive form does, and the complement otherwise.
//! - `NOT TRUE` is `FALSE`.
//!
//! Comparisons and BETWEEN keep their `NOT`: flipping `NOT (a = 1)` to
//! `a <> 1` would be wrong when `a` is a string (both forms are FALSE for
//! unlike types) or NaN, and `NOT BETWEEN` is defined by the spec as
//! `a < lo OR a > hi`, which differs from `NOT (a BETWEEN lo AND hi)` in the
//! same cases. SQL translation handles negated leaves directly.

use crate::ast::{Expr, Literal};

/// Returns `e` in negation normal form. Nested `AND`s (and `OR`s) produced
/// by De Morgan's laws are flattened into one operator.
pub fn to_nnf(e: &Expr) -> Expr {
    positive(e)
}

fn positive(e: &Expr) -> Expr {
    match e {
        Expr::Not(inner) => negative(inner),
        Expr::And(items) => flatten(true, items.iter().map(positive)),
        Expr::Or(items) => flatten(false, items.iter().map(positive)),
        leaf => leaf.clone(),
    }
}

fn negative(e: &Expr) -> Expr {
    match e {
        Expr::Not(inner) => positive(inner),
        Expr::And(items) => flatten(false, items.iter().map(negative)),
        Expr::Or(items) => flatten(true, items.iter().map(negative)),
        Expr::In {
            negated,
            ident,
            list,
        } => Expr::In {
            negated: !negated,
            ident: ident.clone(),
            list: list.clone(),
        },
        Expr::Like {
            negated,
            ident,
            pattern,
        } => Expr::Like {
            negated: !negated,
            ident: ident.clone(),
            pattern: pattern.clone(),
        },
        Expr::IsNull { negated, ident } => Expr::IsNull {
            negated: !negated,
            ident: ident.clone(),
        },
        Expr::Literal(Literal::Bool(b)) => Expr::Literal(Literal::Bool(!b)),
        leaf => Expr::Not(Box::new(leaf.clone())),
    }
}

fn flatten(and: bool, items: impl Iterator<Item = Expr>) -> Expr {
    let mut out = Vec::new();
    for item in items {
        match item {
            Expr::And(inner) if and => out.extend(inner),
            Expr::Or(inner) if !and => out.extend(inner),
            other => out.push(other),
        }
    }
    if and { Expr::And(out) } else { Expr::Or(out) }
}

/// Whether `e` is in negation normal form.
pub fn is_nnf(e: &Expr) -> bool {
    match e {
        Expr::Not(inner) => !matches!(
            inner.as_ref(),
            Expr::Not(_)
                | Expr::And(_)
                | Expr::Or(_)
                | Expr::In { .. }
                | Expr::Like { .. }
                | Expr::IsNull { .. }
                | Expr::Literal(Literal::Bool(_))
        ),
        Expr::And(items) | Expr::Or(items) => items.iter().all(is_nnf),
        _ => true,
    }
}
