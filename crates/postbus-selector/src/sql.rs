//! Translation of a selector into a PostgreSQL `WHERE` fragment that
//! pre-filters messages in the store (text generation only, no I/O).
//!
//! # Contract
//!
//! The generated predicate is a *superset* filter: for every message, if
//! [`Selector::evaluate`](crate::Selector::evaluate) is `Some(true)` then the
//! SQL predicate is TRUE. It may also be TRUE (or FALSE, or NULL) for
//! messages the selector rejects; the broker runs the exact evaluator on
//! every candidate row, so an imprecise pre-filter costs only throughput,
//! while a too-narrow one would lose messages. Whenever a construct cannot be
//! translated safely it becomes `TRUE`.
//!
//! # Method
//!
//! The selector is put into negation normal form ([`crate::to_nnf`]), so
//! `NOT` only appears directly above leaf predicates. Each leaf is then
//! replaced by an SQL condition that is TRUE for every message on which the
//! leaf is TRUE. Since AND and OR are monotone, combining supersets with them
//! yields a superset of the whole selector. No `NOT` is ever applied to a
//! translated subtree, which is what would break the superset property.
//!
//! # Storage layout assumed
//!
//! - Properties live in a `jsonb` column ([`SqlMapping::properties_column`])
//!   as a flat object: strings as JSON strings, booleans as JSON booleans,
//!   every numeric type as a JSON number (integers exactly, `float` and
//!   `double` as the shortest text that reads back as the same `double`;
//!   a `float` is first widened to `double`). The JSON type loses the Java
//!   type, so a JSON number is assumed to be any of the six numeric types.
//! - NaN and infinite `float`/`double` values have no JSON number form
//!   (serde_json writes them as `null`). A JSON `null`, object or array is
//!   therefore treated as "a number of unknown value" and kept by numeric
//!   predicates, so such a store remains correct.
//! - Headers and selected properties may live in columns
//!   ([`SqlMapping::header_expr`], [`SqlMapping::column_for_property`]); the
//!   expression must be NULL exactly when the header/property is absent, and
//!   otherwise equal its value, of the [`SqlType`] given (headers: text for
//!   the string headers, an integer type for `JMSPriority` and for
//!   `JMSTimestamp` in epoch milliseconds). A `None` mapping makes every leaf
//!   on that header `TRUE`.
//!
//! # What is pushed down
//!
//! Leaves comparing a header or property with a value that does not depend
//! on the message (a literal, or arithmetic on literals):
//!
//! - string `=` (as `@>` containment, which a GIN index can serve) and `<>`;
//!   booleans `=`/`<>` and a bare boolean property (`flag`, `NOT flag`);
//! - numeric `= <> < <= > >=` with a `jsonb_typeof(..) = 'number'` guard
//!   (in a `CASE`, so the `::numeric` cast never sees a string);
//! - `BETWEEN` / `NOT BETWEEN`, as the two comparisons the spec defines;
//! - `IN` / `NOT IN` with the list as parameters;
//! - `LIKE` / `NOT LIKE`, re-escaped for PostgreSQL with `ESCAPE E'\\'`;
//! - `IS NULL` / `IS NOT NULL` as key presence (`?`).
//!
//! Negated leaves (`NOT (a = 1)`) are translated with their exact meaning,
//! including "TRUE when the property has another type". Leaves whose value is
//! the same for every message are evaluated here and become `TRUE`/`FALSE`.
//! Everything else — arithmetic on properties, comparisons between two
//! identifiers, headers without a mapping — becomes `TRUE`.
//!
//! # Numeric precision
//!
//! Java compares after binary numeric promotion: a `long` against a `double`
//! literal is rounded to `double`, an `int` or `long` against a `float` is
//! rounded to `float`. PostgreSQL `numeric` is exact. The exact comparison is
//! used where rounding provably cannot change the outcome (the literal is
//! below 2^23 in magnitude for comparisons that may involve `float`, below 2^52
//! for those that may involve `long`/`double` rounding); otherwise the bound is
//! widened by a relative 2^-20 (far more than a `float`'s 2^-24 rounding error)
//! and `<>` is not filtered on the value at all. Comparing the stored
//! shortest `double` text with the literal's shortest text is exact because
//! that text is strictly monotone in the `double` it denotes.
//!
//! # Parameters
//!
//! Every literal and every property name is a parameter, so selector text
//! never becomes SQL text. Every placeholder is written `$n::text` (then cast
//! further where needed), so all parameters of the statement have type
//! `text` and are bound as strings. Equal values share one placeholder.

