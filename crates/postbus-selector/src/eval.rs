//! Evaluation with SQL three-valued logic and Java numeric promotion.
//!
//! `None` is SQL NULL for values and UNKNOWN for conditions. The rules, and
//! the places where the spec leaves a choice, are listed in the crate
//! documentation ("Deviations and choices"); this module implements them.

use std::borrow::Cow;

use crate::ast::{ArithOp, CmpOp, Expr, Literal, UnaryOp};
use crate::value::{HeaderField, IdentKind, MessageView, Value};

/// A value during evaluation. `byte` and `short` are widened to `int` on
/// load: Java's numeric promotion does the same before any arithmetic or
/// comparison, so nothing observable changes. Strings borrow from the
/// selector's literals where possible.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum V<'a> {
    Bool(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Str(Cow<'a, str>),
}

impl From<Value> for V<'static> {
    fn from(v: Value) -> V<'static> {
        match v {
            Value::Bool(b) => V::Bool(b),
            Value::Byte(v) => V::Int(i32::from(v)),
            Value::Short(v) => V::Int(i32::from(v)),
            Value::Int(v) => V::Int(v),
            Value::Long(v) => V::Long(v),
            Value::Float(v) => V::Float(v),
            Value::Double(v) => V::Double(v),
            Value::String(s) => V::Str(Cow::Owned(s)),
        }
    }
}

/// Operands after Java binary numeric promotion.
enum Promoted {
    Int(i32, i32),
    Long(i64, i64),
    Float(f32, f32),
    Double(f64, f64),
}

/// Java binary numeric promotion (JLS 5.6.2): double if either is double,
/// else float if either is float, else long if either is long, else int.
/// `as` conversions round to nearest like Java's widening conversions.
fn promote(a: &V<'_>, b: &V<'_>) -> Option<Promoted> {
    fn rank(v: &V<'_>) -> Option<u8> {
        match v {
            V::Int(_) => Some(0),
            V::Long(_) => Some(1),
            V::Float(_) => Some(2),
            V::Double(_) => Some(3),
            V::Bool(_) | V::Str(_) => None,
        }
    }
    fn as_f64(v: &V<'_>) -> f64 {
        match *v {
            V::Int(x) => f64::from(x),
            V::Long(x) => x as f64,
            V::Float(x) => f64::from(x),
            V::Double(x) => x,
            _ => f64::NAN,
        }
    }
    fn as_f32(v: &V<'_>) -> f32 {
        match *v {
            V::Int(x) => x as f32,
            V::Long(x) => x as f32,
            V::Float(x) => x,
            _ => f32::NAN,
        }
    }
    fn as_i64(v: &V<'_>) -> i64 {
        match *v {
            V::Int(x) => i64::from(x),
            V::Long(x) => x,
            _ => 0,
        }
    }
    Some(match rank(a)?.max(rank(b)?) {
        3 => Promoted::Double(as_f64(a), as_f64(b)),
        2 => Promoted::Float(as_f32(a), as_f32(b)),
        1 => Promoted::Long(as_i64(a), as_i64(b)),
        _ => match (a, b) {
            (V::Int(x), V::Int(y)) => Promoted::Int(*x, *y),
            _ => return None,
        },
    })
}

/// Looks an identifier up: headers through `header()`, properties through
/// `property()`, other `JMS*` names are NULL.
pub(crate) fn lookup(name: &str, msg: &dyn MessageView) -> Option<Value> {
    match IdentKind::of(name) {
        IdentKind::Header(h) => msg.header(h),
        IdentKind::Property => msg.property(name),
        IdentKind::AlwaysNull => None,
    }
}

