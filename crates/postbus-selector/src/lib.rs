//! JMS message selectors (JMS 2.0 section 3.8.1.1, the SQL-92 subset) for
//! postbus: a parser, an exact evaluator with three-valued logic, a
//! canonical printer, a PostgreSQL pushdown generator and a test-case runner.
//! The crate does no I/O.
//!
//! ```
//! use postbus_selector::{Selector, SimpleMessage, Value};
//!
//! let sel = Selector::parse(
//!     "currency IN ('EUR','USD') AND amount > 10000 AND region LIKE 'EU-%'",
//! )
//! .unwrap();
//! let msg = SimpleMessage::new()
//!     .with_property("currency", Value::String("EUR".into()))
//!     .with_property("amount", Value::Double(15000.5))
//!     .with_property("region", Value::String("EU-west".into()));
//! assert!(sel.matches(&msg));
//! assert_eq!(
//!     sel.to_string(),
//!     "((currency IN ('EUR', 'USD')) AND (amount > 10000) AND (region LIKE 'EU-%'))"
//! );
//! ```
//!
//! # Deviations and choices
//!
//! Where the specification is silent or ambiguous, this crate decides as
//! follows. Each choice favours "does not match" over a guess, because a
//! wrong match misroutes a message.
//!
//! ## Syntax
//!
//! - **Empty selector.** Empty or whitespace-only text is JMS's "no
//!   selector": it parses to `TRUE` and matches every message.
//! - **Whitespace** is exactly the spec's: space, tab, form feed, CR, LF.
//!   Other Unicode spaces are errors.
//! - **Identifiers** follow `Character.isJavaIdentifierStart/Part` (Unicode
//!   letters, `$`, `_`, currency symbols, connector punctuation; then also
//!   digits and combining marks), from Unicode 14 tables. Java's
//!   "identifier-ignorable" characters (zero-width and bidi format
//!   characters, control characters) are rejected: invisible characters in
//!   a routing rule are a spoofing risk. Identifiers are case-sensitive.
//! - **Keywords** `NOT AND OR BETWEEN LIKE IN IS NULL TRUE FALSE ESCAPE` are
//!   reserved in any ASCII letter case and cannot be identifiers.
//! - **Exact literals** are `long`-typed whatever their size: decimal, hex
//!   (`0x1F`) or octal (`017`), with an optional `L`/`l` suffix that changes
//!   nothing. Hex and octal denote their mathematical value (`0xFFFFFFFF` is
//!   4294967295, not Java's int -1; values above `Long.MAX_VALUE` are
//!   errors). `9223372036854775808` is accepted only directly after `-`.
//!   A sign written directly before a number is part of the literal.
//!   Underscores in numbers and hex floating literals are not supported.
//! - **Approximate literals** (`7.`, `.5`, `7E3`, `-57.9E2`, `1d`) are
//!   `double`; with an `F`/`f` suffix they are `float`, as in Java, so that
//!   `price = 0.1F` matches a float property set to `0.1f`. A literal that
//!   overflows, or that is non-zero but rounds to zero, is an error (Java
//!   rejects both at compile time).
//! - **Static type checks.** The grammar separates conditions from values,
//!   and the parser enforces it with a position, rather than letting the
//!   selector silently never match: operands of `AND`/`OR`/`NOT` and the
//!   selector itself must be conditions, boolean literals or identifiers;
//!   arithmetic and `BETWEEN` operands must be numeric literals, arithmetic or
//!   identifiers; conditions cannot be compared (`(a = 1) = TRUE`);
//!   `<`, `<=`, `>`, `>=` with a string or boolean *literal* operand is an
//!   error; `IN`, `LIKE` and `IS NULL` need an identifier on the left
//!   (parentheses around it are fine); `IN` lists hold only string literals;
//!   `NULL` is only valid in `IS [NOT] NULL`. `!=` and double-quoted strings
//!   get a hint towards `<>` and single quotes.
//! - **LIKE escapes**: the `ESCAPE` string must be exactly one character,
//!   and that character must be followed by `%`, `_` or itself (SQL-92);
//!   anything else is an error at that position in the pattern.
//! - **Limits**: see [`ParseLimits`]. Depth counts parenthesis nesting and
//!   the depth of the syntax tree (each `NOT`, sign, operator, predicate);
//!   an `AND`/`OR` chain is one level however long.
//!
//! ## Identifiers and headers
//!
//! - Only `JMSDeliveryMode`, `JMSPriority`, `JMSMessageID`, `JMSTimestamp`,
//!   `JMSCorrelationID` and `JMSType` are headers (read with
//!   [`MessageView::header`]). Names starting `JMSX` (JMS-defined
//!   properties) or `JMS_` (provider properties, per the spec's naming
//!   rules) are properties. Any other name starting `JMS`
//!   (`JMSDestination`, `JMSExpiration`, ...) is always NULL: the spec makes
//!   other header fields unselectable.
//!
//! ## Evaluation
//!
//! - **NULL**: a missing property or NULL header is NULL; arithmetic with
//!   NULL is NULL; comparisons with NULL are UNKNOWN; `AND`, `OR`, `NOT`
//!   follow the SQL (Kleene) truth tables; only TRUE matches.
//! - **Unlike types** (string vs number, boolean vs number, string vs
//!   boolean) compare FALSE for every operator, `=` and `<>` alike, as the
//!   spec says; hence `NOT (amount = 'x')` is TRUE for a numeric `amount`.
//! - **Ordering strings or booleans** (`a < b` with two string values) is
//!   UNKNOWN, so neither it nor its negation matches. (With a literal string
//!   or boolean operand it is already a parse error.)
//! - **Non-boolean identifiers used as conditions** (`WHERE amount` with a
//!   numeric `amount`) are UNKNOWN.
//! - **Arithmetic** uses Java binary numeric promotion: `byte`, `short`,
//!   `int` compute as `int`, then `long`, `float`, `double`; exact literals
//!   are `long`. Integer division truncates toward zero. Integer division by
//!   zero and integer overflow give NULL (Java throws or silently wraps; a
//!   wrapped amount is never what a routing rule means). `float`/`double`
//!   follow IEEE 754 (`1.0 / 0` is Infinity). Arithmetic on a string or
//!   boolean value gives NULL.
//! - **Numeric comparison** is Java's after promotion, including its lossy
//!   steps: `long` vs `double` compares as `double`, `int`/`long` vs `float`
//!   as `float`, `float` vs `double` widens the float exactly (so a float
//!   property `0.1f = 0.1` is FALSE); two `long`s compare exactly even above
//!   2^53. NaN compares FALSE except `<>`, which is TRUE.
//! - **BETWEEN / NOT BETWEEN** are the spec's expansions, `a >= lo AND a <= hi`
//!   and `a < lo OR a > hi`, under three-valued logic. For a NaN or
//!   non-numeric `a` both are FALSE, so `NOT BETWEEN` is not the same as
//!   `NOT (... BETWEEN ...)` there.
//! - **IN / LIKE** on a NULL identifier are UNKNOWN (spec); on a non-string
//!   value they are UNKNOWN too, for the positive and the `NOT` form.
//! - **LIKE** matches whole strings by Unicode scalar values, case-sensitively,
//!   in `O(pattern × text)` time.
//!
//! ## Rewriting and SQL
//!
//! - [`to_nnf`] keeps `NOT` above comparisons and `BETWEEN` (flipping them
//!   is wrong for unlike types and NaN); `NOT IN`, `NOT LIKE`, `IS NOT NULL`
//!   absorb it.
//! - [`Selector::to_sql`] generates a superset filter; the pushed-down forms,
//!   the numeric widening and the storage assumptions (including "a JSON
//!   null/object/array is a non-finite number") are documented in the
//!   [`sql`] module.
//!
//! ## Test cases
//!
//! The `postbus selector test` file format and its choices (ids, malformed
//! lines, float parsing, NaN spellings) are documented in [`cases`].