use std::collections::HashMap;

use crate::ast::{CmpOp, Expr};
use crate::eval::{self, EmptyMessage, V};
use crate::nnf::to_nnf;
use crate::value::{HeaderField, IdentKind};

/// How a column-mapped header or property is typed in SQL, which also says
/// which JMS types it can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlType {
    /// `text`/`varchar`: a JMS `String`.
    Text,
    /// `boolean`: a JMS `boolean`.
    Boolean,
    /// `smallint`/`integer`/`bigint`: a JMS `byte`, `short`, `int` or `long`.
    Integer,
    /// `real`/`double precision` holding a JMS `float` or `double` exactly.
    Double,
}

/// Where the store keeps what a selector can reference.
pub trait SqlMapping {
    /// An SQL expression for a header (see the module docs for its type),
    /// or `None` if the header is not available in SQL.
    fn header_expr(&self, h: HeaderField) -> Option<String>;
    /// A column (or expression) holding property `name` and its type, or
    /// `None` if the property is only in the jsonb properties column.
    fn column_for_property(&self, name: &str) -> Option<(String, SqlType)>;
    /// The jsonb column holding all other properties, e.g. `m.properties`.
    fn properties_column(&self) -> String;
}

/// A mapping with every property in one jsonb column and no header
/// columns; useful on its own and as a starting point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonbPropertiesOnly {
    /// The jsonb column, e.g. `m.properties`.
    pub column: String,
}

impl SqlMapping for JsonbPropertiesOnly {
    fn header_expr(&self, _: HeaderField) -> Option<String> {
        None
    }
    fn column_for_property(&self, _: &str) -> Option<(String, SqlType)> {
        None
    }
    fn properties_column(&self) -> String {
        self.column.clone()
    }
}

/// A generated predicate and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlFilter {
    /// A boolean SQL expression; `TRUE` when nothing could be pushed down.
    pub sql: String,
    /// Parameter values, bound as text: `params[i]` is placeholder
    /// `$(first_param + i)`.
    pub params: Vec<String>,
}

/// How one leaf of the selector was translated, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushStatus {
    /// Translated with its exact meaning.
    Pushed,
    /// Translated, with numeric bounds widened for Java rounding.
    Widened,
    /// Left to the evaluator (`TRUE` in SQL).
    NotPushed,
    /// Same for every message; folded to `TRUE`/`FALSE`.
    Constant,
}

/// A translated leaf, for `explain`.
#[derive(Debug, Clone)]
pub(crate) struct LeafNote {
    pub(crate) leaf: String,
    pub(crate) status: PushStatus,
}

/// Which Java numeric types a reference may hold.
#[derive(Debug, Clone, Copy)]
struct NumTypes {
    int: bool,
    long: bool,
    float: bool,
    double: bool,
}

const ALL_NUMERIC: NumTypes = NumTypes {
    int: true,
    long: true,
    float: true,
    double: true,
};

/// A resolved identifier.
enum Ref {
    /// A key of the jsonb properties column.
    Json(String),
    /// A typed column expression.
    Column {
        expr: String,
        ty: SqlType,
        nums: NumTypes,
    },
    /// Not available in SQL.
    Unavailable,
}

/// A piece of SQL text or a parameter value.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Param(String),
}

/// An SQL fragment under construction.
#[derive(Debug, Clone, Default)]
struct Frag(Vec<Piece>);

impl Frag {
    fn t(mut self, s: &str) -> Frag {
        self.0.push(Piece::Text(s.to_owned()));
        self
    }
    /// A parameter followed by its casts, e.g. `::text::numeric`.
    fn p(mut self, value: &str, cast: &str) -> Frag {
        self.0.push(Piece::Param(value.to_owned()));
        self.0.push(Piece::Text(cast.to_owned()));
        self
    }
    fn f(mut self, other: &Frag) -> Frag {
        self.0.extend(other.0.iter().cloned());
        self
    }
}

/// The translated predicate, simplified before placeholders are numbered
/// so that no parameter is allocated for text that is then dropped.
#[derive(Debug, Clone)]
enum Sql {
    True,
    False,
    And(Vec<Sql>),
    Or(Vec<Sql>),
    Frag(Frag),
}

fn and(items: Vec<Sql>) -> Sql {
    let mut out = Vec::new();
    for item in items {
        match item {
            Sql::True => {}
            Sql::False => return Sql::False,
            Sql::And(inner) => out.extend(inner),
            other => out.push(other),
        }
    }
    match out.len() {
        0 => Sql::True,
        1 => out.pop().unwrap_or(Sql::True),
        _ => Sql::And(out),
    }
}

