//! The single error type of the crate and the limits that bound parsing.

/// A selector that cannot be used, with the position of the fault.
///
/// `column` is 1-based and counts characters (not bytes) from the start of
/// the selector text; line breaks are ordinary characters, so a selector
/// written on several lines still has a single column number. A fault at the
/// end of the text reports the column just past the last character.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector error at column {column}: {message}")]
pub struct SelectorError {
    /// 1-based character column of the fault.
    pub column: usize,
    /// What is wrong, phrased for the person who wrote the selector.
    pub message: String,
}

impl SelectorError {
    pub(crate) fn new(column: usize, message: impl Into<String>) -> SelectorError {
        SelectorError {
            column,
            message: message.into(),
        }
    }
}

/// Bounds on the selectors the parser accepts.
///
/// Selectors arrive from clients over the network, so both bounds are
/// enforced before any work proportional to them is done. `max_depth` bounds
/// the nesting of parentheses and of the syntax tree (every `NOT`, sign,
/// operator and predicate is one level; `a AND b AND c` is one level for all
/// its operands). Every pass over a parsed selector — evaluation, printing,
/// negation normal form, SQL generation, dropping — recurses at most that deep,
/// so keep it small: the default 64 is far beyond any real selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Maximum selector length in bytes (UTF-8). Default 4096.
    pub max_length: usize,
    /// Maximum nesting depth. Default 64.
    pub max_depth: usize,
}

impl Default for ParseLimits {
    fn default() -> ParseLimits {
        ParseLimits {
            max_length: 4096,
            max_depth: 64,
        }
    }
}
