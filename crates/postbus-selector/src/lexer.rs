//! Tokenizer for selector text.
//!
//! Works on characters so that every token carries the 1-based character
//! column reported in errors. Numeric literals follow Java's lexical rules
//! (decimal, `0x` hex, `0` octal, `L` suffix; approximate literals with a
//! decimal point, an exponent or an `F`/`D` suffix), but they always denote
//! their mathematical value: `0xFFFFFFFF` is 4294967295, never Java's int -1.

use crate::error::SelectorError;
use crate::unicode::{ID_PART, ID_START};

/// Reserved words; matched case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    Not,
    And,
    Or,
    Between,
    Like,
    In,
    Is,
    Null,
    True,
    False,
    Escape,
}

impl Keyword {
    fn lookup(word: &str) -> Option<Keyword> {
        const ALL: [(&str, Keyword); 11] = [
            ("NOT", Keyword::Not),
            ("AND", Keyword::And),
            ("OR", Keyword::Or),
            ("BETWEEN", Keyword::Between),
            ("LIKE", Keyword::Like),
            ("IN", Keyword::In),
            ("IS", Keyword::Is),
            ("NULL", Keyword::Null),
            ("TRUE", Keyword::True),
            ("FALSE", Keyword::False),
            ("ESCAPE", Keyword::Escape),
        ];
        // ASCII-only case folding: `ın` (dotless i) must not become `IN`.
        ALL.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(word))
            .map(|&(_, kw)| kw)
    }

    pub(crate) fn text(self) -> &'static str {
        match self {
            Keyword::Not => "NOT",
            Keyword::And => "AND",
            Keyword::Or => "OR",
            Keyword::Between => "BETWEEN",
            Keyword::Like => "LIKE",
            Keyword::In => "IN",
            Keyword::Is => "IS",
            Keyword::Null => "NULL",
            Keyword::True => "TRUE",
            Keyword::False => "FALSE",
            Keyword::Escape => "ESCAPE",
        }
    }
}

/// Token kinds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Keyword(Keyword),
    Str(String),
    /// An exact literal's magnitude; at most 2^63 so that `-9223372036854775808`
    /// can be folded by the parser, which rejects 2^63 without a minus.
    Exact(u64),
    Float(f32),
    Double(f64),
    LParen,
    RParen,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Eof,
}

impl Tok {
    /// How the token is named in error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier '{s}'"),
            Tok::Keyword(k) => format!("'{}'", k.text()),
            Tok::Str(_) => "a string literal".to_owned(),
            Tok::Exact(_) | Tok::Float(_) | Tok::Double(_) => "a number".to_owned(),
            Tok::Eof => "the end of the selector".to_owned(),
            other => format!("'{}'", other.symbol()),
        }
    }

    /// Spelling of punctuation and operator tokens.
    pub(crate) fn symbol(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Eq => "=",
            Tok::Ne => "<>",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            _ => "",
        }
    }
}

/// A token and the 1-based character column where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) col: usize,
}

fn in_table(table: &[(char, char)], c: char) -> bool {
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// `Character.isJavaIdentifierStart`, minus nothing (see `unicode.rs`).
pub(crate) fn is_ident_start(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic() || c == '_' || c == '$'
    } else {
        in_table(ID_START, c)
    }
}

/// `Character.isJavaIdentifierPart`, without the identifier-ignorable
/// characters (see `unicode.rs`).
pub(crate) fn is_ident_part(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_' || c == '$'
    } else {
        in_table(ID_PART, c)
    }
}

/// Whether `name` would lex as exactly one identifier token (not a keyword).
pub fn is_valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if is_ident_start(c) => {}
        _ => return false,
    }
    chars.all(is_ident_part) && Keyword::lookup(name).is_none()
}