fn or(items: Vec<Sql>) -> Sql {
    let mut out = Vec::new();
    for item in items {
        match item {
            Sql::False => {}
            Sql::True => return Sql::True,
            Sql::Or(inner) => out.extend(inner),
            other => out.push(other),
        }
    }
    match out.len() {
        0 => Sql::False,
        1 => out.pop().unwrap_or(Sql::False),
        _ => Sql::Or(out),
    }
}

/// A numeric condition on a value.
#[derive(Debug, Clone)]
enum NumCond {
    /// `v op bound`, exact. `bound` is decimal text.
    Cmp(CmpOp, String),
    /// `lo <= v <= hi` with either side optional (widened bounds).
    Range(Option<f64>, Option<f64>),
}

/// A condition on a value of one JSON/SQL type.
#[derive(Debug, Clone)]
enum ValCond {
    StrEq(String),
    StrNe(String),
    StrIn(bool, Vec<String>),
    StrLike(bool, String),
    BoolIs(bool),
    Num(NumCond),
    /// A stored non-finite number (`{"nonfinite": "NaN"|"inf"|"-inf"}`) of one of these kinds.
    NonFinite(Vec<&'static str>),
}

/// A condition for one class of value: constant or value-dependent.
#[derive(Debug, Clone)]
enum C {
    T,
    F,
    V(ValCond),
}

impl C {
    fn is_t(&self) -> bool {
        matches!(self, C::T)
    }
    fn is_f(&self) -> bool {
        matches!(self, C::F)
    }
}

/// What a leaf requires of a present value, by the value's type. An absent
/// value never satisfies these leaves (IS NULL is handled separately).
struct Classes {
    s: C,
    n: C,
    b: C,
    /// JSON `null`/object/array: a non-finite number stored by a store that
    /// has no other way to write it.
    other: C,
}

impl Classes {
    fn all(c: C) -> Classes {
        Classes {
            s: c.clone(),
            n: c.clone(),
            b: c.clone(),
            other: c,
        }
    }
}

struct Gen<'a> {
    mapping: &'a dyn SqlMapping,
    props: String,
    notes: Vec<LeafNote>,
}

/// Translates `expr` (see the module docs); placeholders start at
/// `first_param`.
pub(crate) fn translate(
    expr: &Expr,
    mapping: &dyn SqlMapping,
    first_param: usize,
) -> (SqlFilter, Vec<LeafNote>) {
    let mut g = Gen {
        mapping,
        props: mapping.properties_column(),
        notes: Vec::new(),
    };
    let nnf = to_nnf(expr);
    let tree = g.walk(&nnf);
    let mut r = Renderer {
        first: first_param,
        params: Vec::new(),
        index: HashMap::new(),
        out: String::new(),
    };
    r.sql(&tree);
    (
        SqlFilter {
            sql: r.out,
            params: r.params,
        },
        g.notes,
    )
}

/// Whether every identifier in `e` is an always-NULL `JMS*` name, so `e`
/// has the same value for every message.
fn message_independent(e: &Expr) -> bool {
    let mut independent = true;
    e.for_each_ident(&mut |name| {
        if IdentKind::of(name) != IdentKind::AlwaysNull {
            independent = false;
        }
    });
    independent
}

fn decimal(v: &V<'_>) -> Option<String> {
    match *v {
        V::Int(x) => Some(x.to_string()),
        V::Long(x) => Some(x.to_string()),
        // `{:?}` is the shortest text that reads back as the same double
        // (with an exponent for very large or small values, which both
        // `numeric` and `float8` accept); a float is widened first, as the
        // storage layout does.
        V::Float(x) if x.is_finite() => Some(format!("{:?}", f64::from(x))),
        V::Double(x) if x.is_finite() => Some(format!("{x:?}")),
        _ => None,
    }
}

fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

