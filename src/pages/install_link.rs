//! The authorize URL and the built-in install page around a state, assembled once per config.
//!
//! Anyone may ask for the install page as often as they like, so serving it must cost little
//! more than a 404 (an install flood must not slow Slack's requests, defect 4 of issue 16):
//! everything but the state and the team hint is encoded and escaped here once, not on every
//! request. The result is byte for byte what the install flow's reference `authorize_url`
//! and rendering [`crate::pages::install_builtin`] give (tested in `oauth`, which owns that
//! reference).

use form_urlencoded::byte_serialize;

use crate::config::Config;
use crate::http::escape_html;
use crate::pages;

const PLACEHOLDER: &str = "{{authorize_url}}";

/// The live config's authorize URL and built-in install page, in pieces around the state.
pub struct InstallLink {
    /// `{authorize_url}?client_id=..&scope=..&user_scope=..&state=`
    head: String,
    /// `&redirect_uri=..`
    tail: String,
    /// The authorize URL's own `#fragment`, if it has one.
    end: String,
    /// The built-in page up to the state, the escaped head included.
    page_head: String,
    /// `tail`, escaped.
    page_tail: String,
    /// `end`, escaped, and the rest of the built-in page.
    page_end: String,
}

impl InstallLink {
    pub fn new(cfg: &Config) -> Self {
        let mut url = cfg.slack.authorize_url.clone();
        let end = url.fragment().map(|f| format!("#{f}")).unwrap_or_default();
        url.set_fragment(None);
        {
            // As crate::oauth::authorize_url appends them.
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &cfg.slack.client_id);
            if !cfg.oauth.scopes.is_empty() {
                q.append_pair("scope", &cfg.oauth.scopes.join(","));
            }
            if !cfg.oauth.user_scopes.is_empty() {
                q.append_pair("user_scope", &cfg.oauth.user_scopes.join(","));
            }
        }
        // client_id went first, so each later pair starts with '&'.
        let head = format!("{url}&state=");
        let tail = format!("&redirect_uri={}", encode(cfg.oauth.redirect_uri.as_str()));
        let builtin = pages::install_builtin();
        let (before, after) = builtin
            .split_once(PLACEHOLDER)
            .expect("the built-in install page links to Slack");
        debug_assert!(!after.contains(PLACEHOLDER));
        InstallLink {
            page_head: format!("{before}{}", escape_html(&head)),
            page_tail: escape_html(&tail),
            page_end: format!("{}{after}", escape_html(&end)),
            head,
            tail,
            end,
        }
    }

    /// The authorize URL for `state`, with the team hint when there is one.
    pub fn url(&self, state: &str, team: Option<&str>) -> String {
        let team = team_param(team);
        let state = encode(state);
        let mut u = String::with_capacity(
            self.head.len() + state.len() + self.tail.len() + team.len() + self.end.len(),
        );
        for piece in [&self.head, &state, &self.tail, &team, &self.end] {
            u.push_str(piece);
        }
        u
    }

    /// The built-in install page for `state`, with the team hint when there is one.
    pub fn page(&self, state: &str, team: Option<&str>) -> String {
        let team = escape_html(&team_param(team));
        let state = escape_html(&encode(state));
        let mut p = String::with_capacity(
            self.page_head.len()
                + state.len()
                + self.page_tail.len()
                + team.len()
                + self.page_end.len(),
        );
        for piece in [
            &self.page_head,
            &state,
            &self.page_tail,
            &team,
            &self.page_end,
        ] {
            p.push_str(piece);
        }
        p
    }
}

fn encode(s: &str) -> String {
    byte_serialize(s.as_bytes()).collect()
}

/// `&team=..`, or nothing for no or an empty hint.
fn team_param(team: Option<&str>) -> String {
    match team.filter(|t| !t.is_empty()) {
        Some(t) => format!("&team={}", encode(t)),
        None => String::new(),
    }
}
