//! The selector syntax tree and its canonical text form.
//!
//! [`Expr`]'s `Display` prints every compound node in parentheses so that the
//! output never depends on precedence rules and re-parses to an identical
//! tree (see the round-trip property tests). That canonical text is what
//! `explain` shows and what logs should record.

use std::fmt;

use crate::like::LikePattern;

/// A literal as written in the selector.
///
/// Exact numeric literals are `long`-typed regardless of size (the spec
/// supports "numbers in the range of Java long"); approximate literals are
/// `double`, or `float` when written with an `F`/`f` suffix.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `TRUE` or `FALSE`.
    Bool(bool),
    /// An exact numeric literal (decimal, `0x` hex or `0` octal, optional `L`).
    Long(i64),
    /// An approximate literal with an `F`/`f` suffix, rounded to `float`.
    Float(f32),
    /// Any other approximate literal.
    Double(f64),
    /// A string literal, quotes removed and `''` unescaped.
    String(String),
}

/// Unary arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// `+x`: still requires a numeric operand.
    Plus,
}

/// Binary arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator's selector spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// The operator that gives the same answer with the operands swapped.
    pub fn swapped(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Eq,
            CmpOp::Ne => CmpOp::Ne,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
        }
    }

    /// The complementary operator on a total order (`<` becomes `>=`).
    ///
    /// Only valid where both operands are ordered numbers: for unlike types
    /// and NaN, `NOT (a < b)` and `a >= b` differ, which is why negation
    /// normal form keeps `NOT` above comparisons.
    pub fn complement(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Ne,
            CmpOp::Ne => CmpOp::Eq,
            CmpOp::Lt => CmpOp::Ge,
            CmpOp::Le => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Le,
            CmpOp::Ge => CmpOp::Lt,
        }
    }

    /// Whether this is one of the ordering operators `<`, `<=`, `>`, `>=`.
    pub fn is_ordering(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }
}

/// A selector expression.
///
/// `And`/`Or` are n-ary so that long chains (`a = 1 OR a = 2 OR ...`) do not
/// build deep trees; the parser never flattens across parentheses, so
/// `(a AND b) AND c` stays nested and prints back the same way. Their vectors
/// always hold at least two operands.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Literal(Literal),
    /// A header or property reference (see [`crate::IdentKind`]).
    Ident(String),
    /// Unary `-` or `+` on a numeric expression.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        operand: Box<Expr>,
    },
    /// Binary arithmetic.
    Arith {
        /// The operator.
        op: ArithOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// A comparison.
    Compare {
        /// The operator.
        op: CmpOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `expr [NOT] BETWEEN low AND high`.
    Between {
        /// `NOT BETWEEN`.
        negated: bool,
        /// The tested expression.
        expr: Box<Expr>,
        /// Lower bound (inclusive).
        low: Box<Expr>,
        /// Upper bound (inclusive).
        high: Box<Expr>,
    },
    /// `ident [NOT] IN ('a', 'b', ...)`.
    In {
        /// `NOT IN`.
        negated: bool,
        /// The tested identifier.
        ident: String,
        /// The string literals, in source order (at least one).
        list: Vec<String>,
    },
    /// `ident [NOT] LIKE 'pattern' [ESCAPE 'c']`.
    Like {
        /// `NOT LIKE`.
        negated: bool,
        /// The tested identifier.
        ident: String,
        /// The compiled pattern.
        pattern: LikePattern,
    },
    /// `ident IS [NOT] NULL`.
    IsNull {
        /// `IS NOT NULL`.
        negated: bool,
        /// The tested identifier.
        ident: String,
    },
    /// `NOT expr`.
    Not(Box<Expr>),
    /// `a AND b AND ...` (two or more operands).
    And(Vec<Expr>),
    /// `a OR b OR ...` (two or more operands).
    Or(Vec<Expr>),
}

impl Expr {
    /// Nesting depth: a leaf is 1, every node adds 1 to its deepest child.
    /// Recursion over the tree (evaluation, printing, SQL) goes this deep.
    pub fn depth(&self) -> usize {
        1 + match self {
            Expr::Literal(_)
            | Expr::Ident(_)
            | Expr::In { .. }
            | Expr::Like { .. }
            | Expr::IsNull { .. } => 0,
            Expr::Unary { operand, .. } => operand.depth(),
            Expr::Arith { lhs, rhs, .. } | Expr::Compare { lhs, rhs, .. } => {
                lhs.depth().max(rhs.depth())
            }
            Expr::Between {
                expr, low, high, ..
            } => expr.depth().max(low.depth()).max(high.depth()),
            Expr::Not(e) => e.depth(),
            Expr::And(v) | Expr::Or(v) => v.iter().map(Expr::depth).max().unwrap_or(0),
        }
    }

    /// Calls `f` with every identifier in the expression, in source order.
    pub fn for_each_ident<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
        match self {
            Expr::Literal(_) => {}
            Expr::Ident(name) => f(name),
            Expr::In { ident, .. } | Expr::Like { ident, .. } | Expr::IsNull { ident, .. } => {
                f(ident)
            }
            Expr::Unary { operand, .. } => operand.for_each_ident(f),
            Expr::Arith { lhs, rhs, .. } | Expr::Compare { lhs, rhs, .. } => {
                lhs.for_each_ident(f);
                rhs.for_each_ident(f);
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.for_each_ident(f);
                low.for_each_ident(f);
                high.for_each_ident(f);
            }
            Expr::Not(e) => e.for_each_ident(f),
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| e.for_each_ident(f)),
        }
    }

    /// Whether the expression mentions no identifier, so its value is the
    /// same for every message.
    pub fn is_constant(&self) -> bool {
        let mut any = false;
        self.for_each_ident(&mut |_| any = true);
        !any
    }
}

