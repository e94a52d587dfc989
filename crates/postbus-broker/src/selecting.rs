//! A consumer's JMS selector: the parsed expression for the exact decision, and its SQL
//! translation that narrows the claim (the evaluator reads messages through the store's
//! `SelectorView`, shared with topic fan-out).

use postbus_model::StoredMessage;
use postbus_selector::{ParseLimits, Selector, SqlFilter};
use postbus_store::{FILTER_FIRST_PARAM, MessagesMapping, SelectorView};

/// A subscription's selector, ready for claims.
pub struct ConsumerSelector {
    pub text: String,
    pub selector: Selector,
    pub filter: SqlFilter,
}

impl ConsumerSelector {
    /// Parses a selector; the error names the column of the fault.
    pub fn parse(text: &str, limits: &ParseLimits) -> Result<ConsumerSelector, String> {
        let selector = Selector::parse_with_limits(text, limits).map_err(|e| e.to_string())?;
        let filter = selector.to_sql(&MessagesMapping, FILTER_FIRST_PARAM);
        Ok(ConsumerSelector {
            text: text.to_owned(),
            selector,
            filter,
        })
    }

    /// The exact decision.
    pub fn matches(&self, m: &StoredMessage) -> bool {
        self.selector.matches(&SelectorView::of_stored(m))
    }
}