/// Evaluates an expression in value position. `None` is NULL.
pub(crate) fn value<'a>(e: &'a Expr, msg: &dyn MessageView) -> Option<V<'a>> {
    match e {
        Expr::Literal(l) => Some(match l {
            Literal::Bool(b) => V::Bool(*b),
            Literal::Long(v) => V::Long(*v),
            Literal::Float(v) => V::Float(*v),
            Literal::Double(v) => V::Double(*v),
            Literal::String(s) => V::Str(Cow::Borrowed(s)),
        }),
        Expr::Ident(name) => lookup(name, msg).map(V::from),
        Expr::Unary { op, operand } => {
            let v = value(operand, msg)?;
            match (op, v) {
                (UnaryOp::Plus, v @ (V::Int(_) | V::Long(_) | V::Float(_) | V::Double(_))) => {
                    Some(v)
                }
                // Overflow (-Integer.MIN_VALUE) wraps in Java; here it is
                // NULL, because a wrapped number never means what the rule
                // author intended.
                (UnaryOp::Neg, V::Int(x)) => x.checked_neg().map(V::Int),
                (UnaryOp::Neg, V::Long(x)) => x.checked_neg().map(V::Long),
                (UnaryOp::Neg, V::Float(x)) => Some(V::Float(-x)),
                (UnaryOp::Neg, V::Double(x)) => Some(V::Double(-x)),
                _ => None,
            }
        }
        Expr::Arith { op, lhs, rhs } => {
            let a = value(lhs, msg)?;
            let b = value(rhs, msg)?;
            arith(*op, &a, &b)
        }
        // A condition in value position (only reachable through a
        // hand-built tree) yields its truth value.
        _ => condition(e, msg).map(V::Bool),
    }
}

/// Integer arithmetic is checked: division by zero and overflow give NULL
/// (Java throws or wraps); floating point follows IEEE 754 like Java.
fn arith<'a>(op: ArithOp, a: &V<'_>, b: &V<'_>) -> Option<V<'a>> {
    Some(match promote(a, b)? {
        Promoted::Int(x, y) => V::Int(match op {
            ArithOp::Add => x.checked_add(y)?,
            ArithOp::Sub => x.checked_sub(y)?,
            ArithOp::Mul => x.checked_mul(y)?,
            ArithOp::Div => x.checked_div(y)?,
        }),
        Promoted::Long(x, y) => V::Long(match op {
            ArithOp::Add => x.checked_add(y)?,
            ArithOp::Sub => x.checked_sub(y)?,
            ArithOp::Mul => x.checked_mul(y)?,
            ArithOp::Div => x.checked_div(y)?,
        }),
        Promoted::Float(x, y) => V::Float(match op {
            ArithOp::Add => x + y,
            ArithOp::Sub => x - y,
            ArithOp::Mul => x * y,
            ArithOp::Div => x / y,
        }),
        Promoted::Double(x, y) => V::Double(match op {
            ArithOp::Add => x + y,
            ArithOp::Sub => x - y,
            ArithOp::Mul => x * y,
            ArithOp::Div => x / y,
        }),
    })
}

fn cmp_num<T: PartialOrd>(op: CmpOp, x: T, y: T) -> bool {
    // Rust's float operators have IEEE semantics, as Java's do: every
    // comparison with NaN is false except `<>`, which is true.
    match op {
        CmpOp::Eq => x == y,
        CmpOp::Ne => x != y,
        CmpOp::Lt => x < y,
        CmpOp::Le => x <= y,
        CmpOp::Gt => x > y,
        CmpOp::Ge => x >= y,
    }
}

/// Compares two values: NULL gives UNKNOWN; numbers compare after binary
/// numeric promotion; strings and booleans support `=` and `<>` (ordering
/// gives UNKNOWN); values of unlike types give FALSE for every operator.
pub(crate) fn compare(op: CmpOp, a: Option<&V<'_>>, b: Option<&V<'_>>) -> Option<bool> {
    let (a, b) = (a?, b?);
    if let Some(p) = promote(a, b) {
        return Some(match p {
            Promoted::Int(x, y) => cmp_num(op, x, y),
            Promoted::Long(x, y) => cmp_num(op, x, y),
            Promoted::Float(x, y) => cmp_num(op, x, y),
            Promoted::Double(x, y) => cmp_num(op, x, y),
        });
    }
    let equal = match (a, b) {
        (V::Str(x), V::Str(y)) => x == y,
        (V::Bool(x), V::Bool(y)) => x == y,
        _ => return Some(false),
    };
    match op {
        CmpOp::Eq => Some(equal),
        CmpOp::Ne => Some(!equal),
        _ => None,
    }
}

