//! `LIKE` patterns: compilation with `ESCAPE` handling and a matcher whose
//! cost is bounded by `O(pattern × text)`.
//!
//! The matcher is the classic wildcard algorithm that remembers only the most
//! recent `%`: when a later literal fails, it retries from that `%` one
//! character further on. Earlier `%`s never need revisiting (anything they
//! could absorb, the latest one can absorb too), so a hostile pattern such as
//! `%a%a%a%a%b` cannot trigger exponential backtracking the way a naive
//! recursive matcher or a backtracking regex would.

use std::fmt;

/// One element of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LikeToken {
    /// A character that must match itself (case-sensitively).
    Char(char),
    /// `_`: exactly one character.
    One,
    /// `%`: any sequence of characters, including none.
    Many,
}

/// A compiled `LIKE` pattern with its optional escape character.
///
/// Equality compares the pattern as written (source and escape), which is
/// what the syntax tree round-trip needs.
#[derive(Debug, Clone)]
pub struct LikePattern {
    source: String,
    escape: Option<char>,
    tokens: Vec<LikeToken>,
}

impl PartialEq for LikePattern {
    fn eq(&self, other: &LikePattern) -> bool {
        self.source == other.source && self.escape == other.escape
    }
}

/// Why a pattern could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikePatternError {
    /// 0-based character offset of the fault within the pattern text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LikePatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pattern character {})",
            self.message,
            self.offset + 1
        )
    }
}

impl LikePattern {
    /// Compiles `source`. With an escape character `e`, `e%`, `e_` and `ee`
    /// stand for a literal `%`, `_` and `e`; `e` followed by anything else, or
    /// at the end of the pattern, is an error (as in SQL-92) rather than being
    /// guessed at.
    pub fn new(source: &str, escape: Option<char>) -> Result<LikePattern, LikePatternError> {
        let mut tokens = Vec::new();
        let mut chars = source.chars().enumerate();
        while let Some((i, c)) = chars.next() {
            if Some(c) == escape {
                match chars.next() {
                    Some((_, n)) if n == '%' || n == '_' || Some(n) == escape => {
                        tokens.push(LikeToken::Char(n));
                    }
                    Some((_, n)) => {
                        return Err(LikePatternError {
                            offset: i,
                            message: format!(
                                "escape character '{c}' must be followed by '%', '_' or itself, not '{n}'"
                            ),
                        });
                    }
                    None => {
                        return Err(LikePatternError {
                            offset: i,
                            message: format!("escape character '{c}' at the end of the pattern"),
                        });
                    }
                }
            } else if c == '%' {
                // Consecutive `%` are one `%`; keeping a single token keeps
                // the matcher's retry loop short.
                if tokens.last() != Some(&LikeToken::Many) {
                    tokens.push(LikeToken::Many);
                }
            } else if c == '_' {
                tokens.push(LikeToken::One);
            } else {
                tokens.push(LikeToken::Char(c));
            }
        }
        Ok(LikePattern {
            source: source.to_owned(),
            escape,
            tokens,
        })
    }

    /// The pattern text as written (without quotes).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The escape character, if any.
    pub fn escape(&self) -> Option<char> {
        self.escape
    }

    /// Whether `text` matches the whole pattern, character by character.
    pub fn matches(&self, text: &str) -> bool {
        let t = &self.tokens;
        let (mut pi, mut si) = (0usize, 0usize);
        // (token index after the latest `%`, text offset it currently absorbs up to)
        let mut retry: Option<(usize, usize)> = None;
        loop {
            if pi < t.len() {
                let next = text[si..].chars().next();
                match t[pi] {
                    LikeToken::Many => {
                        retry = Some((pi + 1, si));
                        pi += 1;
                        continue;
                    }
                    LikeToken::One => {
                        if let Some(c) = next {
                            si += c.len_utf8();
                            pi += 1;
                            continue;
                        }
                    }
                    LikeToken::Char(want) => {
                        if next == Some(want) {
                            si += want.len_utf8();
                            pi += 1;
                            continue;
                        }
                    }
                }
            } else if si == text.len() {
                return true;
            }
            // Mismatch: let the latest `%` absorb one more character.
            match retry {
                Some((p, s)) => match text[s..].chars().next() {
                    Some(c) => {
                        let s = s + c.len_utf8();
                        retry = Some((p, s));
                        pi = p;
                        si = s;
                    }
                    None => return false,
                },
                None => return false,
            }
        }
    }

    /// The same pattern in PostgreSQL `LIKE` syntax with `\` as the escape
    /// character, or `None` if it cannot be passed to PostgreSQL (text there
    /// cannot hold U+0000).
    pub(crate) fn to_postgres(&self) -> Option<String> {
        let mut out = String::with_capacity(self.source.len() + 4);
        for tok in &self.tokens {
            match *tok {
                LikeToken::Many => out.push('%'),
                LikeToken::One => out.push('_'),
                LikeToken::Char('\0') => return None,
                LikeToken::Char(c) => {
                    if matches!(c, '%' | '_' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, esc: Option<char>, s: &str) -> bool {
        LikePattern::new(p, esc).unwrap().matches(s)
    }

    #[test]
    fn basics() {
        assert!(m("EU-%", None, "EU-west"));
        assert!(m("EU-%", None, "EU-"));
        assert!(!m("EU-%", None, "eu-west"));
        assert!(m("a_c", None, "abc"));
        assert!(!m("a_c", None, "ac"));
        assert!(m("%", None, ""));
        assert!(!m("_", None, ""));
        assert!(m("", None, ""));
        assert!(!m("", None, "a"));
        assert!(m("_ü_", None, "aüb"));
        assert!(m("%a%a%a%a%b", None, "aaaaab"));
        assert!(!m("%a%a%a%a%b", None, &"a".repeat(5000)));
    }

    #[test]
    fn escapes() {
        assert!(m("100\\%", Some('\\'), "100%"));
        assert!(!m("100\\%", Some('\\'), "1000"));
        assert!(m("a!_b", Some('!'), "a_b"));
        assert!(!m("a!_b", Some('!'), "axb"));
        assert!(m("a!!b", Some('!'), "a!b"));
        assert!(LikePattern::new("a!b", Some('!')).is_err());
        assert!(LikePattern::new("ab!", Some('!')).is_err());
        assert!(m("%%%_", Some('%'), "%_"));
    }

    #[test]
    fn postgres_form() {
        let p = LikePattern::new("a\\%b_%c!_", Some('!')).unwrap();
        assert_eq!(p.to_postgres().unwrap(), "a\\\\%b_%c\\_");
        assert!(
            LikePattern::new("a\0", None)
                .unwrap()
                .to_postgres()
                .is_none()
        );
    }
}
