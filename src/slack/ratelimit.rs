//! Slack's rate limits as the Web API egress keeps them: after a 429 with `Retry-After`, a
//! method is held for a workspace until that time passes (Slack limits each method per
//! workspace, so other workspaces and methods are never held).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Holds are swept when the map grows past this many.
const SWEEP_AT: usize = 1024;

/// `(workspace, method)` → held until.
#[derive(Default)]
pub struct Holds {
    until: Mutex<HashMap<(String, String), Instant>>,
}

impl Holds {
    /// How long a call of `method` for `team` must still wait at `now`, if it is held.
    pub fn remaining(&self, team: &str, method: &str, now: Instant) -> Option<Duration> {
        let map = self.until.lock().expect("holds lock");
        let until = map.get(&(team.to_owned(), method.to_owned()))?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// Holds `method` for `team` until `until` (a later hold already there stays).
    pub fn hold(&self, team: &str, method: &str, until: Instant) {
        let mut map = self.until.lock().expect("holds lock");
        if map.len() >= SWEEP_AT {
            let now = Instant::now();
            map.retain(|_, u| *u > now);
        }
        let entry = map
            .entry((team.to_owned(), method.to_owned()))
            .or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// `Retry-After` as Slack sends it: whole seconds. Anything else counts as one second.
pub fn retry_after(value: Option<&http::HeaderValue>) -> Duration {
    let secs = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.min(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_is_per_workspace_and_method_and_ends() {
        let h = Holds::default();
        let now = Instant::now();
        h.hold("T1", "chat.postMessage", now + Duration::from_secs(3));
        assert_eq!(
            h.remaining("T1", "chat.postMessage", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(h.remaining("T2", "chat.postMessage", now), None);
        assert_eq!(h.remaining("T1", "conversations.list", now), None);
        assert_eq!(
            h.remaining("T1", "chat.postMessage", now + Duration::from_secs(3)),
            None
        );
        h.hold("T1", "chat.postMessage", now + Duration::from_secs(1));
        assert!(h.remaining("T1", "chat.postMessage", now).unwrap() > Duration::from_secs(2));
        assert_eq!(
            retry_after(Some(&http::HeaderValue::from_static("7"))),
            Duration::from_secs(7)
        );
        assert_eq!(retry_after(None), Duration::from_secs(1));
    }
}