impl Gen<'_> {
    fn walk(&mut self, e: &Expr) -> Sql {
        match e {
            Expr::And(items) => and(items.iter().map(|x| self.walk(x)).collect()),
            Expr::Or(items) => or(items.iter().map(|x| self.walk(x)).collect()),
            Expr::Not(inner) => self.noted_leaf(e, inner, true),
            leaf => self.noted_leaf(e, leaf, false),
        }
    }

    fn noted_leaf(&mut self, shown: &Expr, leaf: &Expr, negated: bool) -> Sql {
        let (sql, status) = self.leaf(leaf, negated);
        self.notes.push(LeafNote {
            leaf: shown.to_string(),
            status,
        });
        sql
    }

    fn resolve(&self, name: &str) -> Ref {
        match IdentKind::of(name) {
            IdentKind::Header(h) => match self.mapping.header_expr(h) {
                Some(expr) => {
                    let (ty, nums) = match h {
                        HeaderField::JMSPriority => (
                            SqlType::Integer,
                            NumTypes {
                                int: true,
                                long: false,
                                float: false,
                                double: false,
                            },
                        ),
                        HeaderField::JMSTimestamp => (
                            SqlType::Integer,
                            NumTypes {
                                int: false,
                                long: true,
                                float: false,
                                double: false,
                            },
                        ),
                        _ => (SqlType::Text, ALL_NUMERIC),
                    };
                    // Parenthesised once here: a mapping may return any
                    // expression, e.g. `a || b`, and operators follow it.
                    Ref::Column {
                        expr: expr_paren(&expr),
                        ty,
                        nums,
                    }
                }
                None => Ref::Unavailable,
            },
            IdentKind::Property => match self.mapping.column_for_property(name) {
                Some((expr, ty)) => {
                    let nums = match ty {
                        SqlType::Integer => NumTypes {
                            int: true,
                            long: true,
                            float: false,
                            double: false,
                        },
                        _ => NumTypes {
                            int: false,
                            long: false,
                            float: true,
                            double: true,
                        },
                    };
                    Ref::Column {
                        expr: expr_paren(&expr),
                        ty,
                        nums,
                    }
                }
                None => Ref::Json(name.to_owned()),
            },
            IdentKind::AlwaysNull => Ref::Unavailable,
        }
    }

    /// Translates one leaf, `NOT leaf` when `negated`.
    fn leaf(&mut self, e: &Expr, negated: bool) -> (Sql, PushStatus) {
        if message_independent(e) {
            let v = eval::condition(e, &EmptyMessage).map(|b| b != negated);
            let sql = if v == Some(true) {
                Sql::True
            } else {
                Sql::False
            };
            return (sql, PushStatus::Constant);
        }
        match e {
            Expr::Compare { op, lhs, rhs } => self.compare(*op, lhs, rhs, negated),
            Expr::Between {
                negated: not_between,
                expr,
                low,
                high,
            } => {
                // The spec's expansions; under NOT, De Morgan turns the
                // conjunction into a disjunction of negated comparisons.
                let (op_lo, op_hi) = if *not_between {
                    (CmpOp::Lt, CmpOp::Gt)
                } else {
                    (CmpOp::Ge, CmpOp::Le)
                };
                let (a, sa) = self.compare(op_lo, expr, low, negated);
                let (b, sb) = self.compare(op_hi, expr, high, negated);
                let sql = if *not_between != negated {
                    or(vec![a, b])
                } else {
                    and(vec![a, b])
                };
                (sql, combine(sa, sb))
            }
            Expr::In {
                negated: not_in,
                ident,
                list,
            } => {
                if list.iter().any(|s| has_nul(s)) {
                    return (Sql::True, PushStatus::NotPushed);
                }
                let neg = *not_in != negated;
                self.string_leaf(ident, ValCond::StrIn(neg, list.clone()))
            }
            Expr::Like {
                negated: not_like,
                ident,
                pattern,
            } => match pattern.to_postgres() {
                Some(p) => {
                    let neg = *not_like != negated;
                    self.string_leaf(ident, ValCond::StrLike(neg, p))
                }
                None => (Sql::True, PushStatus::NotPushed),
            },
            Expr::IsNull {
                negated: not_null,
                ident,
            } => {
                let want_present = *not_null != negated;
                let sql = match self.resolve(ident) {
                    Ref::Json(key) => {
                        let present = self.presence(&key);
                        if want_present {
                            present
                        } else {
                            Frag::default().t("(").f(&present).t(" IS NOT TRUE)")
                        }
                    }
                    Ref::Column { expr, .. } => {
                        let test = if want_present {
                            " IS NOT NULL)"
                        } else {
                            " IS NULL)"
                        };
                        Frag::default().t("(").t(&expr).t(test)
                    }
                    Ref::Unavailable => return (Sql::True, PushStatus::NotPushed),
                };
                (Sql::Frag(sql), PushStatus::Pushed)
            }
            Expr::Ident(name) => {
                let want = !negated;
                let sql = match self.resolve(name) {
                    Ref::Json(key) => self.json(
                        &key,
                        Classes {
                            s: C::F,
                            n: C::F,
                            b: C::V(ValCond::BoolIs(want)),
                            other: C::F,
                        },
                    ),
                    Ref::Column {
                        expr,
                        ty: SqlType::Boolean,
                        ..
                    } => Sql::Frag(Frag::default().t("(").t(&expr).t(if want {
                        " = TRUE)"
                    } else {
                        " = FALSE)"
                    })),
                    Ref::Column { .. } => Sql::False,
                    Ref::Unavailable => return (Sql::True, PushStatus::NotPushed),
                };
                (sql, PushStatus::Pushed)
            }
            _ => (Sql::True, PushStatus::NotPushed),
        }
    }

    /// IN and LIKE: TRUE only for string values.
    fn string_leaf(&mut self, ident: &str, cond: ValCond) -> (Sql, PushStatus) {
        let sql = match self.resolve(ident) {
            Ref::Json(key) => self.json(
                &key,
                Classes {
                    s: C::V(cond),
                    n: C::F,
                    b: C::F,
                    other: C::F,
                },
            ),
            Ref::Column {
                expr,
                ty: SqlType::Text,
                ..
            } => Sql::Frag(render_val(
                &cond,
                &Frag::default().t(&expr),
                NumCast::Numeric,
            )),
            Ref::Column { .. } => Sql::False,
            Ref::Unavailable => return (Sql::True, PushStatus::NotPushed),
        };
        (sql, PushStatus::Pushed)
    }

    /// `lhs op rhs`, or `NOT (lhs op rhs)` when `negated`.
    fn compare(&mut self, op: CmpOp, lhs: &Expr, rhs: &Expr, negated: bool) -> (Sql, PushStatus) {
        let (name, constant, op) = match (lhs, rhs) {
            (Expr::Ident(name), c) if message_independent(c) => (name, c, op),
            (c, Expr::Ident(name)) if message_independent(c) => (name, c, op.swapped()),
            _ => {
                // Both sides constant (only via Between) or not pushable.
                if message_independent(lhs) && message_independent(rhs) {
                    let a = eval::value(lhs, &EmptyMessage);
                    let b = eval::value(rhs, &EmptyMessage);
                    let v = eval::compare(op, a.as_ref(), b.as_ref()).map(|x| x != negated);
                    let sql = if v == Some(true) {
                        Sql::True
                    } else {
                        Sql::False
                    };
                    return (sql, PushStatus::Constant);
                }
                return (Sql::True, PushStatus::NotPushed);
            }
        };
        let Some(c) = eval::value(constant, &EmptyMessage) else {
            // Comparing with NULL is UNKNOWN, with or without NOT.
            return (Sql::False, PushStatus::Constant);
        };
        if IdentKind::of(name) == IdentKind::AlwaysNull {
            return (Sql::False, PushStatus::Constant);
        }
        let reference = self.resolve(name);
        let nums = match &reference {
            Ref::Json(_) => ALL_NUMERIC,
            Ref::Column { nums, .. } => *nums,
            Ref::Unavailable => return (Sql::True, PushStatus::NotPushed),
        };
        // For operands of unlike types every comparison is FALSE, so the
        // negated comparison is TRUE.
        let unlike = if negated { C::T } else { C::F };
        let mut status = PushStatus::Pushed;
        let mut cl = Classes::all(unlike.clone());
        match &c {
            V::Str(s) => {
                if has_nul(s) {
                    return (Sql::True, PushStatus::NotPushed);
                }
                cl.s = match op {
                    CmpOp::Eq | CmpOp::Ne if (op == CmpOp::Eq) != negated => {
                        C::V(ValCond::StrEq(s.to_string()))
                    }
                    CmpOp::Eq | CmpOp::Ne => C::V(ValCond::StrNe(s.to_string())),
                    // Ordering strings is UNKNOWN, with or without NOT.
                    _ => C::F,
                };
            }
            V::Bool(b) => {
                cl.b = match op {
                    CmpOp::Eq | CmpOp::Ne => {
                        let same = (op == CmpOp::Eq) != negated;
                        C::V(ValCond::BoolIs(if same { *b } else { !*b }))
                    }
                    _ => C::F,
                };
            }
            num => {
                // On finite numbers the order is total, so NOT flips the
                // operator exactly.
                let eff = if negated { op.complement() } else { op };
                let (cond, widened) = num_cond(eff, num, nums);
                if widened {
                    status = PushStatus::Widened;
                }
                cl.n = cond;
                // Stored NaN and infinities against a finite constant: decided
                // here exactly as Java compares them (NaN compares false except
                // with <>), then negated as the selector says.
                cl.other = match num_as_f64(num) {
                    Some(c) if c.is_finite() => {
                        let kinds: Vec<&'static str> = [
                            ("NaN", f64::NAN),
                            ("inf", f64::INFINITY),
                            ("-inf", f64::NEG_INFINITY),
                        ]
                        .into_iter()
                        .filter(|(_, v)| java_compare(op, *v, c) != negated)
                        .map(|(k, _)| k)
                        .collect();
                        match kinds.len() {
                            0 => C::F,
                            3 => C::T,
                            _ => C::V(ValCond::NonFinite(kinds)),
                        }
                    }
                    _ => C::T,
                };
                // PostgreSQL orders a float8 NaN above every number, unlike Java: a
                // double column's translation is only a superset.
                if matches!(
                    &reference,
                    Ref::Column {
                        ty: SqlType::Double,
                        ..
                    }
                ) && status == PushStatus::Pushed
                {
                    status = PushStatus::Widened;
                }
            }
        }
        let sql = match reference {
            Ref::Json(key) => self.json(&key, cl),
            Ref::Column { expr, ty, .. } => column(&expr, ty, cl),
            Ref::Unavailable => Sql::True,
        };
        (sql, status)
    }

    fn key_frag(&self, key: &str, op: &str) -> Frag {
        Frag::default().t(&self.props).t(op).p(key, "::text")
    }

    fn presence(&self, key: &str) -> Frag {
        Frag::default().t("(").f(&self.key_frag(key, " ? ")).t(")")
    }

    fn contains(&self, key: &str, value: Frag) -> Sql {
        Sql::Frag(
            Frag::default()
                .t("(")
                .t(&self.props)
                .t(" @> jsonb_build_object(")
                .p(key, "::text")
                .t(", ")
                .f(&value)
                .t("))"),
        )
    }

    /// A leaf on a jsonb property, dispatching on `jsonb_typeof`.
    fn json(&mut self, key: &str, cl: Classes) -> Sql {
        let (s, n, b, o) = (&cl.s, &cl.n, &cl.b, &cl.other);
        if s.is_f() && n.is_f() && b.is_f() && o.is_f() {
            return Sql::False;
        }
        if s.is_t() && n.is_t() && b.is_t() && o.is_t() {
            return Sql::Frag(self.presence(key));
        }
        let typeof_ = Frag::default()
            .t("jsonb_typeof(")
            .f(&self.key_frag(key, " -> "))
            .t(")");
        let text = Frag::default()
            .t("(")
            .f(&self.key_frag(key, " ->> "))
            .t(")");
        if o.is_f() {
            match (s, n, b) {
                // Containment forms: exact, and servable by a GIN index.
                (C::V(ValCond::StrEq(v)), C::F, C::F) => {
                    return self.contains(key, Frag::default().p(v, "::text"));
                }
                (C::F, C::V(ValCond::Num(NumCond::Cmp(CmpOp::Eq, v))), C::F) => {
                    return self.contains(key, Frag::default().p(v, "::text::numeric"));
                }
                (C::F, C::F, C::V(ValCond::BoolIs(v))) => {
                    let v = if *v { "TRUE" } else { "FALSE" };
                    return self.contains(key, Frag::default().t(v));
                }
                // A string condition needs no cast, so a plain AND is safe.
                (C::V(cond), C::F, C::F) => {
                    return Sql::Frag(
                        Frag::default()
                            .t("(")
                            .f(&typeof_)
                            .t(" = 'string' AND ")
                            .f(&render_val(cond, &text, NumCast::Numeric))
                            .t(")"),
                    );
                }
                _ => {}
            }
        }
        // General form. CASE guarantees the casts only see values of the
        // right JSON type (AND gives no evaluation-order guarantee). ELSE
        // covers absent keys (typeof is NULL) and null/object/array.
        let else_sql = match o {
            C::T => self.presence(key),
            C::F => Frag::default().t("FALSE"),
            C::V(ValCond::NonFinite(kinds)) => {
                // Absent keys give NULL here: not TRUE, as required.
                let mut f = Frag::default()
                    .t("((")
                    .f(&self.key_frag(key, " -> "))
                    .t(") ->> 'nonfinite') IN (");
                for (i, k) in kinds.iter().enumerate() {
                    if i > 0 {
                        f = f.t(", ");
                    }
                    f = f.t("'").t(k).t("'");
                }
                f.t(")")
            }
            C::V(_) => Frag::default().t("FALSE"),
        };
        let mut f = Frag::default().t("(CASE ").f(&typeof_);
        let branches = [
            ("string", s, text.clone()),
            ("number", n, text.clone().t("::numeric")),
            ("boolean", b, text.clone().t("::boolean")),
        ];
        for (name, c, value) in branches {
            if c.is_t() == o.is_t() && c.is_f() == o.is_f() && !matches!(c, C::V(_)) {
                continue;
            }
            f = f.t(" WHEN '").t(name).t("' THEN ");
            f = match c {
                C::T => f.t("TRUE"),
                C::F => f.t("FALSE"),
                C::V(cond) => f.f(&render_val(cond, &value, NumCast::Numeric)),
            };
        }
        Sql::Frag(f.t(" ELSE ").f(&else_sql).t(" END)"))
    }
}

