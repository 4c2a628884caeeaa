//! Socket Mode ingress: the gateway holds the app's Socket Mode WebSockets and feeds each
//! envelope to the same pipeline as an HTTP request ([`crate::proxy::handle_authenticated`]),
//! so the app needs no public URL and no change.
//!
//! - The supervisor ([`spawn`]) keeps `socket_mode.connections` slots running and follows
//!   reloads: slots are added or stopped when the count changes, all replaced when the token,
//!   the pings or Slack's URL change (the old ones close once the new ones serve), all
//!   stopped when Socket Mode is turned off.
//! - A slot ([`slot`]) keeps one connection serving: it opens one (`apps.connections.open`,
//!   the WebSocket, Slack's `hello`), and when it must be replaced (`disconnect`, or silent
//!   after a ping) opens the replacement first and retires the old one after, so there is no
//!   moment without a connection. Failed attempts back off (1 s to 30 s with jitter, a 429's
//!   `Retry-After`); `link_disabled` and `invalid_auth` are retried every 5 minutes.
//! - A connection ([`socket`]) reads frames, pings, and sends the acks of its envelopes.
//! - An envelope ([`envelope`]) is rendered as HTTP mode's request, signed, forwarded, and
//!   acked when the upstream answers 2xx; an envelope id seen recently is not forwarded again.

mod envelope;
mod slot;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::Url;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::secret::Secret;

/// How long old connections wait for their replacements after a settings change.
const REPLACE_WAIT: Duration = Duration::from_secs(30);

/// What a slot needs from the config; a change of any of it replaces every slot (a change of
/// `connections` alone only adds or stops slots).
#[derive(Clone)]
pub(crate) struct Settings {
    app_token: Secret,
    api_url: Url,
    api_timeout: Duration,
    ping_interval: Duration,
    ping_timeout: Duration,
}

impl Settings {
    /// The settings and the number of connections, when Socket Mode is on.
    fn of(config: &Config) -> Option<(Settings, usize)> {
        let s = &config.socket_mode;
        let app_token = s.app_token.clone().filter(|_| s.enabled)?;
        Some((
            Settings {
                app_token,
                api_url: config.slack.api_url.clone(),
                api_timeout: config.slack.api_timeout,
                ping_interval: s.ping_interval,
                ping_timeout: s.ping_timeout,
            },
            s.connections,
        ))
    }

    fn same(&self, other: &Settings) -> bool {
        self.app_token.expose() == other.app_token.expose()
            && self.api_url == other.api_url
            && self.api_timeout == other.api_timeout
            && self.ping_interval == other.ping_interval
            && self.ping_timeout == other.ping_timeout
    }
}

/// Runs Socket Mode for as long as the gateway runs: idle while it is off, following every
/// reload. Resolves once `stop` is set and every connection is retired (its envelopes in
/// flight answered or past `upstream.timeout`).
pub fn spawn(gw: Arc<Gateway>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(supervise(gw, stop))
}

async fn supervise(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let shared = Arc::new(envelope::Shared::new(gw.clone()));
    let mut reloads = gw.reloads.subscribe();
    let mut running: Option<Arc<Settings>> = None;
    let mut slots: Vec<slot::Slot> = Vec::new();
    loop {
        let want = Settings::of(&gw.live().config);
        match want {
            None => {
                if !slots.is_empty() {
                    tracing::info!("Socket Mode turned off: closing its connections");
                }
                slots.drain(..).for_each(|s| drop(s.stop()));
                running = None;
            }
            Some((settings, n)) => {
                let settings = match &running {
                    Some(r) if r.same(&settings) => r.clone(),
                    _ => Arc::new(settings),
                };
                if running.as_ref().is_some_and(|r| !r.same(&settings)) {
                    // The old connections serve until the new ones have said hello.
                    tracing::info!("Socket Mode settings changed: opening new connections");
                    let old = std::mem::take(&mut slots);
                    let opened = Arc::new(slot::Opened::default());
                    for _ in 0..n {
                        slots.push(slot::Slot::start_counted(
                            shared.clone(),
                            settings.clone(),
                            opened.clone(),
                        ));
                    }
                    tokio::spawn(async move {
                        opened.wait_for(n, REPLACE_WAIT).await;
                        old.into_iter().for_each(|s| drop(s.stop()));
                    });
                }
                if slots.len() != n {
                    tracing::info!(
                        from = slots.len(),
                        to = n,
                        "Socket Mode: connections to keep open"
                    );
                }
                while slots.len() < n {
                    slots.push(slot::Slot::start(shared.clone(), settings.clone()));
                }
                while slots.len() > n {
                    if let Some(s) = slots.pop() {
                        s.stop();
                    }
                }
                running = Some(settings);
            }
        }
        tokio::select! {
            changed = reloads.changed() => if changed.is_err() { break },
            _ = slot::stopped(&mut stop) => break,
        }
    }
    let tasks: Vec<_> = slots.into_iter().map(slot::Slot::stop).collect();
    for t in tasks {
        let _ = t.await;
    }
}
