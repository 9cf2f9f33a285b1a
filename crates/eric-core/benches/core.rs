//! Placeholder until the broadcast benchmark lands.
fn main() {}