fn combine(a: PushStatus, b: PushStatus) -> PushStatus {
    use PushStatus::*;
    match (a, b) {
        (NotPushed, _) | (_, NotPushed) => NotPushed,
        (Widened, _) | (_, Widened) => Widened,
        (Constant, Constant) => Constant,
        _ => Pushed,
    }
}

/// A leaf on a typed column.
fn column(expr: &str, ty: SqlType, cl: Classes) -> Sql {
    let c = match ty {
        SqlType::Text => &cl.s,
        SqlType::Boolean => &cl.b,
        SqlType::Integer | SqlType::Double => &cl.n,
    };
    let value = Frag::default().t(expr);
    let base = match c {
        C::T => Sql::Frag(value.clone().t(" IS NOT NULL")),
        C::F => Sql::False,
        C::V(cond) => {
            let cast = match (ty, cond) {
                (SqlType::Double, _) => NumCast::Float8,
                (SqlType::Integer, ValCond::Num(NumCond::Cmp(_, b)))
                    if b.parse::<i64>().is_ok() =>
                {
                    NumCast::Bigint
                }
                _ => NumCast::Numeric,
            };
            Sql::Frag(render_val(cond, &value, cast))
        }
    };
    // PostgreSQL orders NaN above every number and equal to itself, unlike
    // Java; where a non-finite value may match, let NaN through.
    let nan_may_match = match &cl.other {
        C::T => true,
        C::V(ValCond::NonFinite(kinds)) => kinds.contains(&"NaN"),
        _ => false,
    };
    if ty == SqlType::Double && nan_may_match {
        or(vec![
            base,
            Sql::Frag(Frag::default().t("(").f(&value).t(" = 'NaN'::float8)")),
        ])
    } else {
        base
    }
}

