//! The `canopy` command.
fn main() {}
