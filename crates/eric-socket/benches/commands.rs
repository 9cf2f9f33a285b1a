//! Placeholder until the commands benchmark lands.
fn main() {}