fn expr_paren(expr: &str) -> String {
    format!("({expr})")
}

#[derive(Debug, Clone, Copy)]
enum NumCast {
    Numeric,
    Bigint,
    Float8,
}

impl NumCast {
    fn cast(self) -> &'static str {
        match self {
            NumCast::Numeric => "::text::numeric",
            NumCast::Bigint => "::text::bigint",
            NumCast::Float8 => "::text::float8",
        }
    }
}

fn render_val(cond: &ValCond, v: &Frag, cast: NumCast) -> Frag {
    let base = Frag::default().t("(").f(v);
    match cond {
        ValCond::StrEq(s) => base.t(" = ").p(s, "::text").t(")"),
        ValCond::StrNe(s) => base.t(" <> ").p(s, "::text").t(")"),
        ValCond::StrIn(neg, list) => {
            let mut f = base.t(if *neg { " NOT IN (" } else { " IN (" });
            for (i, s) in list.iter().enumerate() {
                if i > 0 {
                    f = f.t(", ");
                }
                f = f.p(s, "::text");
            }
            f.t("))")
        }
        ValCond::StrLike(neg, p) => base
            .t(if *neg { " NOT LIKE " } else { " LIKE " })
            .p(p, "::text")
            .t(" ESCAPE E'\\\\')"),
        ValCond::BoolIs(b) => base.t(if *b { " = TRUE)" } else { " = FALSE)" }),
        // Only the ELSE branch of a JSON CASE tests these (see `json`).
        ValCond::NonFinite(_) => Frag::default().t("FALSE"),
        ValCond::Num(NumCond::Cmp(op, bound)) => base
            .t(" ")
            .t(op.symbol())
            .t(" ")
            .p(bound, cast.cast())
            .t(")"),
        ValCond::Num(NumCond::Range(lo, hi)) => {
            // Widened bounds are never integral in general: keep them exact
            // as numeric (or float8 for double columns).
            let cast = match cast {
                NumCast::Float8 => NumCast::Float8,
                _ => NumCast::Numeric,
            };
            let mut f = base;
            if let Some(lo) = lo {
                f = f.t(" >= ").p(&format!("{lo:?}"), cast.cast());
            }
            if lo.is_some() && hi.is_some() {
                f = f.t(" AND ").f(v);
            }
            if let Some(hi) = hi {
                f = f.t(" <= ").p(&format!("{hi:?}"), cast.cast());
            }
            f.t(")")
        }
    }
}

