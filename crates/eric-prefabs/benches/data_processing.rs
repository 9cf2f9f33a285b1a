//! Placeholder until the data-processing benchmark lands.
fn main() {}