/// The spec's whitespace: space, horizontal tab, form feed, line terminators.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0C' | '\n' | '\r')
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn col(&self) -> usize {
        self.pos + 1
    }

    fn string(&mut self) -> Result<Tok, SelectorError> {
        let start = self.col();
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.peek(0) {
                None => {
                    return Err(SelectorError::new(start, "unterminated string literal"));
                }
                Some('\'') if self.peek(1) == Some('\'') => {
                    s.push('\'');
                    self.pos += 2;
                }
                Some('\'') => {
                    self.pos += 1;
                    return Ok(Tok::Str(s));
                }
                Some(c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn digits(&mut self, radix: u32) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek(0) {
            if c.is_digit(radix) {
                s.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        s
    }

    fn number(&mut self) -> Result<Tok, SelectorError> {
        let start = self.col();
        let malformed = |msg: &str| SelectorError::new(start, msg.to_owned());

        if self.peek(0) == Some('0') && matches!(self.peek(1), Some('x' | 'X')) {
            self.pos += 2;
            let hex = self.digits(16);
            if hex.is_empty() {
                return Err(malformed(
                    "malformed hexadecimal literal: no digits after '0x'",
                ));
            }
            if matches!(self.peek(0), Some('l' | 'L')) {
                self.pos += 1;
            }
            self.check_literal_end(start)?;
            return exact_magnitude(&hex, 16, start).map(Tok::Exact);
        }

        let int_part = self.digits(10);
        let mut text = int_part.clone();
        let mut approximate = false;
        if self.peek(0) == Some('.') {
            approximate = true;
            self.pos += 1;
            text.push('.');
            text.push_str(&self.digits(10));
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            approximate = true;
            self.pos += 1;
            text.push('e');
            if let Some(sign @ ('+' | '-')) = self.peek(0) {
                self.pos += 1;
                text.push(sign);
            }
            let exp = self.digits(10);
            if exp.is_empty() {
                return Err(malformed(
                    "malformed numeric literal: exponent has no digits",
                ));
            }
            text.push_str(&exp);
        }
        let suffix = self.peek(0);
        match suffix {
            Some('f' | 'F') => {
                self.pos += 1;
                self.check_literal_end(start)?;
                let v: f32 = text
                    .parse()
                    .map_err(|_| malformed("malformed numeric literal"))?;
                check_approximate(v.is_finite(), v == 0.0, &text, start)?;
                Ok(Tok::Float(v))
            }
            Some('d' | 'D') => {
                self.pos += 1;
                self.check_literal_end(start)?;
                self.double(&text, start)
            }
            _ if approximate => {
                self.check_literal_end(start)?;
                self.double(&text, start)
            }
            Some('l' | 'L') => {
                self.pos += 1;
                self.check_literal_end(start)?;
                self.exact(&int_part, start)
            }
            _ => {
                self.check_literal_end(start)?;
                self.exact(&int_part, start)
            }
        }
    }

    fn double(&self, text: &str, start: usize) -> Result<Tok, SelectorError> {
        let v: f64 = text
            .parse()
            .map_err(|_| SelectorError::new(start, "malformed numeric literal"))?;
        check_approximate(v.is_finite(), v == 0.0, text, start)?;
        Ok(Tok::Double(v))
    }

    fn exact(&self, digits: &str, start: usize) -> Result<Tok, SelectorError> {
        if digits.len() > 1 && digits.starts_with('0') {
            if !digits.chars().all(|c| c.is_digit(8)) {
                return Err(SelectorError::new(
                    start,
                    format!("malformed octal literal '{digits}': a leading 0 means octal"),
                ));
            }
            return exact_magnitude(&digits[1..], 8, start).map(Tok::Exact);
        }
        exact_magnitude(digits, 10, start).map(Tok::Exact)
    }

    /// A literal must not run straight into a letter, digit or dot
    /// (`10abc`, `1.2.3`, `1L2`): that is a typo, not two tokens.
    fn check_literal_end(&self, start: usize) -> Result<(), SelectorError> {
        match self.peek(0) {
            Some(c) if c == '.' || is_ident_part(c) => Err(SelectorError::new(
                start,
                format!("malformed numeric literal: unexpected '{c}' after the number"),
            )),
            _ => Ok(()),
        }
    }
}

fn exact_magnitude(digits: &str, radix: u32, start: usize) -> Result<u64, SelectorError> {
    let limit = 1u64 << 63;
    let mut v: u64 = 0;
    for c in digits.chars() {
        let d = u64::from(c.to_digit(radix).unwrap_or(0));
        v = match v
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(d))
        {
            Some(v) if v <= limit => v,
            _ => {
                return Err(SelectorError::new(
                    start,
                    "integer literal is out of the range of a Java long",
                ));
            }
        };
    }
    Ok(v)
}

fn check_approximate(
    finite: bool,
    zero: bool,
    text: &str,
    start: usize,
) -> Result<(), SelectorError> {
    if !finite {
        return Err(SelectorError::new(
            start,
            "approximate literal is too large (out of range)",
        ));
    }
    let mantissa = text.split(['e', 'E']).next().unwrap_or("");
    if zero && mantissa.chars().any(|c| matches!(c, '1'..='9')) {
        return Err(SelectorError::new(
            start,
            "approximate literal is too small: it would round to zero",
        ));
    }
    Ok(())
}

/// Splits `src` into tokens, ending with [`Tok::Eof`] at the column just past
/// the last character.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, SelectorError> {
    let mut lx = Lexer {
        chars: src.chars().collect(),
        pos: 0,
    };
    let mut out = Vec::new();
    while let Some(c) = lx.peek(0) {
        let col = lx.col();
        if is_space(c) {
            lx.pos += 1;
            continue;
        }
        let tok = match c {
            '\'' => lx.string()?,
            '0'..='9' => lx.number()?,
            '.' if lx.peek(1).is_some_and(|d| d.is_ascii_digit()) => lx.number()?,
            '(' | ')' | ',' | '=' | '+' | '-' | '*' | '/' => {
                lx.pos += 1;
                match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    ',' => Tok::Comma,
                    '=' => Tok::Eq,
                    '+' => Tok::Plus,
                    '-' => Tok::Minus,
                    '*' => Tok::Star,
                    _ => Tok::Slash,
                }
            }
            '<' => {
                lx.pos += 1;
                match lx.peek(0) {
                    Some('>') => {
                        lx.pos += 1;
                        Tok::Ne
                    }
                    Some('=') => {
                        lx.pos += 1;
                        Tok::Le
                    }
                    _ => Tok::Lt,
                }
            }
            '>' => {
                lx.pos += 1;
                if lx.peek(0) == Some('=') {
                    lx.pos += 1;
                    Tok::Ge
                } else {
                    Tok::Gt
                }
            }
            '!' if lx.peek(1) == Some('=') => {
                return Err(SelectorError::new(
                    col,
                    "'!=' is not a selector operator; use '<>'",
                ));
            }
            '"' => {
                return Err(SelectorError::new(
                    col,
                    "unexpected '\"': string literals use single quotes",
                ));
            }
            c if is_ident_start(c) => {
                let mut word = String::new();
                while let Some(c) = lx.peek(0) {
                    if is_ident_part(c) {
                        word.push(c);
                        lx.pos += 1;
                    } else {
                        break;
                    }
                }
                match Keyword::lookup(&word) {
                    Some(kw) => Tok::Keyword(kw),
                    None => Tok::Ident(word),
                }
            }
            c => {
                let shown = if c.is_control() || c.is_whitespace() || is_format_char(c) {
                    format!("U+{:04X}", u32::from(c))
                } else {
                    format!("'{c}'")
                };
                return Err(SelectorError::new(
                    col,
                    format!("unexpected character {shown}"),
                ));
            }
        };
        out.push(Token { tok, col });
    }
    out.push(Token {
        tok: Tok::Eof,
        col: lx.col(),
    });
    Ok(out)
}

