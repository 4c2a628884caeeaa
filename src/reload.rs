//! Configuration reload: read the file again, validate it whole, swap it in.
//!
//! Reload never makes things worse: an invalid file is logged with its reason and the old
//! config stays. Keys that cannot change while running ([`RESTART_ONLY`]) keep their old
//! values in the swapped config, with a warning, so nothing is half-applied.

use crate::config::{Config, ConfigError};
use crate::gateway::Gateway;

/// Keys whose change takes effect only on restart.
pub const RESTART_ONLY: [&str; 4] = [
    "server.listen",
    "server.admin_listen",
    "server.workers",
    "storage",
];

/// Reloads the config from the gateway's config path.
pub fn reload(gw: &Gateway) -> Result<(), ConfigError> {
    match Config::load(&gw.config_path) {
        Ok(new) => {
            let old = gw.live();
            let new = keep_restart_only(&old.config, new);
            gw.swap_config(new);
            gw.metrics.reload("success");
            tracing::info!(path = %gw.config_path.display(), "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            gw.metrics.reload("failure");
            tracing::error!(error = %e, "configuration reload failed; the previous configuration stays in force");
            Err(e)
        }
    }
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
    let storage_changed = old.storage.path != new.storage.path
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
