//! verify: metrics and prompts for comparing a converted model with its original
//! (the `verify` command itself is not built yet).

pub mod metrics;
pub mod prompts;
