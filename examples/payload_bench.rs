//! Time per request of the gateway's own request-path steps, without the network: signature
//! check, body parsing and identity, on the bench harness's request shapes.
//!
//! ```sh
//! cargo run --release --example payload_bench            # built-in event and command bodies
//! cargo run --release --example payload_bench -- body.json [more files...]
//! # instructions per call, immune to a noisy host (SHA-256 runs without SHA-NI there):
//! PAYLOAD_BENCH_ITERS=2000 valgrind --tool=callgrind target/release/examples/payload_bench
//! callgrind_annotate --inclusive=yes callgrind.out.* | grep -E 'payload::parse|SigningKeys'
//! ```
//!
//! A companion to `bench/` (which measures the whole gateway against nginx): this isolates the
//! steps the gateway adds to a plain proxy, so a change to them can be measured without the
//! noise of a shared host.

use std::hint::black_box;
use std::time::Instant;

use slack_gateway::slack::payload::{self, ContentKind};
use slack_gateway::slack::signature::{self, SigningKeys};

const EVENT: &str = r#"{"token":"ZZZZZZWSxiZZZ2yIvs3peJ","team_id":"T0123456789","context_team_id":"T0123456789","context_enterprise_id":null,"api_app_id":"A0GATEWAY01","event":{"user":"U0IEQH524YN","type":"message","ts":"1795460735.991188","client_msg_id":"3328ad08-f0e6-8135-69d4-d0377c240d49","text":"check and the friday deploy the deploy staging friday numbers numbers numbers check before gateway gateway latency to deploy please to latency latency to check latency and numbers and the staging before latency numbers friday deploy check please friday latency please gateway latency please latency to check deploy the and numbers l","team":"T0123456789","blocks":[{"type":"rich_text","block_id":"wAwaI","elements":[{"type":"rich_text_section","elements":[{"type":"text","text":"check and the friday deploy the deploy staging friday numbers numbers numbers check before gateway gateway latency to deploy please to latency latency to check latency and numbers and the staging before latency numbers friday deploy check please friday latency please gateway latency please latency to check deploy the and numbers l"}]}]}],"channel":"C0G5BY1A2RO","event_ts":"1795460735.991188","channel_type":"channel"},"type":"event_callback","event_id":"Ev08V3BOL9L","event_time":1795460772,"authorizations":[{"enterprise_id":null,"team_id":"T0123456789","user_id":"U0F9QCEFB2A","is_bot":true,"is_enterprise_install":false}],"is_ext_shared_channel":false,"event_context":"4-WWrprhZNlwsekkqH8kQrPTsDSuFEhbtyvAYmqgq5UGn9MB0bobzjcU9kCTGR"}"#;
const COMMAND: &str = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0123456789&team_domain=example-t0123456789&enterprise_id=&enterprise_name=&channel_id=C018O72O7BZ&channel_name=general&user_id=U0U1DTINDTE&user_name=steve&command=%2Fgw&text=status+--verbose+please+%26+thanks&api_app_id=A0GATEWAY01&is_enterprise_install=false&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT0123456789%2F1%2Fabc&trigger_id=1.2.abc";

fn time(label: &str, iters: u32, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(iters));
    }
    println!("{label:<40} {best:>8.0} ns");
}

fn main() {
    let files: Vec<(String, Vec<u8>)> = std::env::args()
        .skip(1)
        .map(|p| (p.clone(), std::fs::read(&p).expect("readable file")))
        .collect();
    let mut bodies: Vec<(String, ContentKind, Vec<u8>)> = vec![
        ("event_callback".into(), ContentKind::Json, EVENT.into()),
        ("slash command".into(), ContentKind::Form, COMMAND.into()),
    ];
    for (name, b) in files {
        let kind = if b.first() == Some(&b'{') {
            ContentKind::Json
        } else {
            ContentKind::Form
        };
        bodies.push((name, kind, b));
    }
    let iters: u32 = std::env::var("PAYLOAD_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let secret = slack_gateway::secret::Secret::new("bench-signing-secret".to_owned());
    let keys = SigningKeys::new([&secret]);
    let now = 1_800_000_000u64;
    for (name, kind, body) in &bodies {
        println!("{name} ({} bytes)", body.len());
        let sig = signature::sign("bench-signing-secret", now, body);
        let ts = now.to_string();
        time("  verify signature", iters, || {
            black_box(
                keys.verify(
                    Some(ts.as_bytes()),
                    Some(sig.as_bytes()),
                    black_box(body),
                    now,
                )
                .expect("valid"),
            );
        });
        time("  parse (kind, action, identity)", iters, || {
            black_box(payload::parse(Some(*kind), black_box(body)).expect("parses"));
        });
    }
}
