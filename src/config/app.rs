//! `[app]`: the Slack app's own settings, from which `slack-gateway manifest` writes an app
//! manifest, checked against Slack's limits; and the [`LIFECYCLE_EVENTS`] the manifest always
//! subscribes to.

use serde::Serialize;

use super::cx::{Cx, R};
use super::raw;

/// Events the gateway itself needs: it deletes installations on them (see [`crate::proxy`]).
/// Both are subscribable Events API events that need no scope.
pub const LIFECYCLE_EVENTS: [&str; 2] = ["app_uninstalled", "tokens_revoked"];

/// Longest app name Slack accepts in a manifest (`display_information.name`).
pub const MAX_APP_NAME: usize = 35;
/// Longest short description Slack accepts (`display_information.description`).
pub const MAX_APP_DESCRIPTION: usize = 140;
/// Longest slash command, leading `/` included.
pub const MAX_COMMAND: usize = 32;
/// Most event types Slack accepts in `bot_events`.
pub const MAX_BOT_EVENTS: usize = 100;
/// The app name when `app.name` is not set.
pub const DEFAULT_APP_NAME: &str = "slack-gateway app";

/// `[app]`: the Slack app's own settings, from which `slack-gateway manifest` writes an app
/// manifest. The gateway itself never reads them.
#[derive(Debug, Clone, Serialize)]
pub struct AppConfig {
    pub name: String,
    pub description: Option<String>,
    /// Explicit `bot_events`; `None` lets the manifest derive them from the bot scopes.
    pub bot_events: Option<Vec<String>>,
    pub commands: Vec<SlashCommand>,
    pub token_rotation: bool,
    pub org_deploy: bool,
}

/// A slash command of the app (`[[app.commands]]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlashCommand {
    pub command: String,
    pub description: String,
    pub usage_hint: Option<String>,
}

impl Cx<'_> {
    /// `[app]`, checked against Slack's manifest limits and against the scopes and paths it
    /// needs, so that `slack-gateway manifest` never prints a manifest Slack refuses.
    pub(super) fn app(
        &mut self,
        a: &raw::RawApp,
        scopes: &[String],
        slack_paths: &[String],
    ) -> R<AppConfig> {
        let name = self.string_or("app.name", &a.name, DEFAULT_APP_NAME)?;
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_APP_NAME {
            return Err(self.err(
                "app.name",
                a.name.as_ref(),
                format!("must be 1 to {MAX_APP_NAME} characters (Slack's limit for an app name)"),
            ));
        }
        let description = self
            .string("app.description", &a.description)?
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_APP_DESCRIPTION)
        {
            return Err(self.err(
                "app.description",
                a.description.as_ref(),
                format!("must be at most {MAX_APP_DESCRIPTION} characters (Slack's limit for a short description)"),
            ));
        }

        let bot_events = match &a.bot_events {
            None => None,
            Some(list) => {
                let events = self.strings("app.bot_events", &a.bot_events)?;
                for (e, at) in events.iter().zip(list) {
                    let valid = e.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.')
                    });
                    if !valid {
                        return Err(self.err(
                            "app.bot_events",
                            Some(at),
                            format!(
                                "`{e}` is not an event type like \"app_mention\" or \"message.im\""
                            ),
                        ));
                    }
                }
                let added = LIFECYCLE_EVENTS
                    .iter()
                    .filter(|l| !events.iter().any(|e| e == *l))
                    .count();
                if events.len() + added > MAX_BOT_EVENTS {
                    return Err(self.err(
                        "app.bot_events",
                        list.first(),
                        format!("at most {MAX_BOT_EVENTS} event types, app_uninstalled and tokens_revoked included (the manifest always subscribes to those)"),
                    ));
                }
                if !events.is_empty() && scopes.is_empty() {
                    return Err(self.err(
                        "app.bot_events",
                        list.first(),
                        "bot events need a bot user: set oauth.scopes",
                    ));
                }
                Some(events)
            }
        };

        let mut commands: Vec<SlashCommand> = Vec::new();
        for entry in a.commands.iter().flatten() {
            let at = entry.span().start;
            let c = entry.get_ref();
            let command = self
                .string("app.commands.command", &c.command)?
                .unwrap_or_default();
            let valid = command.starts_with('/')
                && command.len() > 1
                && command.chars().count() <= MAX_COMMAND
                && !command.chars().any(char::is_whitespace);
            if !valid {
                let message = format!(
                    "`{command}` must start with `/`, have no spaces and be at most {MAX_COMMAND} characters, like \"/deploy\""
                );
                return Err(match &c.command {
                    Some(s) => self.err("app.commands.command", Some(s), message),
                    None => {
                        self.err_at("app.commands.command", at, "must be set, like \"/deploy\"")
                    }
                });
            }
            if commands
                .iter()
                .any(|o| o.command.eq_ignore_ascii_case(&command))
            {
                return Err(self.err(
                    "app.commands.command",
                    c.command.as_ref(),
                    format!("`{command}` is listed twice"),
                ));
            }
            let description = self
                .string("app.commands.description", &c.description)?
                .map(|d| d.trim().to_owned())
                .unwrap_or_default();
            if description.is_empty() || description.chars().count() > 2000 {
                return Err(match &c.description {
                    Some(s) => self.err(
                        "app.commands.description",
                        Some(s),
                        format!("{command}: must be 1 to 2000 characters"),
                    ),
                    None => self.err_at(
                        "app.commands.description",
                        at,
                        format!("{command}: must be set (Slack shows it in the command menu)"),
                    ),
                });
            }
            let usage_hint = self
                .string("app.commands.usage_hint", &c.usage_hint)?
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty());
            if usage_hint
                .as_ref()
                .is_some_and(|h| h.chars().count() > 1000)
            {
                return Err(self.err(
                    "app.commands.usage_hint",
                    c.usage_hint.as_ref(),
                    format!("{command}: must be at most 1000 characters"),
                ));
            }
            commands.push(SlashCommand {
                command,
                description,
                usage_hint,
            });
        }
        if let Some(first) = a.commands.iter().flatten().next() {
            if !scopes.iter().any(|s| s == "commands") {
                return Err(self.err_at(
                    "app.commands",
                    first.span().start,
                    "slash commands need the `commands` bot scope: add it to oauth.scopes",
                ));
            }
            if slack_paths.is_empty() {
                return Err(self.err_at(
                    "app.commands",
                    first.span().start,
                    "slash commands need a request URL: set upstream.slack_paths",
                ));
            }
        }

        Ok(AppConfig {
            name,
            description,
            bot_events,
            commands,
            token_rotation: a.token_rotation.unwrap_or(false),
            org_deploy: a.org_deploy.unwrap_or(false),
        })
    }
}
