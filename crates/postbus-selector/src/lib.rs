//! postbus-selector
