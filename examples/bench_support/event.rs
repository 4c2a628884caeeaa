//! Realistic Events API callbacks for the benchmark tools (`event_load`, `socket_bench`),
//! shaped like the harness's `gen_signed.py` events: a `message` event with `blocks`, about
//! 1.5 KB, for a team of the seeded installations, and an `event_id` unique to this process
//! (`Ev` + a tag of the process + a counter), so queued delivery's dedupe never drops one.

use std::time::{SystemTime, UNIX_EPOCH};

/// The app id of the harness's and `bench_seed`'s installations.
pub const APP_ID: &str = "A0GATEWAY01";
/// The body's target size (the harness's event shape).
const TARGET_LEN: usize = 1500;
const WORDS: &[&str] = &[
    "deploy", "the", "gateway", "to", "staging", "and", "check", "the", "latency", "numbers",
    "before", "friday", "please",
];

/// The team ids of an installations file (the harness's format: a JSON list of objects with
/// `team_id`).
pub fn load_teams(path: &std::path::Path) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Inst {
        team_id: String,
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let list: Vec<Inst> =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if list.is_empty() {
        return Err(format!("{}: no installations", path.display()));
    }
    Ok(list.into_iter().map(|i| i.team_id).collect())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Makes event bodies: `body(n)` is the n-th, for team `n % teams`, with event id unique to
/// this generator (two generators made in the same process, or in two processes, get
/// different tags).
pub struct Events {
    teams: Vec<String>,
    tag: u32,
    text: String,
}

impl Events {
    pub fn new(teams: Vec<String>) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let tag = (nanos ^ (u64::from(std::process::id()) << 20)) as u32;
        let mut e = Events {
            teams,
            tag,
            text: String::new(),
        };
        // The text appears twice (text and blocks): pad it so the body is about TARGET_LEN.
        let base = e.body(0).len();
        let room = TARGET_LEN.saturating_sub(base) / 2;
        let mut text = String::new();
        let mut i = 0;
        while text.len() < room {
            text.push_str(WORDS[i % WORDS.len()]);
            text.push(' ');
            i += 1;
        }
        text.truncate(room);
        e.text = text.trim_end().to_owned();
        e
    }

    pub fn team(&self, n: u64) -> &str {
        &self.teams[(n % self.teams.len() as u64) as usize]
    }

    /// The n-th event's id.
    pub fn event_id(&self, n: u64) -> String {
        format!("Ev{:08X}{:08X}", self.tag, n)
    }

    /// The n-th event_callback body (JSON).
    pub fn body(&self, n: u64) -> String {
        let team = self.team(n);
        let now = unix_now();
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let user = format!("U0{:09X}", h & 0xF_FFFF_FFFF);
        let channel = format!("C0{:09X}", (h >> 20) & 0xF_FFFF_FFFF);
        let ts = format!("{now}.{:06}", n % 1_000_000);
        let text = &self.text;
        format!(
            concat!(
                r#"{{"token":"ZZZZZZWSxiZZZ2yIvs3peJ","team_id":"{team}","context_team_id":"{team}","#,
                r#""context_enterprise_id":null,"api_app_id":"{app}","event":{{"user":"{user}","#,
                r#""type":"message","ts":"{ts}","client_msg_id":"{h:016x}-{n:08x}","text":"{text}","#,
                r#""team":"{team}","blocks":[{{"type":"rich_text","block_id":"bL{n:x}","#,
                r#""elements":[{{"type":"rich_text_section","elements":[{{"type":"text","text":"{text}"}}]}}]}}],"#,
                r#""channel":"{channel}","event_ts":"{ts}","channel_type":"channel"}},"#,
                r#""type":"event_callback","event_id":"{eid}","event_time":{now},"#,
                r#""authorizations":[{{"enterprise_id":null,"team_id":"{team}","user_id":"U0BENCHBOT","#,
                r#""is_bot":true,"is_enterprise_install":false}}],"is_ext_shared_channel":false,"#,
                r#""event_context":"4-eyJldCI6Im1lc3NhZ2UiLCJ0aWQiOiJUMDAwMDAwMDEiLCJhaWQiOiJBMEdBVEVXQVkwMSJ9"}}"#
            ),
            team = team,
            app = APP_ID,
            user = user,
            ts = ts,
            h = h,
            n = n,
            text = text,
            channel = channel,
            eid = self.event_id(n),
            now = now,
        )
    }
}

/// Latency percentiles of a sample (µs), and the line the bench scripts parse.
pub struct Summary {
    pub count: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Summary {
    pub fn of(mut lat_us: Vec<u64>) -> Summary {
        lat_us.sort_unstable();
        let pick = |q: f64| -> u64 {
            if lat_us.is_empty() {
                return 0;
            }
            // Nearest rank.
            let rank = ((q * lat_us.len() as f64).ceil() as usize).clamp(1, lat_us.len());
            lat_us[rank - 1]
        };
        Summary {
            count: lat_us.len(),
            p50: pick(0.50),
            p90: pick(0.90),
            p99: pick(0.99),
            p999: pick(0.999),
            max: lat_us.last().copied().unwrap_or(0),
        }
    }

    pub fn fields(&self) -> String {
        format!(
            "latencies={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
            self.count, self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}
