//! Recursive-descent parser from tokens to [`Expr`].
//!
//! Grammar, loosest binding first (JMS 2.0 section 3.8.1.1, SQL-92 subset):
//!
//! ```text
//! selector   := or_expr EOF
//! or_expr    := and_expr (OR and_expr)*
//! and_expr   := not_expr (AND not_expr)*
//! not_expr   := NOT* predicate             -- NOT binds looser than comparison
//! predicate  := additive [ cmp_op additive
//!                        | [NOT] BETWEEN additive AND additive
//!                        | [NOT] IN '(' string (',' string)* ')'
//!                        | [NOT] LIKE string [ESCAPE string]
//!                        | IS [NOT] NULL ]
//! additive   := multiplicative (('+' | '-') multiplicative)*
//! multiplicative := unary (('*' | '/') unary)*
//! unary      := ('+' | '-')* primary
//! primary    := literal | identifier | '(' or_expr ')'
//! ```
//!
//! Recursion happens only through parentheses; `NOT` and sign chains and the
//! binary operator chains are loops. Parenthesis nesting and the depth of the
//! tree being built are both checked against [`ParseLimits::max_depth`] as
//! they grow, so hostile input such as ten thousand `(` or `NOT` is rejected
//! after at most `max_depth` steps, without deep recursion.
//!
//! The parser also checks the kind of every operand (condition, number,
//! string, boolean literal, identifier) so that mistakes the spec's grammar
//! forbids, such as `amount + 'x'` or `a AND 5`, fail here with a position
//! instead of silently never matching.

use crate::ast::{ArithOp, CmpOp, Expr, Literal, UnaryOp};
use crate::error::{ParseLimits, SelectorError};
use crate::lexer::{Keyword, Tok, Token, tokenize};
use crate::like::LikePattern;

/// What an operand is, as far as the parser can tell without a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An identifier: its type is only known per message.
    Ident,
    /// `TRUE` / `FALSE`.
    BoolLit,
    /// A string literal.
    StrLit,
    /// A numeric literal or arithmetic.
    Num,
    /// A comparison, predicate or logical operation.
    Cond,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Ident => "an identifier",
            Kind::BoolLit => "a boolean literal",
            Kind::StrLit => "a string literal",
            Kind::Num => "an arithmetic expression",
            Kind::Cond => "a condition",
        }
    }

    fn is_condition(self) -> bool {
        matches!(self, Kind::Cond | Kind::BoolLit | Kind::Ident)
    }

    fn is_numeric(self) -> bool {
        matches!(self, Kind::Num | Kind::Ident)
    }
}

/// A parsed expression with what the parser needs to check its use.
struct Node {
    expr: Expr,
    col: usize,
    depth: usize,
    kind: Kind,
}

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    limits: &'a ParseLimits,
    parens: usize,
}