mod ast;
pub mod cases;
mod error;
mod eval;
mod lexer;
mod like;
mod nnf;
mod parser;
pub mod sql;
mod unicode;
mod value;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

pub mod fuzzing;
pub use ast::{ArithOp, CmpOp, Expr, Literal, UnaryOp};
pub use error::{ParseLimits, SelectorError};
pub use lexer::is_valid_identifier;
pub use like::{LikePattern, LikePatternError};
pub use nnf::{is_nnf, to_nnf};
pub use sql::{JsonbPropertiesOnly, SqlFilter, SqlMapping, SqlType};
pub use value::{HeaderField, IdentKind, MessageView, SimpleMessage, Value};

/// A parsed selector.
///
/// `Display` prints the canonical, fully parenthesised form, which parses
/// back to an equal selector with the same `max_depth`. It can be several
/// times longer than the text it came from (parentheses, spaces, decimal
/// numbers), so it may exceed `max_length`: persist the original text, or
/// re-parse canonical text with a larger `max_length`.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    expr: Expr,
}

impl Selector {
    /// Parses with the default [`ParseLimits`].
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Selector::parse_with_limits(text, &ParseLimits::default())
    }

    /// Parses with explicit limits.
    pub fn parse_with_limits(text: &str, limits: &ParseLimits) -> Result<Selector, SelectorError> {
        parser::parse(text, limits).map(|expr| Selector { expr })
    }

    /// Wraps a syntax tree built by hand. Nothing is checked: a tree the
    /// parser could not produce still evaluates (ill-typed parts are
    /// UNKNOWN), but may not print back to itself.
    pub fn from_expr(expr: Expr) -> Selector {
        Selector { expr }
    }

    /// The syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Consumes the selector, returning its syntax tree.
    pub fn into_expr(self) -> Expr {
        self.expr
    }

    /// Evaluates against a message: `Some(true)` TRUE, `Some(false)` FALSE,
    /// `None` UNKNOWN.
    pub fn evaluate(&self, msg: &dyn MessageView) -> Option<bool> {
        eval::condition(&self.expr, msg)
    }

    /// Whether the message is selected: the selector is TRUE.
    pub fn matches(&self, msg: &dyn MessageView) -> bool {
        self.evaluate(msg) == Some(true)
    }

    /// The same selector in negation normal form (see [`to_nnf`]).
    pub fn to_nnf(&self) -> Selector {
        Selector {
            expr: to_nnf(&self.expr),
        }
    }

    /// A PostgreSQL predicate that is TRUE for at least every message this
    /// selector matches, with placeholders numbered from `first_param`. See
    /// the [`sql`] module for what is pushed down.
    pub fn to_sql(&self, mapping: &dyn SqlMapping, first_param: usize) -> SqlFilter {
        sql::translate(&self.expr, mapping, first_param).0
    }

    /// The SQL translation when it is *exact*: TRUE for exactly the messages the evaluator
    /// accepts (every leaf was translated with its exact meaning, or is the same for every
    /// message). None when some leaf is only approximated (widened numeric bounds) or left
    /// to the evaluator: then only the broker can decide.
    pub fn to_exact_sql(&self, mapping: &dyn SqlMapping, first_param: usize) -> Option<SqlFilter> {
        let (filter, notes) = sql::translate(&self.expr, mapping, first_param);
        notes
            .iter()
            .all(|n| {
                matches!(
                    n.status,
                    sql::PushStatus::Pushed | sql::PushStatus::Constant
                )
            })
            .then_some(filter)
    }

    /// Property names referenced, sorted and without duplicates.
    pub fn properties(&self) -> Vec<String> {
        self.names(|k| k == IdentKind::Property)
    }

    /// Headers referenced, in [`HeaderField::ALL`] order.
    pub fn headers(&self) -> Vec<HeaderField> {
        let mut set = BTreeSet::new();
        self.expr.for_each_ident(&mut |n| {
            if let IdentKind::Header(h) = IdentKind::of(n) {
                set.insert(h);
            }
        });
        set.into_iter().collect()
    }

    fn names(&self, keep: impl Fn(IdentKind) -> bool) -> Vec<String> {
        let mut set = BTreeSet::new();
        self.expr.for_each_ident(&mut |n| {
            if keep(IdentKind::of(n)) {
                set.insert(n.to_owned());
            }
        });
        set.into_iter().collect()
    }

    /// A short human explanation for `postbus selector check`: the canonical
    /// form, the references, and which parts a store with properties in
    /// jsonb and headers in columns can filter in SQL.
    pub fn explain(&self) -> String {
        self.explain_with(&ExplainMapping)
    }

    /// Like [`Selector::explain`], for a specific store mapping.
    pub fn explain_with(&self, mapping: &dyn SqlMapping) -> String {
        use std::fmt::Write as _;
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        let mut out = String::new();
        let _ = writeln!(out, "selector:   {self}");
        let _ = writeln!(out, "properties: {}", list(self.properties()));
        let headers = self.headers().into_iter().map(|h| h.to_string()).collect();
        let _ = writeln!(out, "headers:    {}", list(headers));
        let nulls = self.names(|k| k == IdentKind::AlwaysNull);
        if !nulls.is_empty() {
            let _ = writeln!(
                out,
                "always NULL (not selectable JMS headers): {}",
                nulls.join(", ")
            );
        }
        let (filter, notes) = sql::translate(&self.expr, mapping, 1);
        if filter.sql == "TRUE" {
            let _ = writeln!(
                out,
                "SQL pushdown: none; every message is checked by the evaluator"
            );
        } else {
            let _ = writeln!(
                out,
                "SQL pushdown (a superset; the evaluator makes the final decision):"
            );
        }
        for note in notes {
            let status = match note.status {
                sql::PushStatus::Pushed => "pushed down",
                sql::PushStatus::Widened => "pushed down with widened numeric bounds",
                sql::PushStatus::NotPushed => "evaluator only",
                sql::PushStatus::Constant => "constant",
            };
            let _ = writeln!(out, "  {:<40} {status}", note.leaf);
        }
        out
    }
}

/// The mapping `explain` assumes: properties in jsonb, headers in columns.
struct ExplainMapping;

impl SqlMapping for ExplainMapping {
    fn header_expr(&self, h: HeaderField) -> Option<String> {
        Some(format!("m.{}", h.name()))
    }
    fn column_for_property(&self, _: &str) -> Option<(String, SqlType)> {
        None
    }
    fn properties_column(&self) -> String {
        "m.properties".to_owned()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Selector, SelectorError> {
        Selector::parse(s)
    }
}
