//! Request paths: the normalised form in which a browser request's path is matched and
//! forwarded, and the key under which every spelling of one path compares equal (how the
//! gateway tells that a path is one of Slack's, however it is written).

/// `path` with its dot segments resolved (`.` and `..`, also written with `%2e`) and repeated
/// slashes collapsed (RFC 3986 §5.2.4): the one form in which the gateway matches a browser
/// request's path and forwards it, so the upstream sees the path that was matched. A path
/// that is not origin-form (`*`) is returned as it is.
pub fn normalize_path(path: &str) -> std::borrow::Cow<'_, str> {
    let Some(rest) = path.strip_prefix('/') else {
        return path.into();
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in rest.split('/') {
        trailing = true;
        match seg.to_ascii_lowercase().as_str() {
            "" | "." | "%2e" => {}
            ".." | ".%2e" | "%2e." | "%2e%2e" => {
                kept.pop();
            }
            _ => {
                trailing = false;
                kept.push(seg);
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &kept {
        out.push('/');
        out.push_str(seg);
    }
    if trailing || kept.is_empty() {
        out.push('/');
    }
    if out == path {
        path.into()
    } else {
        out.into()
    }
}

/// The form in which two spellings of one path compare equal however an upstream stack may
/// read them: percent-decoded, `\` as `/`, `;parameters` dropped from each segment, dot
/// segments and repeated slashes resolved, lowercase, without a trailing slash.
pub fn path_key(path: &str) -> String {
    let decoded = percent_decode(path.as_bytes());
    let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let joined = decoded
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/");
    let mut key = normalize_path(&joined).to_lowercase();
    while key.len() > 1 && key.ends_with('/') {
        key.pop();
    }
    key
}

/// True when `key` is `base` or lies under it (both [`path_key`]s).
pub fn key_covers(base: &str, key: &str) -> bool {
    base == "/"
        || key == base
        || (key.starts_with(base) && key.as_bytes().get(base.len()) == Some(&b'/'))
}

/// `%XX` escapes decoded, again while any remain (`%252e` reads as `.` to a stack that
/// decodes twice); invalid escapes are kept as they are.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut cur = bytes.to_vec();
    // Each round that changes anything shortens the input: a few rounds suffice.
    for _ in 0..4 {
        let mut out = Vec::with_capacity(cur.len());
        let mut i = 0;
        while i < cur.len() {
            if cur[i] == b'%' && i + 2 < cur.len() {
                if let (Some(h), Some(l)) = (hex(cur[i + 1]), hex(cur[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
            }
            out.push(cur[i]);
            i += 1;
        }
        if out.len() == cur.len() {
            break;
        }
        cur = out;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::{key_covers, normalize_path, path_key};

    #[test]
    fn paths_are_normalised_as_rfc_3986_resolves_them() {
        for (raw, want) in [
            ("/", "/"),
            ("/app", "/app"),
            ("/app/", "/app/"),
            ("/slack//events", "/slack/events"),
            ("//slack/events", "/slack/events"),
            ("/slack/events/.", "/slack/events/"),
            ("/app/../slack/events", "/slack/events"),
            ("/app/%2e%2E/slack/events", "/slack/events"),
            ("/a/./b/../../..", "/"),
            ("/a%2fb", "/a%2fb"),
            ("*", "*"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw}");
        }
    }

    #[test]
    fn every_spelling_of_a_path_has_one_key() {
        let key = path_key("/slack/events");
        for spelling in [
            "/SLACK/EVENTS",
            "/slack/events/",
            "/Slack/Events/",
            "/slack/events/.",
            "/slack//events",
            "/slack/%65vents",
            "/slack/%2565vents",
            "/app/..%2fslack/events",
            "/slack\\events",
            "/slack/events;jsessionid=1",
        ] {
            assert_eq!(path_key(spelling), key, "{spelling}");
        }
        assert_eq!(path_key("/"), "/");
        assert!(key_covers(&path_key("/slack"), &key));
        assert!(key_covers("/", &key));
        assert!(key_covers(&key, &path_key("/slack/events/x")));
        assert!(!key_covers(&key, &path_key("/slack/eventsx")));
        assert!(!key_covers(&path_key("/app"), &key));
    }
}
