//! `[socket_mode]` and `[delivery]`: Socket Mode ingress and queued delivery.

use std::time::Duration;

use serde::Serialize;

use super::cx::{ser_duration, Cx, R};
use super::raw;
use crate::secret::Secret;

#[derive(Debug, Clone, Serialize)]
pub struct SocketModeConfig {
    pub enabled: bool,
    pub app_token: Option<Secret>,
    /// WebSocket connections kept open (1..10).
    pub connections: usize,
    /// How often each socket is pinged.
    #[serde(serialize_with = "ser_duration")]
    pub ping_interval: Duration,
    /// A socket that sends nothing (no frame, no pong) for this long after a ping is silent,
    /// and replaced.
    #[serde(serialize_with = "ser_duration")]
    pub ping_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    Direct,
    Queued,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryConfig {
    pub mode: DeliveryMode,
    pub max_attempts: usize,
    #[serde(serialize_with = "ser_duration")]
    pub retry_backoff: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub retry_backoff_max: Duration,
    pub concurrency: usize,
    #[serde(serialize_with = "ser_duration")]
    pub dedupe_window: Duration,
}

impl Cx<'_> {
    /// `[socket_mode]`.
    pub(super) fn socket_mode(&mut self, s: &raw::RawSocketMode) -> R<SocketModeConfig> {
        let app_token = self
            .secret("socket_mode.app_token", &s.app_token, &s.app_token_file)?
            .filter(|t| !t.is_empty());
        let connections = self.count("socket_mode.connections", &s.connections, 2, 10)?;
        let enabled = s.enabled.unwrap_or(false);
        if enabled && app_token.is_none() {
            return Err(self.err(
                "socket_mode.app_token",
                None,
                "is required with socket_mode.enabled (an xapp- token with connections:write)",
            ));
        }
        let ping_interval = self.duration(
            "socket_mode.ping_interval",
            &s.ping_interval,
            Duration::from_secs(10),
        )?;
        let ping_timeout = self.duration(
            "socket_mode.ping_timeout",
            &s.ping_timeout,
            Duration::from_secs(30),
        )?;
        if ping_interval.is_zero() {
            return Err(self.err(
                "socket_mode.ping_interval",
                s.ping_interval.as_ref(),
                "must be more than zero",
            ));
        }
        if ping_timeout < ping_interval {
            return Err(self.err(
                "socket_mode.ping_timeout",
                s.ping_timeout.as_ref(),
                "must be at least socket_mode.ping_interval",
            ));
        }
        Ok(SocketModeConfig {
            enabled,
            app_token,
            connections,
            ping_interval,
            ping_timeout,
        })
    }

    /// `[delivery]`.
    pub(super) fn delivery(&mut self, d: &raw::RawDelivery) -> R<DeliveryConfig> {
        let mode = match &d.mode {
            None => DeliveryMode::Direct,
            Some(m) => match self.expand("delivery.mode", m)?.0.as_str() {
                "direct" => DeliveryMode::Direct,
                "queued" => DeliveryMode::Queued,
                other => {
                    return Err(self.err(
                        "delivery.mode",
                        Some(m),
                        format!("`{other}` is not a mode: \"direct\" or \"queued\""),
                    ))
                }
            },
        };
        let retry_backoff = self.duration(
            "delivery.retry_backoff",
            &d.retry_backoff,
            Duration::from_secs(1),
        )?;
        let retry_backoff_max = self.duration(
            "delivery.retry_backoff_max",
            &d.retry_backoff_max,
            Duration::from_secs(300),
        )?;
        if retry_backoff_max < retry_backoff {
            return Err(self.err(
                "delivery.retry_backoff_max",
                d.retry_backoff_max.as_ref(),
                "must be at least delivery.retry_backoff",
            ));
        }
        Ok(DeliveryConfig {
            mode,
            max_attempts: self.count("delivery.max_attempts", &d.max_attempts, 8, 100)?,
            retry_backoff,
            retry_backoff_max,
            concurrency: self.count("delivery.concurrency", &d.concurrency, 32, 1024)?,
            dedupe_window: self.duration(
                "delivery.dedupe_window",
                &d.dedupe_window,
                Duration::from_secs(3600),
            )?,
        })
    }
}
