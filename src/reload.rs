//! Configuration reload: read the file again, validate it whole, swap it in.
//!
//! Triggers: the file watcher ([`spawn_watcher`], on the config's folder and the folders of
//! every file it references, so editors that save by rename and Kubernetes' symlink swaps are
//! seen), SIGHUP and `POST /-/reload`. The watcher debounces bursts of events, for at most
//! [`WATCH_MAX_DELAY`] (a folder that is never quiet must not hold a change back), and reloads
//! only when the content of the config or a referenced file changed.
//!
//! Reload never makes things worse: the new config, and its TLS certificate if any, are
//! loaded and checked aside; on any error the reason is logged (key and line) and the old
//! config stays in force. Keys that cannot change while running ([`RESTART_ONLY`]) keep their
//! old values in the swapped config, with a warning, so nothing is half-applied.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;

use crate::config::{Config, ConfigError};
use crate::gateway::Gateway;
use crate::tls::TlsError;

/// Keys whose change takes effect only on restart.
pub const RESTART_ONLY: [&str; 6] = [
    "server.listen",
    "server.admin_listen",
    "server.workers",
    "storage",
    "egress.listen",
    "egress.enabled",
];

/// Quiet time after a file event before reloading: editors write in several steps.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(150);
/// Longest a change waits for the folder to fall quiet. A busy folder (a log file beside
/// `gateway.toml`, written on every request) never does: past this, the files are compared
/// and a change applied anyway, so a change is in force within about this long whatever else
/// happens in its folder.
pub const WATCH_MAX_DELAY: Duration = Duration::from_millis(500);

/// Why a reload was refused. The old configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("server.tls: {0}")]
    Tls(#[from] TlsError),
}

/// What a change-triggered reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Reloaded,
    Unchanged,
}

/// Reloads unconditionally (SIGHUP, `POST /-/reload`): every attempt is counted.
pub fn reload(gw: &Gateway) -> Result<(), ReloadError> {
    let result = load_and_swap(gw);
    match &result {
        Ok(()) => gw.clear_reload_failure(),
        Err(e) => failed(gw, e),
    }
    result
}

fn failed(gw: &Gateway, e: &ReloadError) {
    gw.metrics.reload("failure");
    tracing::error!(error = %e, "configuration reload failed; the previous configuration stays in force");
}

/// Reloads when the config or a referenced file changed since the last load.
pub fn reload_if_changed(gw: &Gateway) -> Result<Outcome, ReloadError> {
    let live = gw.live();
    let now = crate::config::fingerprint(&gw.config_path, &live.config.referenced_files);
    if now.is_some() && now == gw.last_fingerprint() {
        return Ok(Outcome::Unchanged);
    }
    // A failed load is tried again on every event (a file the new config names may only
    // now have appeared), but the same failure on the same content is counted and logged
    // once: editors and the watched folders raise several events per change.
    match load_and_swap(gw) {
        Ok(()) => {
            gw.clear_reload_failure();
            Ok(Outcome::Reloaded)
        }
        Err(e) => {
            if gw.note_reload_failure(now, e.to_string()) {
                failed(gw, &e);
            }
            Err(e)
        }
    }
}

fn load_and_swap(gw: &Gateway) -> Result<(), ReloadError> {
    let new = Config::load(&gw.config_path)?;
    let old = gw.live();
    let new = keep_restart_only(&old.config, new);
    // The certificate is checked before anything is swapped.
    let key = match &new.server.tls {
        Some(t) => Some(crate::tls::load_certified_key(t)?),
        None => None,
    };
    gw.set_tls(key);
    gw.set_fingerprint(crate::config::fingerprint(
        &gw.config_path,
        &new.referenced_files,
    ));
    for key in &new.placeholder_secrets {
        tracing::warn!(
            key = key.as_str(),
            "a development placeholder secret is in use"
        );
    }
    gw.swap_config(new);
    gw.metrics.reload("success");
    tracing::info!(path = %gw.config_path.display(), "configuration reloaded");
    Ok(())
}

/// `new` with the restart-only values of `old`, warning about each that differs.
pub fn keep_restart_only(old: &Config, mut new: Config) -> Config {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen {
        changed.push("server.listen");
        new.server.listen = old.server.listen;
    }
    if old.server.admin_listen != new.server.admin_listen {
        changed.push("server.admin_listen");
        new.server.admin_listen = old.server.admin_listen;
    }
    if old.server.workers != new.server.workers {
        changed.push("server.workers");
        new.server.workers = old.server.workers;
    }
    if old.server.max_connections != new.server.max_connections {
        changed.push("server.max_connections");
        new.server.max_connections = old.server.max_connections;
    }
    if old.egress.listen != new.egress.listen {
        changed.push("egress.listen");
        new.egress.listen = old.egress.listen;
    }
    if old.egress.enabled != new.egress.enabled {
        changed.push("egress.enabled");
        new.egress.enabled = old.egress.enabled;
    }
    let storage_changed = old.storage.path != new.storage.path
        || old.storage.backend != new.storage.backend
        || old.storage.postgres != new.storage.postgres
        || old.storage.encryption_key != new.storage.encryption_key
        || old.storage.previous_encryption_keys != new.storage.previous_encryption_keys;
    if storage_changed {
        changed.push("storage");
        new.storage = old.storage.clone();
    }
    for key in changed {
        tracing::warn!(
            key,
            "changed in the config file; takes effect on restart (the running value is kept)"
        );
    }
    new
}

/// The folders to watch: the config's and those of the files it references.
fn folders(config_path: &Path, referenced: &[PathBuf]) -> HashSet<PathBuf> {
    std::iter::once(config_path)
        .chain(referenced.iter().map(PathBuf::as_path))
        .filter_map(|p| {
            let parent = p.parent()?;
            Some(if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            })
        })
        .collect()
}

/// Watches the config and its referenced files; reloads on change until `gw` is dropped.
/// A watcher that cannot start is logged: SIGHUP and `POST /-/reload` still work.
pub fn spawn_watcher(gw: &Arc<Gateway>) -> Option<tokio::task::JoinHandle<()>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(
        move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = tx.send(());
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /-/reload");
            return None;
        }
    };
    let mut watched = HashSet::new();
    let watch_new = |watcher: &mut notify::RecommendedWatcher,
                     gw: &Gateway,
                     watched: &mut HashSet<PathBuf>| {
        for dir in folders(&gw.config_path, &gw.live().config.referenced_files) {
            if watched.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir);
                }
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch folder"),
            }
        }
    };
    watch_new(&mut watcher, gw, &mut watched);
    let weak = Arc::downgrade(gw);
    Some(tokio::spawn(async move {
        // An edit between the first load and the watch being in place raised no event.
        if let Some(gw) = weak.upgrade() {
            let _ = reload_if_changed(&gw);
        }
        while rx.recv().await.is_some() {
            // Debounce: wait until events stop for a moment, or the longest wait passed.
            let deadline = tokio::time::Instant::now() + WATCH_MAX_DELAY;
            loop {
                let quiet = (tokio::time::Instant::now() + WATCH_DEBOUNCE).min(deadline);
                match tokio::time::timeout_at(quiet, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let Some(gw) = weak.upgrade() else { return };
            if let Ok(Outcome::Reloaded) = reload_if_changed(&gw) {
                watch_new(&mut watcher, &gw, &mut watched);
            }
        }
    }))
}