/// Writes `s` as a selector string literal, doubling embedded quotes.
pub(crate) fn write_string_literal(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("'")?;
    for (i, part) in s.split('\'').enumerate() {
        if i > 0 {
            f.write_str("''")?;
        }
        f.write_str(part)?;
    }
    f.write_str("'")
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(true) => f.write_str("TRUE"),
            Literal::Bool(false) => f.write_str("FALSE"),
            Literal::Long(v) => write!(f, "{v}"),
            // `{:?}` prints the shortest text that reads back as the same
            // value and always contains a `.` or an exponent, so it lexes as
            // an approximate literal again.
            Literal::Double(v) => write!(f, "{v:?}"),
            Literal::Float(v) => write!(f, "{v:?}F"),
            Literal::String(s) => write_string_literal(f, s),
        }
    }
}

impl fmt::Display for UnaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnaryOp::Neg => "-",
            UnaryOp::Plus => "+",
        })
    }
}

impl fmt::Display for ArithOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        })
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

fn write_joined(f: &mut fmt::Formatter<'_>, items: &[Expr], sep: &str) -> fmt::Result {
    f.write_str("(")?;
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{e}")?;
    }
    f.write_str(")")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(l) => write!(f, "{l}"),
            Expr::Ident(name) => f.write_str(name),
            Expr::Unary { op, operand } => match operand.as_ref() {
                // The parser folds a sign written directly before a number
                // into the literal, so a sign applied to a literal node must
                // put the literal in parentheses to stay a separate node.
                Expr::Literal(Literal::Long(_) | Literal::Float(_) | Literal::Double(_)) => {
                    write!(f, "({op}({operand}))")
                }
                _ => write!(f, "({op}{operand})"),
            },
            Expr::Arith { op, lhs, rhs } => write!(f, "({lhs} {op} {rhs})"),
            Expr::Compare { op, lhs, rhs } => write!(f, "({lhs} {op} {rhs})"),
            Expr::Between {
                negated,
                expr,
                low,
                high,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "({expr} {not}BETWEEN {low} AND {high})")
            }
            Expr::In {
                negated,
                ident,
                list,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "({ident} {not}IN (")?;
                for (i, s) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_string_literal(f, s)?;
                }
                f.write_str("))")
            }
            Expr::Like {
                negated,
                ident,
                pattern,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "({ident} {not}LIKE ")?;
                write_string_literal(f, pattern.source())?;
                if let Some(c) = pattern.escape() {
                    f.write_str(" ESCAPE ")?;
                    write_string_literal(f, c.encode_utf8(&mut [0; 4]))?;
                }
                f.write_str(")")
            }
            Expr::IsNull { negated, ident } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "({ident} IS {not}NULL)")
            }
            Expr::Not(e) => write!(f, "(NOT {e})"),
            Expr::And(v) => write_joined(f, v, " AND "),
            Expr::Or(v) => write_joined(f, v, " OR "),
        }
    }
}
