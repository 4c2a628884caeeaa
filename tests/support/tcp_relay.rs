//! A TCP relay to put in front of a server (PostgreSQL) and break on demand: [`TcpRelay::cut`]
//! closes every connection and the listening port (new connections are refused),
//! [`TcpRelay::stall`] keeps every connection open but passes no byte either way (a network
//! partition: the far end hangs rather than refuses), [`TcpRelay::restore`] relays again on
//! the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// What the relay does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Relays.
    Up,
    /// Holds every connection open, passing nothing; accepts new ones and holds them too.
    Stall,
    /// Closed: no connection, nothing listening.
    Cut,
}

pub struct TcpRelay {
    /// The port clients connect to; the same across cuts.
    pub port: u16,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Connections open now (client side accepted and not yet dropped).
    open: Arc<AtomicUsize>,
    /// Connections accepted since the start.
    accepted: Arc<AtomicUsize>,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl TcpRelay {
    /// A relay on a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> TcpRelay {
        let listener = listen(0).expect("bind a loopback port");
        Self::with_listener(listener, target)
    }

    /// A relay on loopback port `port` (e.g. one a client was already told to use).
    pub async fn start_on(port: u16, target: SocketAddr) -> TcpRelay {
        let listener = listen(port).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        Self::with_listener(listener, target)
    }

    fn with_listener(listener: TcpListener, target: SocketAddr) -> TcpRelay {
        let port = listener.local_addr().unwrap().port();
        let relay = TcpRelay {
            port,
            target,
            mode: watch::channel(Mode::Up).0,
            open: Arc::new(AtomicUsize::new(0)),
            accepted: Arc::new(AtomicUsize::new(0)),
            accept_task: Mutex::new(None),
        };
        relay.spawn_accept(listener);
        relay
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes every connection and the listening port; returns once they are closed.
    pub async fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
        let task = self.accept_task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await; // the listener is dropped with the task
        }
        self.wait_closed().await;
    }

    /// Stops passing bytes on every connection (open ones and new ones), keeping them open.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Relays again, on the same port. Connections held by a stall are closed first, as a
    /// network partition's would be by then.
    pub async fn restore(&self) {
        let was = self.mode.send_replace(Mode::Cut);
        self.wait_closed().await;
        if was == Mode::Cut {
            let listener =
                listen(self.port).unwrap_or_else(|e| panic!("rebind 127.0.0.1:{}: {e}", self.port));
            self.spawn_accept(listener);
        }
        self.mode.send_replace(Mode::Up);
    }

    async fn wait_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.open_connections() > 0 {
            assert!(Instant::now() < deadline, "relay connections did not close");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn spawn_accept(&self, listener: TcpListener) {
        let (target, mode) = (self.target, self.mode.subscribe());
        let (open, accepted) = (self.open.clone(), self.accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let guard = OpenGuard::new(open.clone());
                let mode = mode.clone();
                tokio::spawn(async move {
                    relay_one(inbound, target, mode).await;
                    drop(guard);
                });
            }
        });
        *self.accept_task.lock().unwrap() = Some(task);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
        if let Some(task) = self.accept_task.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// A listener on loopback `port` (0: any), reusable right after a previous one closed.
fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(128)
}

/// One client connection: relayed while the mode is `Up`, held while `Stall`, closed (both
/// sides) on `Cut` or when a stall ends.
async fn relay_one(mut inbound: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Cut => return,
        Mode::Stall => {
            let _ = mode.changed().await;
            return;
        }
        Mode::Up => {}
    }
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let stalled = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
        m = mode.wait_for(|m| *m != Mode::Up) => matches!(m.as_deref(), Ok(Mode::Stall)),
    };
    if stalled {
        // Both sockets stay open, unread, until the stall ends.
        let _ = mode.wait_for(|m| *m != Mode::Stall).await;
    }
}

/// Counts a connection as open until dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
