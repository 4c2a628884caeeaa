//! `[egress]`: the Web API egress, where the upstream calls Slack through the gateway and
//! never holds a token (see [`crate::egress`]).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::cx::{ser_duration, Cx, R};
use super::raw;
use crate::secret::Secret;

/// Default `egress.listen`.
pub const DEFAULT_EGRESS_LISTEN: &str = "127.0.0.1:3001";
/// Default `egress.max_wait`.
pub const DEFAULT_EGRESS_MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize)]
pub struct EgressConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Required in `Proxy-Authorization: Bearer` when set; required when `listen` is not
    /// loopback.
    pub token: Option<Secret>,
    /// The longest a call is held back by Slack's rate limits.
    #[serde(serialize_with = "ser_duration")]
    pub max_wait: Duration,
}

impl Cx<'_> {
    /// `[egress]`.
    pub(super) fn egress(&mut self, e: &raw::RawEgress) -> R<EgressConfig> {
        let listen = self.socket("egress.listen", &e.listen, DEFAULT_EGRESS_LISTEN)?;
        let token = self
            .secret("egress.token", &e.token, &e.token_file)?
            .filter(|t| !t.is_empty());
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(self.err(
                "egress.listen",
                e.listen.as_ref(),
                "is not a loopback address: set egress.token, which callers then send as `Proxy-Authorization: Bearer …`",
            ));
        }
        let max_wait = self.duration("egress.max_wait", &e.max_wait, DEFAULT_EGRESS_MAX_WAIT)?;
        Ok(EgressConfig {
            enabled: e.enabled.unwrap_or(false),
            listen,
            token,
            max_wait,
        })
    }
}
