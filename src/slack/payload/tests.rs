//! Identity resolution for every payload shape Slack documents.

use super::*;

fn json(body: &str) -> Parsed {
    parse(Some(ContentKind::Json), body.as_bytes()).unwrap()
}

fn form(body: &str) -> Parsed {
    parse(Some(ContentKind::Form), body.as_bytes()).unwrap()
}

fn interactive(payload: &str) -> Parsed {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", payload)
        .finish();
    form(&body)
}

fn id(e: Option<&str>, t: Option<&str>, u: Option<&str>, org: bool) -> Identity {
    Identity {
        enterprise_id: e.map(Into::into),
        team_id: t.map(Into::into),
        user_id: u.map(Into::into),
        is_enterprise_install: org,
    }
}

#[test]
fn content_types_are_classified_by_media_type() {
    assert_eq!(
        content_kind(Some(b"application/json"), b"{}"),
        Some(ContentKind::Json)
    );
    assert_eq!(
        content_kind(Some(b"Application/JSON; charset=utf-8"), b"{}"),
        Some(ContentKind::Json)
    );
    assert_eq!(
        content_kind(Some(b"application/x-www-form-urlencoded"), b"{}"),
        Some(ContentKind::Form)
    );
    assert_eq!(content_kind(Some(b"text/plain"), b"{}"), None);
    assert_eq!(
        content_kind(Some(b"multipart/form-data; boundary=x"), b"{}"),
        None
    );
    // Without a Content-Type, the body decides.
    assert_eq!(
        content_kind(None, b"{\"type\":\"x\"}"),
        Some(ContentKind::Json)
    );
    assert_eq!(content_kind(None, b"command=%2Fx"), Some(ContentKind::Form));
    assert_eq!(content_kind(None, b""), Some(ContentKind::Form));
    assert_eq!(
        parse(None, b"{}"),
        Err(PayloadError::UnsupportedContentType)
    );
}

#[test]
fn event_callback_uses_authorizations_first() {
    let p = json(
        r#"{"token":"x","team_id":"T_TOP","enterprise_id":"E_TOP","api_app_id":"A1",
            "event":{"type":"app_mention","user":"U1","text":"hi"},
            "type":"event_callback","event_id":"Ev1","event_time":1,
            "authorizations":[{"enterprise_id":"E1","team_id":"T1","user_id":"UBOT","is_bot":true,"is_enterprise_install":false}]}"#,
    );
    assert_eq!(p.kind, "event_callback");
    assert_eq!(p.action, Action::Forward);
    assert_eq!(p.identity, id(Some("E1"), Some("T1"), Some("U1"), false));
}

#[test]
fn null_enterprise_in_authorizations_wins_over_top_level() {
    // Slack Connect: the top level names the other org; the installation is ours.
    let p = json(
        r#"{"type":"event_callback","team_id":"T_OTHER","enterprise_id":"E_OTHER",
            "event":{"type":"message","user":"U9"},
            "authorizations":[{"enterprise_id":null,"team_id":"T1","user_id":"UB","is_bot":true,"is_enterprise_install":false}]}"#,
    );
    assert_eq!(p.identity, id(None, Some("T1"), Some("U9"), false));
}

#[test]
fn org_wide_event_is_an_enterprise_install() {
    let p = json(
        r#"{"type":"event_callback","team_id":"T1","enterprise_id":"E1","event":{"type":"app_home_opened","user":"U1"},
            "authorizations":[{"enterprise_id":"E1","team_id":null,"user_id":"UB","is_bot":true,"is_enterprise_install":true}]}"#,
    );
    assert_eq!(p.identity, id(Some("E1"), None, Some("U1"), true));
}

#[test]
fn event_without_authorizations_uses_top_level_ids() {
    let p = json(
        r#"{"type":"event_callback","team_id":"T1","event":{"type":"reaction_added","user":{"id":"U2"}}}"#,
    );
    assert_eq!(p.identity, id(None, Some("T1"), Some("U2"), false));
}

#[test]
fn url_verification_is_answered_locally() {
    let p = json(
        r#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#,
    );
    assert_eq!(
        p.action,
        Action::UrlVerification {
            challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P".into()
        }
    );
}

