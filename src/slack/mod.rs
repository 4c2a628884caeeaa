//! Slack's protocol: request signatures ([`signature`]) and the identity a payload carries
//! ([`payload`]), pure functions over bytes (no I/O, no clocks: the caller passes `now`,
//! so every rule is unit-tested against Slack's documented examples); the Web API client
//! ([`api`]: install, refresh, OpenID token); Sign in with Slack's id_token verification
//! against Slack's keys ([`oidc`]); Socket Mode's frames and envelopes ([`socket`]); Slack's
//! rate limits as the egress keeps them ([`ratelimit`]).

pub mod api;
pub mod oidc;
pub mod payload;
pub mod ratelimit;
pub mod signature;
pub mod socket;
