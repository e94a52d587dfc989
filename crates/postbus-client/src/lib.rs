//! postbus-client