/// Kleene AND: FALSE wins, then UNKNOWN.
pub(crate) fn and3(items: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    let mut result = Some(true);
    for v in items {
        match v {
            Some(false) => return Some(false),
            None => result = None,
            Some(true) => {}
        }
    }
    result
}

/// Kleene OR: TRUE wins, then UNKNOWN.
pub(crate) fn or3(items: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    let mut result = Some(false);
    for v in items {
        match v {
            Some(true) => return Some(true),
            None => result = None,
            Some(false) => {}
        }
    }
    result
}

/// The string value of an identifier for IN and LIKE: NULL and non-string
/// values both give `Err(())`, which those predicates turn into UNKNOWN.
fn string_of(ident: &str, msg: &dyn MessageView) -> Result<String, ()> {
    match lookup(ident, msg) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(()),
    }
}

/// Evaluates an expression in condition position.
pub(crate) fn condition(e: &Expr, msg: &dyn MessageView) -> Option<bool> {
    match e {
        Expr::Literal(Literal::Bool(b)) => Some(*b),
        // A non-boolean identifier used as a condition is UNKNOWN.
        Expr::Ident(name) => match lookup(name, msg) {
            Some(Value::Bool(b)) => Some(b),
            _ => None,
        },
        Expr::Compare { op, lhs, rhs } => {
            let a = value(lhs, msg);
            let b = value(rhs, msg);
            compare(*op, a.as_ref(), b.as_ref())
        }
        Expr::Between {
            negated,
            expr,
            low,
            high,
        } => {
            let v = value(expr, msg);
            let lo = value(low, msg);
            let hi = value(high, msg);
            let (v, lo, hi) = (v.as_ref(), lo.as_ref(), hi.as_ref());
            // The spec defines both forms by expansion:
            // BETWEEN is `v >= lo AND v <= hi`, NOT BETWEEN is `v < lo OR v > hi`.
            if *negated {
                or3([compare(CmpOp::Lt, v, lo), compare(CmpOp::Gt, v, hi)])
            } else {
                and3([compare(CmpOp::Ge, v, lo), compare(CmpOp::Le, v, hi)])
            }
        }
        Expr::In {
            negated,
            ident,
            list,
        } => {
            let s = string_of(ident, msg).ok()?;
            Some(list.contains(&s) != *negated)
        }
        Expr::Like {
            negated,
            ident,
            pattern,
        } => {
            let s = string_of(ident, msg).ok()?;
            Some(pattern.matches(&s) != *negated)
        }
        Expr::IsNull { negated, ident } => Some(lookup(ident, msg).is_none() != *negated),
        Expr::Not(inner) => condition(inner, msg).map(|b| !b),
        Expr::And(items) => and3(items.iter().map(|x| condition(x, msg))),
        Expr::Or(items) => or3(items.iter().map(|x| condition(x, msg))),
        // Numbers, strings and arithmetic are not conditions.
        Expr::Literal(_) | Expr::Unary { .. } | Expr::Arith { .. } => None,
    }
}

/// A message with nothing in it: used to evaluate message-independent parts
/// of a selector ahead of time.
pub(crate) struct EmptyMessage;

impl MessageView for EmptyMessage {
    fn property(&self, _: &str) -> Option<Value> {
        None
    }
    fn header(&self, _: HeaderField) -> Option<Value> {
        None
    }
}
