//! What Slack sends and how to read it: request signatures ([`signature`]) and the identity a
//! payload carries ([`payload`]). Pure functions over bytes: no I/O, no clocks (the caller
//! passes `now`), so every rule is unit-tested against Slack's documented examples.

pub mod api;
pub mod payload;
pub mod signature;