#[test]
fn app_uninstalled_and_tokens_revoked_are_recognized() {
    let p = json(r#"{"type":"event_callback","team_id":"T1","event":{"type":"app_uninstalled"}}"#);
    assert_eq!(p.action, Action::Uninstalled);
    let p = json(
        r#"{"type":"event_callback","team_id":"T1","event":{"type":"tokens_revoked","tokens":{"oauth":["U1","U2"],"bot":["UB"]}}}"#,
    );
    assert_eq!(
        p.action,
        Action::TokensRevoked {
            user_ids: vec!["U1".into(), "U2".into()],
            bot_user_ids: vec!["UB".into()]
        }
    );
    let p = json(
        r#"{"type":"event_callback","team_id":"T1","event":{"type":"tokens_revoked","tokens":{"oauth":["U1"]}}}"#,
    );
    assert_eq!(
        p.action,
        Action::TokensRevoked {
            user_ids: vec!["U1".into()],
            bot_user_ids: vec![]
        }
    );
}

#[test]
fn slash_command_form() {
    let p = form("token=x&team_id=T1&team_domain=acme&enterprise_id=E1&channel_id=C1&user_id=U1&command=%2Fhello&text=hi&is_enterprise_install=false");
    assert_eq!(p.kind, "slash_command");
    assert_eq!(p.identity, id(Some("E1"), Some("T1"), Some("U1"), false));
}

#[test]
fn slash_command_is_enterprise_install_is_a_string() {
    let p = form("team_id=T1&enterprise_id=E1&user_id=U1&command=%2Fx&is_enterprise_install=true");
    assert!(p.identity.is_enterprise_install);
    let p = form("team_id=T1&enterprise_id=E1&user_id=U1&command=%2Fx&is_enterprise_install=True");
    assert!(
        !p.identity.is_enterprise_install,
        "only the exact string true counts"
    );
}

#[test]
fn slash_command_whose_text_is_payload_stays_a_slash_command() {
    let p = form("team_id=T1&user_id=U1&command=%2Fx&text=payload");
    assert_eq!(p.kind, "slash_command");
    let p = form("team_id=T1&user_id=U1&command=%2Fx&text=payload%3D%7B%22team%22%3A%7B%22id%22%3A%22T_EVIL%22%7D%7D");
    assert_eq!(p.kind, "slash_command");
    assert_eq!(p.identity.team_id.as_deref(), Some("T1"));
}

#[test]
fn repeated_form_keys_are_refused() {
    assert_eq!(
        parse(
            Some(ContentKind::Form),
            b"team_id=T1&team_id=T2&command=%2Fx"
        ),
        Err(PayloadError::MalformedForm)
    );
}

#[test]
fn block_actions_from_an_org_wide_install_with_null_team() {
    let p = interactive(
        r#"{"type":"block_actions","team":null,"user":{"id":"U1","username":"u","team_id":"T9"},
            "enterprise":{"id":"E1","name":"Org"},"is_enterprise_install":true,"api_app_id":"A1","actions":[]}"#,
    );
    assert_eq!(p.kind, "block_actions");
    assert_eq!(p.identity, id(Some("E1"), Some("T9"), Some("U1"), true));
}

#[test]
fn view_submission_prefers_app_installed_team_id() {
    let p = interactive(
        r#"{"type":"view_submission","team":{"id":"T_USER","domain":"x"},"user":{"id":"U1","team_id":"T_USER"},
            "view":{"id":"V1","team_id":"T_USER","app_installed_team_id":"T_APP"},"enterprise":null,"is_enterprise_install":false}"#,
    );
    assert_eq!(p.identity, id(None, Some("T_APP"), Some("U1"), false));
}

#[test]
fn view_submission_from_org_wide_install() {
    let p = interactive(
        r#"{"type":"view_submission","team":null,"user":{"id":"U1","team_id":"T2"},
            "view":{"id":"V1","team_id":"T2","app_installed_team_id":"E1"},
            "enterprise":{"id":"E1"},"is_enterprise_install":true}"#,
    );
    assert_eq!(p.identity.enterprise_id.as_deref(), Some("E1"));
    assert!(p.identity.is_enterprise_install);
}

#[test]
fn shortcuts_message_actions_and_options() {
    let p = interactive(
        r#"{"type":"shortcut","team":{"id":"T1","domain":"acme"},"user":{"id":"U1","team_id":"T1"},"callback_id":"c","trigger_id":"t"}"#,
    );
    assert_eq!(
        (p.kind.as_ref(), p.identity.clone()),
        ("shortcut", id(None, Some("T1"), Some("U1"), false))
    );
    let p = interactive(
        r#"{"type":"message_action","team":{"id":"T1","enterprise_id":"E1"},"user":{"id":"U1"},"channel":{"id":"C1"}}"#,
    );
    assert_eq!(p.identity, id(Some("E1"), Some("T1"), Some("U1"), false));
    let p = interactive(
        r#"{"type":"block_suggestion","team":{"id":"T1"},"user":{"id":"U1"},"enterprise":"E1","value":"q"}"#,
    );
    assert_eq!(p.identity, id(Some("E1"), Some("T1"), Some("U1"), false));
    let p = interactive(
        r#"{"type":"dialog_suggestion","team":{"id":"T1"},"user":{"id":"U1"},"value":"q"}"#,
    );
    assert_eq!(p.identity, id(None, Some("T1"), Some("U1"), false));
    let p = interactive(
        r#"{"type":"interactive_message","team":{"id":"T1"},"user":{"id":"U1"},"actions":[]}"#,
    );
    assert_eq!(p.kind, "interactive_message");
}

