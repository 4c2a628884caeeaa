//! One Socket Mode connection: opened (`apps.connections.open`, the WebSocket, Slack's
//! `hello`), then served by a task of its own that reads frames, pings, and writes the acks
//! of its envelopes, until it is dropped or retired.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::envelope::{self, InFlight, Shared};
use super::Settings;
use crate::slack::api::{ApiError, OpenError};
use crate::slack::socket::{self as frames, Message};

/// Longest wait for the WebSocket handshake, and then for Slack's `hello`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a frame may take to be written (an ack, a ping, the close).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a retired connection waits for its envelopes in flight, beyond `upstream.timeout`.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a serving connection tells its slot.
#[derive(Debug)]
pub(super) enum Signal {
    /// Open a replacement, then retire this one (it serves meanwhile).
    Replace(&'static str),
    /// This connection is gone.
    Closed(&'static str),
    /// Slack turned Socket Mode off for the app (`link_disabled`).
    Terminal(&'static str),
}

impl Signal {
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Signal::Replace(r) | Signal::Closed(r) | Signal::Terminal(r) => r,
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(super) enum Failure {
    /// `link_disabled`, or the app token refused: not transient.
    Terminal {
        label: &'static str,
        code: String,
    },
    /// `apps.connections.open` answered 429.
    RateLimited(Duration),
    Other(String),
}

impl Failure {
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Failure::Terminal { label, .. } => label,
            Failure::RateLimited(_) => "ratelimited",
            Failure::Other(_) => "error",
        }
    }
}

/// A serving connection, as its slot holds it. Dropping it retires the connection.
pub(super) struct Socket {
    signals: mpsc::Receiver<Signal>,
    retire: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Socket {
    /// The connection's next signal; `Closed` once it has ended.
    pub(super) async fn signal(&mut self) -> Signal {
        self.signals
            .recv()
            .await
            .unwrap_or(Signal::Closed("dropped"))
    }

    /// Closes the connection once its envelopes in flight are answered (or past
    /// `upstream.timeout`); resolves when it is closed.
    pub(super) async fn retire(mut self) {
        if let Some(r) = self.retire.take() {
            let _ = r.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Opens one connection and starts serving it once Slack said hello.
pub(super) async fn open(shared: &Arc<Shared>, settings: &Settings) -> Result<Socket, Failure> {
    let url = shared
        .gw
        .api
        .apps_connections_open(&settings.api_url, settings.api_timeout, &settings.app_token)
        .await
        .map_err(|e| match e {
            OpenError::RateLimited(wait) => Failure::RateLimited(wait),
            OpenError::Api(ApiError::Slack(code)) => match terminal(&code) {
                Some(label) => Failure::Terminal { label, code },
                None => Failure::Other(format!("apps.connections.open: {code}")),
            },
            OpenError::Api(e) => Failure::Other(format!("apps.connections.open: {e}")),
        })?;
    // The URL carries a ticket: only its host is ever logged.
    let host = url::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let connector = tokio_tungstenite::Connector::Rustls(shared.tls.clone());
    let (mut ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector)),
    )
    .await
    .map_err(|_| Failure::Other(format!("WebSocket to {host}: timed out")))?
    .map_err(|e| Failure::Other(format!("WebSocket to {host}: {e}")))?;
    let peer = peer_addr(&ws);
    tokio::time::timeout(CONNECT_TIMEOUT, hello(&mut ws))
        .await
        .map_err(|_| Failure::Other(format!("no hello from {host}")))??;
    tracing::info!(host = %host, "Socket Mode: connection open");
    let (signal_tx, signals) = mpsc::channel(4);
    let (retire, retired) = oneshot::channel();
    shared.gw.metrics.socket_connection(1);
    let task = tokio::spawn(serve(
        shared.clone(),
        settings.clone(),
        ws,
        peer,
        signal_tx,
        retired,
    ));
    Ok(Socket {
        signals,
        retire: Some(retire),
        task,
    })
}

/// The label of an `apps.connections.open` error that no retry soon will cure.
fn terminal(code: &str) -> Option<&'static str> {
    match code {
        "link_disabled" => Some("link_disabled"),
        "invalid_auth"
        | "not_authed"
        | "not_allowed_token_type"
        | "token_revoked"
        | "account_inactive" => Some("invalid_auth"),
        _ => None,
    }
}

fn peer_addr(ws: &Stream) -> SocketAddr {
    let tcp = match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.peer_addr(),
        MaybeTlsStream::Rustls(s) => s.get_ref().0.peer_addr(),
        _ => return SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    tcp.unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Waits for Slack's `hello` (frames before it are not envelopes Slack expects served).
async fn hello(ws: &mut Stream) -> Result<(), Failure> {
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Ws::Text(t)) => match frames::parse(&t) {
                Ok(Message::Hello) => return Ok(()),
                Ok(Message::Disconnect(reason)) if reason == "link_disabled" => {
                    return Err(Failure::Terminal {
                        label: "link_disabled",
                        code: reason,
                    })
                }
                other => tracing::debug!(?other, "Socket Mode: a frame before hello"),
            },
            Ok(Ws::Close(_)) => break,
            Ok(_) => {}
            Err(e) => return Err(Failure::Other(format!("before hello: {e}"))),
        }
    }
    Err(Failure::Other("closed before hello".into()))
}

/// Serves one connection until it drops or is retired.
async fn serve(
    shared: Arc<Shared>,
    settings: Settings,
    ws: Stream,
    peer: SocketAddr,
    signals: mpsc::Sender<Signal>,
    mut retire: oneshot::Receiver<()>,
) {
    let (mut sink, mut stream) = ws.split();
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<String>();
    let inflight = Arc::new(InFlight::default());
    let upstreams = Arc::new(crate::proxy::ConnPool::new(peer));
    let mut ticks = tokio::time::interval_at(
        Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When a ping went out with nothing heard since.
    let mut pinged_at: Option<Instant> = None;
    let mut replacing = false;
    let mut retiring: Option<Instant> = None;
    let signal = |s: Signal| {
        let _ = signals.try_send(s);
    };
    loop {
        let deadline = retiring.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            frame = stream.next() => {
                pinged_at = None;
                match frame {
                    Some(Ok(Ws::Text(t))) => match frames::parse(&t) {
                        Ok(Message::Envelope(e)) => {
                            let guard = inflight.start();
                            tokio::spawn(envelope::handle(
                                shared.clone(),
                                e,
                                acks_tx.clone(),
                                upstreams.clone(),
                                guard,
                            ));
                        }
                        Ok(Message::Disconnect(reason)) => {
                            tracing::info!(reason = %reason, "Socket Mode: Slack asked to disconnect");
                            match reason.as_str() {
                                "link_disabled" => signal(Signal::Terminal("link_disabled")),
                                _ if replacing => {}
                                "refresh_requested" => signal(Signal::Replace("refresh_requested")),
                                _ => signal(Signal::Replace("warning")),
                            }
                            replacing = true;
                        }
                        Ok(Message::Hello) => {}
                        Ok(Message::Other(t)) => tracing::debug!(r#type = %t, "Socket Mode: frame ignored"),
                        Err(e) => tracing::warn!(error = %e, "Socket Mode: unreadable frame ignored"),
                    },
                    Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => {
                        if retiring.is_none() {
                            signal(Signal::Closed("dropped"));
                        }
                        break;
                    }
                    Some(Ok(_)) => {}
                }
            }
            Some(ack) = acks.recv() => {
                let sent = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Ws::text(ack))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    if retiring.is_none() {
                        signal(Signal::Closed("dropped"));
                    }
                    break;
                }
            }
            _ = ticks.tick() => match pinged_at {
                Some(at) if at.elapsed() >= settings.ping_timeout => {
                    if !replacing {
                        tracing::warn!("Socket Mode: a connection went silent; replacing it");
                        signal(Signal::Replace("silent"));
                        replacing = true;
                    }
                }
                Some(_) => {}
                None => {
                    pinged_at = Some(Instant::now());
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Ws::Ping(Default::default()))).await;
                }
            },
            _ = &mut retire, if retiring.is_none() => {
                let grace = shared.gw.live().config.upstream.timeout + RETIRE_GRACE;
                retiring = Some(Instant::now() + grace);
            }
            _ = inflight.done.notified(), if retiring.is_some() => {}
            _ = tokio::time::sleep_until(deadline), if retiring.is_some() => break,
        }
        if retiring.is_some() && inflight.idle() && acks.is_empty() {
            break;
        }
    }
    shared.gw.metrics.socket_connection(-1);
    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Ws::Close(None))).await;
    // The close handshake: read until Slack closes too (a second at most). Closing with
    // unread data would make the kernel reset the connection, and the close frame be lost.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.close()).await;
}
