//! postbus CLI
fn main() {}