#[test]
fn interactive_payload_cannot_ask_for_a_challenge() {
    let p = interactive(r#"{"type":"url_verification","challenge":"x"}"#);
    assert_eq!(p.action, Action::Forward);
}

#[test]
fn ssl_check_needs_the_exact_field() {
    assert!(is_ssl_check(
        Some(ContentKind::Form),
        b"ssl_check=1&token=x"
    ));
    assert!(!is_ssl_check(Some(ContentKind::Form), b"ssl_check=true"));
    assert!(!is_ssl_check(
        Some(ContentKind::Form),
        b"text=ssl_check%3D1&command=%2Fx"
    ));
    assert!(!is_ssl_check(
        Some(ContentKind::Json),
        br#"{"ssl_check":"1"}"#
    ));
    assert!(!is_ssl_check(None, b"ssl_check=1"));
    assert_eq!(form("ssl_check=1&token=x").action, Action::SslCheck);
}

#[test]
fn malformed_bodies_are_refused_not_panicked_on() {
    for body in [
        "",
        "{",
        "[]",
        "null",
        "{\"type\": 1}",
        "{\"team\": {\"id\": 5}}",
        "{} trailing",
        "{\"authorizations\": {}}",
    ] {
        assert!(
            matches!(
                parse(Some(ContentKind::Json), body.as_bytes()),
                Err(PayloadError::MalformedJson(_))
            ),
            "{body:?} should be malformed"
        );
    }
    assert!(matches!(
        parse(Some(ContentKind::Form), b"payload=%7Bnot-json"),
        Err(PayloadError::MalformedPayload(_))
    ));
    assert_eq!(
        parse(Some(ContentKind::Form), b"a=%FF%FE"),
        Ok(Parsed {
            kind: "form".into(),
            action: Action::Forward,
            identity: Identity::default()
        }),
        "invalid percent-encoded UTF-8 is replaced, not a panic"
    );
    assert_eq!(
        parse(Some(ContentKind::Form), &[0xff, 0xfe]),
        Err(PayloadError::MalformedForm)
    );
}

#[test]
fn duplicate_json_fields_are_refused() {
    assert!(parse(
        Some(ContentKind::Json),
        br#"{"team_id":"T1","team_id":"T2"}"#
    )
    .is_err());
}

#[test]
fn json_bodies_must_be_utf8_anywhere_but_any_utf8_text_is_fine() {
    // Non-ASCII text and escapes in fields the gateway does not read.
    let p = json(
        r#"{"type":"event_callback","team_id":"T1","event":{"type":"message","text":"héllo 😀 \u00e9 \"q\""}}"#,
    );
    assert_eq!(p.identity.team_id.as_deref(), Some("T1"));
    // An invalid byte, even inside a field the gateway skips, makes the body malformed JSON.
    let mut bad = br#"{"type":"event_callback","team_id":"T1","event":{"text":"x"#.to_vec();
    bad.extend_from_slice(&[0xff, 0xfe]);
    bad.extend_from_slice(br#""}}"#);
    match parse(Some(ContentKind::Json), &bad) {
        Err(PayloadError::MalformedJson(reason)) => assert!(reason.contains("UTF-8"), "{reason}"),
        other => panic!("expected MalformedJson, got {other:?}"),
    }
}

#[test]
fn form_keys_and_values_are_decoded_like_any_form() {
    // Keys are compared decoded, so an encoded key is the same field (and a repeat of it).
    let p = form("team%5Fid=T1&user+id=U9&user_id=U%31&command=%2Fx+y&=empty&novalue&&");
    assert_eq!(p.identity, id(None, Some("T1"), Some("U1"), false));
    assert_eq!(
        parse(Some(ContentKind::Form), b"team_id=T1&team%5Fid=T2"),
        Err(PayloadError::MalformedForm)
    );
    // A key without `=` is a field with an empty value.
    let p = form("team_id&user_id=U1&command=%2Fx");
    assert_eq!(p.identity.team_id, None);
}

#[test]
fn json_strings_with_escapes_are_decoded() {
    let p = json(
        r#"{"type":"event_callback","team_id":"T\u0031","event":{"type":"message","user":"U\u0032"},
            "authorizations":[{"enterprise_id":null,"team_id":"T\u0031"},{"team_id":7},"not an object"]}"#,
    );
    assert_eq!(p.identity, id(None, Some("T1"), Some("U2"), false));
    // Only the first authorization is read; the others need only be valid JSON.
    let bad = r#"{"type":"event_callback","authorizations":[{"team_id":"T1"},{"team_id":}]}"#;
    assert!(matches!(
        parse(Some(ContentKind::Json), bad.as_bytes()),
        Err(PayloadError::MalformedJson(_))
    ));
}
