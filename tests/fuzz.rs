//! Property-based fuzzing of everything that reads untrusted input: body parsers, identity
//! resolution, signature headers, config loading, return paths, cookies, import lines.
//!
//! The stable toolchain here has no libFuzzer instrumentation (cargo-fuzz needs nightly), so
//! these are proptest properties. CI runs the default case count; a longer run is
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz`. Failing cases proptest finds are
//! kept in `tests/fuzz.proptest-regressions` (the corpus) and replayed first on every run;
//! each finding also got a named regression test at the bottom of this file.

use proptest::prelude::*;
use slack_gateway::secret::Secret;
use slack_gateway::slack::payload::{self, ContentKind};
use slack_gateway::slack::signature;

/// JSON values shaped like Slack payloads: the keys identity resolution reads, with values
/// of every type, nested.
fn slack_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        "[A-Z0-9]{0,12}".prop_map(serde_json::Value::String),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("type".to_owned()),
            Just("team".to_owned()),
            Just("team_id".to_owned()),
            Just("enterprise".to_owned()),
            Just("enterprise_id".to_owned()),
            Just("user".to_owned()),
            Just("user_id".to_owned()),
            Just("view".to_owned()),
            Just("app_installed_team_id".to_owned()),
            Just("authorizations".to_owned()),
            Just("is_enterprise_install".to_owned()),
            Just("event".to_owned()),
            Just("tokens".to_owned()),
            Just("oauth".to_owned()),
            Just("bot".to_owned()),
            Just("challenge".to_owned()),
            Just("id".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn json_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = payload::parse(Some(ContentKind::Json), &body);
    }

    #[test]
    fn form_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = payload::parse(Some(ContentKind::Form), &body);
        let _ = payload::is_ssl_check(Some(ContentKind::Form), &body);
    }

    #[test]
    fn form_text_never_panics(body in "[a-z_=&%0-9A-F+.{}\":]{0,200}") {
        let _ = payload::parse(Some(ContentKind::Form), body.as_bytes());
    }

    #[test]
    fn slack_shaped_json_resolves_or_refuses(v in slack_json()) {
        let text = v.to_string();
        let _ = payload::parse(Some(ContentKind::Json), text.as_bytes());
        // The same as an interactivity payload.
        let form: String = form_urlencoded::Serializer::new(String::new()).append_pair("payload", &text).finish();
        let _ = payload::parse(Some(ContentKind::Form), form.as_bytes());
    }

    #[test]
    fn identity_ids_are_never_empty_strings(v in slack_json()) {
        if let Ok(p) = payload::parse(Some(ContentKind::Json), v.to_string().as_bytes()) {
            let id = p.identity;
            prop_assert!(id.team_id.as_deref() != Some(""));
            prop_assert!(id.enterprise_id.as_deref() != Some(""));
            prop_assert!(id.user_id.as_deref() != Some(""));
        }
    }

    #[test]
    fn signature_headers_never_panic(
        ts in prop::option::of(prop::collection::vec(any::<u8>(), 0..24)),
        sig in prop::option::of(prop::collection::vec(any::<u8>(), 0..80)),
        body in prop::collection::vec(any::<u8>(), 0..64),
        now in any::<u64>(),
    ) {
        let secrets = [Secret::new("s")];
        let _ = signature::verify(&secrets, ts.as_deref(), sig.as_deref(), &body, now);
    }

    #[test]
    fn a_signed_body_verifies_and_a_changed_one_does_not(
        body in prop::collection::vec(any::<u8>(), 0..256),
        ts in 1_000_000_000u64..4_000_000_000,
        skew in 0u64..=300,
        flip in any::<prop::sample::Index>(),
    ) {
        let secrets = [Secret::new("the-secret")];
        let sig = signature::sign("the-secret", ts, &body);
        let ts_s = ts.to_string();
        prop_assert!(signature::verify(&secrets, Some(ts_s.as_bytes()), Some(sig.as_bytes()), &body, ts + skew).is_ok());
        if !body.is_empty() {
            let mut changed = body.clone();
            let i = flip.index(changed.len());
            changed[i] ^= 0x01;
            prop_assert!(signature::verify(&secrets, Some(ts_s.as_bytes()), Some(sig.as_bytes()), &changed, ts).is_err());
        }
    }

    #[test]
    fn config_loading_never_panics(text in any::<String>()) {
        let _ = slack_gateway::config::Config::from_toml(&text, std::path::Path::new("/x/gateway.toml"), &|_| None);
    }

    #[test]
    fn mutated_configs_never_panic(pos in any::<prop::sample::Index>(), junk in "[\\[\\]={}\"'$,.a-z0-9 \n-]{0,12}") {
        let base = include_str!("../gateway.toml");
        let at = pos.index(base.len());
        let at = (0..=at).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
        let text = format!("{}{}{}", &base[..at], junk, &base[at..]);
        let _ = slack_gateway::config::Config::from_toml(&text, std::path::Path::new("/x/gateway.toml"), &|_| None);
    }

    #[test]
    fn accepted_return_paths_stay_on_the_site(p in "[/\\\\a-z.:%0-9A-F\t@?#]{0,24}") {
        if let Some(ok) = slack_gateway::signin::safe_return_path(&p) {
            let base = url::Url::parse("https://gw.example.com/").unwrap();
            let to = base.join(ok).unwrap();
            prop_assert_eq!(to.host_str(), Some("gw.example.com"), "{} escaped", ok);
        }
    }

    #[test]
    fn import_lines_never_panic(line in any::<String>()) {
        let _ = slack_gateway::transfer::parse_line(&line);
    }

    #[test]
    fn folded_header_variants_always_match(mask in any::<u64>()) {
        use slack_gateway::http::headers::StripSet;
        let set = StripSet::new([&http::HeaderName::from_static("x-slack-bot-token")]);
        let variant: String = "x-slack-bot-token"
            .chars()
            .enumerate()
            .map(|(i, c)| match (c, mask >> (i % 64) & 1) {
                ('-', 1) => '_',
                (c, 1) => c.to_ascii_uppercase(),
                (c, _) => c,
            })
            .collect();
        let name = http::HeaderName::from_bytes(variant.as_bytes()).unwrap();
        prop_assert!(set.matches(name.as_str().as_bytes()), "{} not stripped", variant);
        // As the lane sees it: the raw name, in the client's case.
        prop_assert!(set.matches(variant.as_bytes()), "{} not stripped raw", variant);
    }
}
