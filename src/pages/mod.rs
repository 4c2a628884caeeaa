//! The install, success and failure pages: built-in, or the user's templates.
//!
//! Templates are HTML files with `{{name}}` placeholders; every value is HTML-escaped before it
//! is put in. They are read when a page is served, so an edited template shows at once. A
//! template that cannot be read falls back to the built-in page (and says so in the log).

pub mod install_link;

use std::path::Path;

use crate::http::escape_html;

/// Fills `{{name}}` placeholders with escaped values; unknown placeholders stay as they are.
/// One pass over the template: a value is put in as it is, never searched for placeholders
/// itself (a workspace named `{{slack_url}}` is shown as that name).
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let value = rest[2..].split_once("}}").and_then(|(name, _)| {
            let (_, value) = values.iter().find(|(n, _)| *n == name)?;
            Some((name.len(), value))
        });
        match value {
            Some((len, value)) => {
                out.push_str(&escape_html(value));
                rest = &rest[len + 4..];
            }
            // Not a placeholder here: the first brace is text, the search goes on after it.
            None => {
                out.push('{');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Renders the template at `path` if there is one and it can be read, else `builtin`.
pub async fn page(path: Option<&Path>, builtin: &str, values: &[(&str, &str)]) -> String {
    if let Some(p) = path {
        match tokio::fs::read_to_string(p).await {
            Ok(t) => return render(&t, values),
            Err(e) => {
                tracing::error!(template = %p.display(), error = %e, "cannot read page template; using the built-in page")
            }
        }
    }
    render(builtin, values)
}

const STYLE: &str = "body{font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#1d1c1d;line-height:1.5}\
a.button{display:inline-flex;align-items:center;gap:.5rem;padding:.6rem 1.1rem;border:1px solid #ddd;border-radius:6px;color:#1d1c1d;text-decoration:none;font-weight:600}\
a.button:hover{background:#f8f8f8}code{background:#f4f4f4;padding:.1rem .3rem;border-radius:3px}";

/// The built-in install page: one "Add to Slack" button.
pub fn install_builtin() -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Add to Slack</title><style>{STYLE}</style></head>
<body>
<h1>Install this app</h1>
<p>Add the app to your Slack workspace to get started.</p>
<p><a class="button" id="add-to-slack" href="{{{{authorize_url}}}}">Add to Slack</a></p>
</body></html>
"#
    )
}

/// The built-in success page: opens Slack on the new installation.
pub fn success_builtin() -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Installed</title><style>{STYLE}</style>
<meta http-equiv="refresh" content="0;url={{{{slack_url}}}}"></head>
<body>
<h1 id="installed">Thank you!</h1>
<p>The app is installed in <strong>{{{{team_name}}}}</strong>.</p>
<p><a class="button" id="open-slack" href="{{{{slack_url}}}}">Open Slack</a></p>
</body></html>
"#
    )
}

/// The built-in failure page.
pub fn failure_builtin() -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Installation failed</title><style>{STYLE}</style></head>
<body>
<h1 id="failed">Installation failed</h1>
<p>Slack did not complete the installation: <code id="reason">{{{{reason}}}}</code>.</p>
<p><a class="button" href="{{{{install_path}}}}">Try again</a></p>
</body></html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let out = render(
            "<p>{{reason}}</p>{{other}}",
            &[("reason", "<script>alert(1)</script>")],
        );
        assert_eq!(out, "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>{{other}}");
    }

    #[test]
    fn values_are_not_expanded_again() {
        let out = render(
            "<p>{{team_name}}</p><a href=\"{{slack_url}}\">{{reason}}</a>",
            &[
                ("team_name", "{{slack_url}} {{reason}}"),
                ("slack_url", "slack://app?team=T1&id=A1"),
                ("reason", "{{team_name}}"),
            ],
        );
        assert_eq!(
            out,
            "<p>{{slack_url}} {{reason}}</p><a href=\"slack://app?team=T1&amp;id=A1\">{{team_name}}</a>"
        );
        // Braces around or inside placeholders, unclosed ones, unknown names.
        let out = render(
            "{{{a}}} {{a}}} {{ a}} {{a {{b}} {{",
            &[("a", "1"), ("b", "{{a}}")],
        );
        assert_eq!(out, "{1} 1} {{ a}} {{a {{a}} {{");
    }

    #[test]
    fn builtin_pages_have_their_placeholders() {
        assert!(install_builtin().contains("{{authorize_url}}"));
        assert!(success_builtin().contains("{{slack_url}}"));
        assert!(failure_builtin().contains("{{reason}}"));
    }
}