/// Invisible formatting characters (bidi overrides, zero-width characters)
/// are shown by code point so the error message itself is not spoofed.
fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn numbers() {
        assert_eq!(toks("10"), vec![Tok::Exact(10), Tok::Eof]);
        assert_eq!(toks("10L"), vec![Tok::Exact(10), Tok::Eof]);
        assert_eq!(toks("0x1F"), vec![Tok::Exact(31), Tok::Eof]);
        assert_eq!(toks("017"), vec![Tok::Exact(15), Tok::Eof]);
        assert_eq!(toks("0"), vec![Tok::Exact(0), Tok::Eof]);
        assert_eq!(toks("09.5"), vec![Tok::Double(9.5), Tok::Eof]);
        assert_eq!(toks("7."), vec![Tok::Double(7.0), Tok::Eof]);
        assert_eq!(toks(".5"), vec![Tok::Double(0.5), Tok::Eof]);
        assert_eq!(toks("7E3"), vec![Tok::Double(7000.0), Tok::Eof]);
        assert_eq!(toks("1f"), vec![Tok::Float(1.0), Tok::Eof]);
        assert_eq!(toks("0.1F"), vec![Tok::Float(0.1), Tok::Eof]);
        assert_eq!(toks("2d"), vec![Tok::Double(2.0), Tok::Eof]);
        assert_eq!(
            toks("9223372036854775808"),
            vec![Tok::Exact(1 << 63), Tok::Eof]
        );
        assert!(tokenize("9223372036854775809").is_err());
        assert!(tokenize("08").is_err());
        assert!(tokenize("0x").is_err());
        assert!(tokenize("1e").is_err());
        assert!(tokenize("10abc").is_err());
        assert!(tokenize("1.2.3").is_err());
        assert!(tokenize("1.5L").is_err());
        assert!(tokenize("1e400").is_err());
        assert!(tokenize("1e-400").is_err());
        assert!(tokenize("1e50f").is_err());
        assert_eq!(toks("0e-400"), vec![Tok::Double(0.0), Tok::Eof]);
    }

    #[test]
    fn identifiers_and_keywords() {
        assert_eq!(
            toks("$a _b ärger Цена nOt"),
            vec![
                Tok::Ident("$a".into()),
                Tok::Ident("_b".into()),
                Tok::Ident("ärger".into()),
                Tok::Ident("Цена".into()),
                Tok::Keyword(Keyword::Not),
                Tok::Eof
            ]
        );
        assert!(tokenize("a\u{202E}b").is_err());
        assert!(is_valid_identifier("x1"));
        assert!(!is_valid_identifier("1x"));
        assert!(!is_valid_identifier("null"));
    }

    #[test]
    fn strings_and_columns() {
        let t = tokenize("a = 'it''s' ").unwrap();
        assert_eq!(t[2].tok, Tok::Str("it's".into()));
        assert_eq!(t[2].col, 5);
        assert_eq!(t[3].col, 13);
        let e = tokenize("x = 'abc").unwrap_err();
        assert_eq!(e.column, 5);
    }
}