/// Parses selector text. Empty or whitespace-only text is the JMS "no
/// selector" and parses to `TRUE`.
pub(crate) fn parse(src: &str, limits: &ParseLimits) -> Result<Expr, SelectorError> {
    if src.len() > limits.max_length {
        let col = src
            .char_indices()
            .take_while(|&(i, c)| i + c.len_utf8() <= limits.max_length)
            .count()
            + 1;
        return Err(SelectorError::new(
            col,
            format!(
                "selector is {} bytes long; the limit is {} bytes",
                src.len(),
                limits.max_length
            ),
        ));
    }
    let toks = tokenize(src)?;
    if toks.len() == 1 {
        return Ok(Expr::Literal(Literal::Bool(true)));
    }
    let mut p = Parser {
        toks,
        pos: 0,
        limits,
        parens: 0,
    };
    let node = p.or_expr()?;
    if p.peek() != &Tok::Eof {
        return Err(p.error_here(format!(
            "expected AND, OR or the end of the selector, found {}",
            p.peek().describe()
        )));
    }
    if !node.kind.is_condition() {
        return Err(SelectorError::new(
            node.col,
            format!(
                "a selector must be a condition, but this is {}",
                node.kind.describe()
            ),
        ));
    }
    Ok(node.expr)
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }

    fn col(&self) -> usize {
        self.toks[self.pos].col
    }

    fn advance(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn error_here(&self, message: String) -> SelectorError {
        SelectorError::new(self.col(), message)
    }

    fn too_deep(&self, col: usize) -> SelectorError {
        SelectorError::new(
            col,
            format!(
                "selector is nested too deeply (the limit is {} levels)",
                self.limits.max_depth
            ),
        )
    }

    fn node(
        &self,
        expr: Expr,
        col: usize,
        depth: usize,
        kind: Kind,
    ) -> Result<Node, SelectorError> {
        if depth > self.limits.max_depth {
            return Err(self.too_deep(col));
        }
        Ok(Node {
            expr,
            col,
            depth,
            kind,
        })
    }

    fn require(&self, n: &Node, ok: bool, role: &str) -> Result<(), SelectorError> {
        if ok {
            Ok(())
        } else {
            Err(SelectorError::new(
                n.col,
                format!("{role}, but this is {}", n.kind.describe()),
            ))
        }
    }

    fn or_expr(&mut self) -> Result<Node, SelectorError> {
        self.chain(Keyword::Or)
    }

    /// `item (kw item)*` for AND (items are `not_expr`) and OR (items are
    /// AND chains), collected into one n-ary node.
    fn chain(&mut self, kw: Keyword) -> Result<Node, SelectorError> {
        let item = |p: &mut Parser<'_>| {
            if kw == Keyword::Or {
                p.chain(Keyword::And)
            } else {
                p.not_expr()
            }
        };
        let first = item(self)?;
        if self.peek() != &Tok::Keyword(kw) {
            return Ok(first);
        }
        let role = format!("each operand of {} must be a condition", kw.text());
        self.require(&first, first.kind.is_condition(), &role)?;
        let col = first.col;
        let mut depth = first.depth;
        let mut items = vec![first.expr];
        while self.peek() == &Tok::Keyword(kw) {
            self.advance();
            let next = item(self)?;
            self.require(&next, next.kind.is_condition(), &role)?;
            depth = depth.max(next.depth);
            items.push(next.expr);
        }
        let expr = if kw == Keyword::Or {
            Expr::Or(items)
        } else {
            Expr::And(items)
        };
        self.node(expr, col, depth + 1, Kind::Cond)
    }

    fn not_expr(&mut self) -> Result<Node, SelectorError> {
        let mut nots = Vec::new();
        while self.peek() == &Tok::Keyword(Keyword::Not) {
            if nots.len() >= self.limits.max_depth {
                return Err(self.too_deep(self.col()));
            }
            nots.push(self.advance().col);
        }
        let mut node = self.predicate()?;
        for col in nots.into_iter().rev() {
            self.require(&node, node.kind.is_condition(), "NOT needs a condition")?;
            node = self.node(
                Expr::Not(Box::new(node.expr)),
                col,
                node.depth + 1,
                Kind::Cond,
            )?;
        }
        Ok(node)
    }

    fn predicate(&mut self) -> Result<Node, SelectorError> {
        let lhs = self.additive()?;
        let op = match self.peek() {
            Tok::Eq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            let op_col = self.advance().col;
            let rhs = self.additive()?;
            for side in [&lhs, &rhs] {
                self.require(
                    side,
                    side.kind != Kind::Cond,
                    &format!("'{}' compares values, not conditions", op.symbol()),
                )?;
                if op.is_ordering() && matches!(side.kind, Kind::StrLit | Kind::BoolLit) {
                    return Err(SelectorError::new(
                        side.col,
                        format!(
                            "'{}' only applies to numbers; strings and booleans support only '=' and '<>'",
                            op.symbol()
                        ),
                    ));
                }
            }
            let depth = lhs.depth.max(rhs.depth) + 1;
            let expr = Expr::Compare {
                op,
                lhs: Box::new(lhs.expr),
                rhs: Box::new(rhs.expr),
            };
            return self.node(expr, lhs.col.min(op_col), depth, Kind::Cond);
        }

        let negated = if self.peek() == &Tok::Keyword(Keyword::Not) {
            self.advance();
            match self.peek() {
                Tok::Keyword(Keyword::Between | Keyword::In | Keyword::Like) => true,
                other => {
                    return Err(self.error_here(format!(
                        "expected BETWEEN, IN or LIKE after NOT, found {}",
                        other.describe()
                    )));
                }
            }
        } else {
            false
        };

        match self.peek().clone() {
            Tok::Keyword(Keyword::Between) => {
                self.advance();
                let role = "BETWEEN works on arithmetic expressions";
                self.require(&lhs, lhs.kind.is_numeric(), role)?;
                let low = self.additive()?;
                self.require(&low, low.kind.is_numeric(), role)?;
                if self.peek() != &Tok::Keyword(Keyword::And) {
                    return Err(self.error_here(format!(
                        "expected AND between the bounds of BETWEEN, found {}",
                        self.peek().describe()
                    )));
                }
                self.advance();
                let high = self.additive()?;
                self.require(&high, high.kind.is_numeric(), role)?;
                let depth = lhs.depth.max(low.depth).max(high.depth) + 1;
                let expr = Expr::Between {
                    negated,
                    expr: Box::new(lhs.expr),
                    low: Box::new(low.expr),
                    high: Box::new(high.expr),
                };
                self.node(expr, lhs.col, depth, Kind::Cond)
            }
            Tok::Keyword(Keyword::In) => {
                self.advance();
                let ident = self.ident_operand(lhs.expr, lhs.col, "IN")?;
                if self.peek() != &Tok::LParen {
                    return Err(self.error_here(format!(
                        "expected '(' after IN, found {}",
                        self.peek().describe()
                    )));
                }
                self.advance();
                let mut list = Vec::new();
                loop {
                    match self.peek().clone() {
                        Tok::Str(s) => {
                            self.advance();
                            list.push(s);
                        }
                        other => {
                            return Err(self.error_here(format!(
                                "IN lists may contain only string literals, found {}",
                                other.describe()
                            )));
                        }
                    }
                    match self.peek() {
                        Tok::Comma => {
                            self.advance();
                        }
                        Tok::RParen => {
                            self.advance();
                            break;
                        }
                        other => {
                            return Err(self.error_here(format!(
                                "expected ',' or ')' in the IN list, found {}",
                                other.describe()
                            )));
                        }
                    }
                }
                let expr = Expr::In {
                    negated,
                    ident,
                    list,
                };
                self.node(expr, lhs.col, 2, Kind::Cond)
            }
            Tok::Keyword(Keyword::Like) => {
                self.advance();
                let ident = self.ident_operand(lhs.expr, lhs.col, "LIKE")?;
                let (pattern, pattern_col) = match self.peek().clone() {
                    Tok::Str(s) => (s, self.advance().col),
                    other => {
                        return Err(self.error_here(format!(
                            "LIKE needs a string literal pattern, found {}",
                            other.describe()
                        )));
                    }
                };
                let escape = if self.peek() == &Tok::Keyword(Keyword::Escape) {
                    self.advance();
                    match self.peek().clone() {
                        Tok::Str(s) if s.chars().count() == 1 => {
                            self.advance();
                            s.chars().next()
                        }
                        Tok::Str(_) => {
                            return Err(self.error_here(
                                "the ESCAPE string must be exactly one character".to_owned(),
                            ));
                        }
                        other => {
                            return Err(self.error_here(format!(
                                "ESCAPE needs a one-character string literal, found {}",
                                other.describe()
                            )));
                        }
                    }
                } else {
                    None
                };
                let pattern = LikePattern::new(&pattern, escape).map_err(|e| {
                    // Map the offset inside the unescaped text back to the
                    // source: skip the opening quote and count each `'` of
                    // the text twice, as it was written `''`.
                    let quotes = pattern
                        .chars()
                        .take(e.offset)
                        .filter(|&c| c == '\'')
                        .count();
                    SelectorError::new(pattern_col + 1 + e.offset + quotes, e.message)
                })?;
                let expr = Expr::Like {
                    negated,
                    ident,
                    pattern,
                };
                self.node(expr, lhs.col, 2, Kind::Cond)
            }
            Tok::Keyword(Keyword::Is) => {
                self.advance();
                let ident = self.ident_operand(lhs.expr, lhs.col, "IS NULL")?;
                let negated = if self.peek() == &Tok::Keyword(Keyword::Not) {
                    self.advance();
                    true
                } else {
                    false
                };
                if self.peek() != &Tok::Keyword(Keyword::Null) {
                    return Err(self.error_here(format!(
                        "expected NULL after IS{}, found {}",
                        if negated { " NOT" } else { "" },
                        self.peek().describe()
                    )));
                }
                self.advance();
                self.node(Expr::IsNull { negated, ident }, lhs.col, 2, Kind::Cond)
            }
            _ => Ok(lhs),
        }
    }

    fn ident_operand(&self, expr: Expr, col: usize, what: &str) -> Result<String, SelectorError> {
        match expr {
            Expr::Ident(name) => Ok(name),
            _ => Err(SelectorError::new(
                col,
                format!("{what} needs an identifier on its left"),
            )),
        }
    }

    fn additive(&mut self) -> Result<Node, SelectorError> {
        let mut lhs = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => ArithOp::Add,
                Tok::Minus => ArithOp::Sub,
                _ => return Ok(lhs),
            };
            let op_col = self.advance().col;
            let rhs = self.multiplicative()?;
            lhs = self.arith(op, op_col, lhs, rhs)?;
        }
    }

    fn multiplicative(&mut self) -> Result<Node, SelectorError> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => ArithOp::Mul,
                Tok::Slash => ArithOp::Div,
                _ => return Ok(lhs),
            };
            let op_col = self.advance().col;
            let rhs = self.unary()?;
            lhs = self.arith(op, op_col, lhs, rhs)?;
        }
    }

    fn arith(
        &self,
        op: ArithOp,
        op_col: usize,
        lhs: Node,
        rhs: Node,
    ) -> Result<Node, SelectorError> {
        let role = format!("'{op}' needs numeric operands");
        self.require(&lhs, lhs.kind.is_numeric(), &role)?;
        self.require(&rhs, rhs.kind.is_numeric(), &role)?;
        let depth = lhs.depth.max(rhs.depth) + 1;
        let expr = Expr::Arith {
            op,
            lhs: Box::new(lhs.expr),
            rhs: Box::new(rhs.expr),
        };
        self.node(expr, lhs.col.min(op_col), depth, Kind::Num)
    }

    fn unary(&mut self) -> Result<Node, SelectorError> {
        let mut signs = Vec::new();
        while let Tok::Plus | Tok::Minus = self.peek() {
            if signs.len() >= self.limits.max_depth {
                return Err(self.too_deep(self.col()));
            }
            let t = self.advance();
            let op = if t.tok == Tok::Minus {
                UnaryOp::Neg
            } else {
                UnaryOp::Plus
            };
            signs.push((op, t.col));
        }
        // A sign written directly before a number is part of the literal
        // (`-5`, and the only way to write Long.MIN_VALUE).
        let mut node = match (signs.last(), self.peek().clone()) {
            (Some(&(op, col)), Tok::Exact(m)) => {
                signs.pop();
                let num_col = self.advance().col;
                let v = match op {
                    UnaryOp::Neg => 0i64.checked_sub_unsigned(m),
                    UnaryOp::Plus => i64::try_from(m).ok(),
                };
                let v = v.ok_or_else(|| out_of_range(num_col))?;
                self.node(Expr::Literal(Literal::Long(v)), col, 1, Kind::Num)?
            }
            (Some(&(op, col)), Tok::Double(d)) => {
                signs.pop();
                self.advance();
                let d = if op == UnaryOp::Neg { -d } else { d };
                self.node(Expr::Literal(Literal::Double(d)), col, 1, Kind::Num)?
            }
            (Some(&(op, col)), Tok::Float(x)) => {
                signs.pop();
                self.advance();
                let x = if op == UnaryOp::Neg { -x } else { x };
                self.node(Expr::Literal(Literal::Float(x)), col, 1, Kind::Num)?
            }
            _ => self.primary(signs.last().map(|&(op, _)| op))?,
        };
        for (op, col) in signs.into_iter().rev() {
            self.require(
                &node,
                node.kind.is_numeric(),
                &format!("unary '{op}' needs a numeric operand"),
            )?;
            let depth = node.depth + 1;
            let expr = Expr::Unary {
                op,
                operand: Box::new(node.expr),
            };
            node = self.node(expr, col, depth, Kind::Num)?;
        }
        Ok(node)
    }

    fn primary(&mut self, after_sign: Option<UnaryOp>) -> Result<Node, SelectorError> {
        let col = self.col();
        let (expr, kind) = match self.peek().clone() {
            Tok::Exact(m) => match i64::try_from(m) {
                Ok(v) => (Expr::Literal(Literal::Long(v)), Kind::Num),
                Err(_) => return Err(out_of_range(col)),
            },
            Tok::Double(d) => (Expr::Literal(Literal::Double(d)), Kind::Num),
            Tok::Float(x) => (Expr::Literal(Literal::Float(x)), Kind::Num),
            Tok::Str(s) => (Expr::Literal(Literal::String(s)), Kind::StrLit),
            Tok::Keyword(Keyword::True) => (Expr::Literal(Literal::Bool(true)), Kind::BoolLit),
            Tok::Keyword(Keyword::False) => (Expr::Literal(Literal::Bool(false)), Kind::BoolLit),
            Tok::Ident(name) => (Expr::Ident(name), Kind::Ident),
            Tok::LParen => {
                if self.parens >= self.limits.max_depth {
                    return Err(self.too_deep(col));
                }
                self.parens += 1;
                self.advance();
                let inner = self.or_expr()?;
                if self.peek() != &Tok::RParen {
                    return Err(self.error_here(format!(
                        "expected ')' to close the '(' at column {col}, found {}",
                        self.peek().describe()
                    )));
                }
                self.advance();
                self.parens -= 1;
                // Parentheses only group; the node keeps its kind and depth.
                return Ok(Node { col, ..inner });
            }
            Tok::Keyword(Keyword::Null) => {
                return Err(self.error_here(
                    "NULL is not a value; test for it with 'IS NULL' or 'IS NOT NULL'".to_owned(),
                ));
            }
            other => {
                let prev = if let Some(op) = after_sign {
                    format!(" after '{op}'")
                } else if self.pos > 0 {
                    let p = &self.toks[self.pos - 1].tok;
                    match p {
                        Tok::Keyword(k) => format!(" after '{}'", k.text()),
                        Tok::Ident(_)
                        | Tok::Str(_)
                        | Tok::Exact(_)
                        | Tok::Float(_)
                        | Tok::Double(_) => {
                            format!(" after {}", p.describe())
                        }
                        _ => format!(" after '{}'", p.symbol()),
                    }
                } else {
                    String::new()
                };
                let found = if other == Tok::Eof {
                    String::new()
                } else {
                    format!(", found {}", other.describe())
                };
                return Err(self.error_here(format!("expected a value{prev}{found}")));
            }
        };
        self.advance();
        self.node(expr, col, 1, kind)
    }
}

fn out_of_range(col: usize) -> SelectorError {
    SelectorError::new(col, "integer literal is out of the range of a Java long")
}