/// A numeric constant as a double (None for non-numbers).
fn num_as_f64(c: &V<'_>) -> Option<f64> {
    match *c {
        V::Int(x) => Some(f64::from(x)),
        V::Long(x) => Some(x as f64),
        V::Double(x) => Some(x),
        V::Float(x) => Some(f64::from(x)),
        _ => None,
    }
}

/// `v op c` as Java compares doubles (every comparison with NaN is false but `<>`).
fn java_compare(op: CmpOp, v: f64, c: f64) -> bool {
    match op {
        CmpOp::Eq => v == c,
        CmpOp::Ne => v != c,
        CmpOp::Lt => v < c,
        CmpOp::Le => v <= c,
        CmpOp::Gt => v > c,
        CmpOp::Ge => v >= c,
    }
}

/// The condition on a finite numeric value for `v op c`, and whether the
/// bound had to be widened (see "Numeric precision" in the module docs).
fn num_cond(op: CmpOp, c: &V<'_>, nums: NumTypes) -> (C, bool) {
    let Some(text) = decimal(c) else {
        // A non-finite constant (only from constant arithmetic such as
        // `1e308 * 10`): not worth being clever about, and so not exact.
        return (C::T, true);
    };
    const F23: f64 = 8_388_608.0; // 2^23
    const F52: f64 = 4_503_599_627_370_496.0; // 2^52
    let (magnitude, lossy) = match *c {
        V::Int(x) => {
            let m = f64::from(x).abs();
            (m, nums.float && m >= F23)
        }
        V::Long(x) => {
            let m = x.unsigned_abs() as f64;
            (m, (nums.float && m >= F23) || (nums.double && m >= F52))
        }
        V::Double(x) => (x.abs(), nums.long && x.abs() >= F52),
        V::Float(x) => {
            let m = f64::from(x).abs();
            (m, (nums.int || nums.long) && m >= F23)
        }
        _ => return (C::T, true),
    };
    if !lossy {
        return (C::V(ValCond::Num(NumCond::Cmp(op, text))), false);
    }
    let exact = match *c {
        V::Int(x) => f64::from(x),
        V::Long(x) => x as f64,
        V::Double(x) => x,
        V::Float(x) => f64::from(x),
        _ => 0.0,
    };
    let margin = magnitude / 1_048_576.0; // 2^-20 relative
    let (lo, hi) = (exact - margin, exact + margin);
    let cond = match op {
        CmpOp::Eq => NumCond::Range(Some(lo), Some(hi)),
        CmpOp::Ne => return (C::T, true),
        CmpOp::Lt | CmpOp::Le => NumCond::Range(None, Some(hi)),
        CmpOp::Gt | CmpOp::Ge => NumCond::Range(Some(lo), None),
    };
    (C::V(ValCond::Num(cond)), true)
}

struct Renderer {
    first: usize,
    params: Vec<String>,
    index: HashMap<String, usize>,
    out: String,
}

impl Renderer {
    fn sql(&mut self, s: &Sql) {
        match s {
            Sql::True => self.out.push_str("TRUE"),
            Sql::False => self.out.push_str("FALSE"),
            Sql::And(items) | Sql::Or(items) => {
                let sep = if matches!(s, Sql::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                self.out.push('(');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(sep);
                    }
                    self.sql(item);
                }
                self.out.push(')');
            }
            Sql::Frag(f) => {
                for piece in &f.0 {
                    match piece {
                        Piece::Text(t) => self.out.push_str(t),
                        Piece::Param(v) => {
                            let n = match self.index.get(v) {
                                Some(&n) => n,
                                None => {
                                    let n = self.first + self.params.len();
                                    self.params.push(v.clone());
                                    self.index.insert(v.clone(), n);
                                    n
                                }
                            };
                            self.out.push('$');
                            self.out.push_str(&n.to_string());
                        }
                    }
                }
            }
        }
    }
}
