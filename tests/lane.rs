//! The fast lane (src/lane/) over real sockets, byte by byte: which requests it takes
//! and which it hands to hyper mid-connection, and how it relays each shape of upstream
//! response without losing its place in either byte stream.
//!
//! Clients are raw `TcpStream`s read by [`Client`], a small HTTP/1.1 response reader written
//! here (not hyper's), so a test sees exactly the bytes the gateway sent. Upstreams are either
//! the recording [`FakeUpstream`] (what arrived, parsed by hyper) or a scripted bare-TCP one
//! (what it answers, byte for byte).

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use slack_gateway::store::contract::workspace_install;
use support::{
    closed_within, event, gateway_for, raw_upstream_answering, raw_upstream_answering_in_turn,
    sign_now, FakeUpstream, Recorded, Reply, Seen, TestGateway, EVENTS_PATH, SIGNING_SECRET,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;

/// The team every test installs; [`gateway_for`] gives it this bot token.
const TEAM: &str = "T0LANE";
const BOT_TOKEN: &str = "xoxb-conn-token";
/// How long a test waits for one response before calling it missing.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// A raw client
// ---------------------------------------------------------------------------------------

/// One response exactly as it came off the socket.
#[derive(Debug)]
struct Response {
    status: u16,
    /// The status line and headers, without the blank line.
    head: String,
    /// The body with its framing undone (chunks joined, trailers dropped).
    body: Vec<u8>,
    /// The body as it came, framing included.
    wire: Vec<u8>,
}

impl Response {
    /// Every value of the header `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }

    /// The header `name`, which must be there at most once.
    fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} {} times in {}",
            all.len(),
            self.head
        );
        all.first().copied()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection under byte-level control, reading responses with its own framing
/// rules (RFC 9112 §6.3), so what hyper would forgive shows.
struct Client {
    stream: TcpStream,
    /// Read but not yet part of a response.
    buf: Vec<u8>,
}

impl Client {
    async fn connect(gw: &TestGateway) -> Client {
        let stream = TcpStream::connect(gw.public).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response (a 1xx one included), or why there is no complete one.
    async fn response(&mut self) -> Result<Response, String> {
        tokio::time::timeout(ANSWER_LIMIT, self.read_response())
            .await
            .unwrap_or_else(|_| Err(format!("no complete response within {ANSWER_LIMIT:?}")))
    }

    /// Sends a signed event from [`TEAM`] and reads the response, which must come.
    async fn post_event(&mut self) -> Response {
        self.send(&signed(&event(TEAM))).await;
        self.expect_response().await
    }

    /// [`Client::post_event`], answered 200 with `text` and the connection kept open.
    async fn post_event_kept_open(&mut self, text: &str) -> Response {
        let r = self.post_event().await;
        assert_eq!(
            (r.status, r.header("connection")),
            (200, None),
            "{}",
            r.head
        );
        assert_eq!(r.text(), text);
        r
    }

    /// [`Client::response`], which must be there.
    async fn expect_response(&mut self) -> Response {
        self.response().await.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn read_response(&mut self) -> Result<Response, String> {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.fill().await?;
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).map_err(|e| e.to_string())?;
        self.buf.drain(..end + 4);
        let status: u16 = head
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("not a status line: {head:?}"))?;
        let mut reply = Response {
            status,
            head,
            body: Vec::new(),
            wire: Vec::new(),
        };
        let chunked = reply
            .all("transfer-encoding")
            .last()
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
        let length = match reply.all("content-length")[..] {
            [] => None,
            [one] => Some(one.parse::<usize>().map_err(|e| format!("{one:?}: {e}"))?),
            _ => return Err(format!("several Content-Length: {}", reply.head)),
        };
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(reply);
        }
        if chunked {
            (reply.body, reply.wire) = self.chunked_body().await?;
        } else {
            reply.body = match length {
                Some(n) => self.take(n).await?,
                None => self.body_until_close().await?,
            };
            reply.wire.clone_from(&reply.body);
        }
        Ok(reply)
    }

    /// Reads more; an error at the end of the stream.
    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) => Err(format!(
                "connection closed with {} unanswered bytes: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            )),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read failed: {e}")),
        }
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> Result<String, String> {
        let end = loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            self.fill().await?;
        };
        let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 2);
        Ok(line)
    }

    /// A chunked body: decoded, and as it came.
    async fn chunked_body(&mut self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let (mut body, mut wire) = (Vec::new(), Vec::new());
        loop {
            let line = self.line().await?;
            wire.extend_from_slice(format!("{line}\r\n").as_bytes());
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| format!("chunk {line:?}"))?;
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    let trailer = self.line().await?;
                    wire.extend_from_slice(format!("{trailer}\r\n").as_bytes());
                    if trailer.is_empty() {
                        return Ok((body, wire));
                    }
                }
            }
            let data = self.take(size).await?;
            body.extend_from_slice(&data);
            wire.extend_from_slice(&data);
            let end = self.take(2).await?;
            wire.extend_from_slice(&end);
            if end != b"\r\n" {
                return Err("chunk data not followed by CRLF".into());
            }
        }
    }

    async fn body_until_close(&mut self) -> Result<Vec<u8>, String> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk).await {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// True when the gateway closes the connection within `limit` without sending more.
    async fn closed_within(&mut self, limit: Duration) -> bool {
        assert!(self.buf.is_empty(), "unread: {:?}", self.buf);
        let (closed, more) = closed_within(&mut self.stream, limit).await;
        assert!(more.is_empty(), "sent after the response: {more:?}");
        closed
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// `POST` to the events path in `version`: a request line.
fn post_line(version: &str) -> String {
    format!("POST {EVENTS_PATH} {version}")
}

/// A signed request of `body`: the request `line` and the extra `headers` (lines ending in
/// CRLF, framing included) as given.
fn signed_with(line: &str, body: &str, headers: &str) -> Vec<u8> {
    let (ts, sig) = sign_now(SIGNING_SECRET, body.as_bytes());
    format!(
        "{line}\r\nHost: gw.example\r\nContent-Type: application/json\r\n\
         X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {sig}\r\n{headers}\r\n{body}"
    )
    .into_bytes()
}

/// A signed HTTP/1.1 POST of `body` with a plain Content-Length: what Slack sends, the lane's.
fn signed(body: &str) -> Vec<u8> {
    signed_with(
        &post_line("HTTP/1.1"),
        body,
        &format!("Content-Length: {}\r\n", body.len()),
    )
}

/// A signed HTTP/1.1 POST of `body` sent as one chunk: hyper's, not the lane's.
fn signed_chunked(body: &str) -> Vec<u8> {
    let mut request = signed_with(
        &post_line("HTTP/1.1"),
        body,
        "Transfer-Encoding: chunked\r\n",
    );
    request.truncate(request.len() - body.len());
    request.extend_from_slice(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes());
    request
}

/// `request` with its `Host` line replaced by `hosts` (several lines, or none).
fn with_hosts(request: &[u8], hosts: &str) -> Vec<u8> {
    let text = String::from_utf8(request.to_vec()).unwrap();
    assert!(text.contains("Host: gw.example\r\n"), "{text}");
    text.replacen("Host: gw.example\r\n", hosts, 1).into_bytes()
}

/// A gateway with [`TEAM`] installed in front of a recording upstream.
async fn recorded() -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start().await;
    let gw = gateway_for(up.url(), TEAM).await;
    (up, gw)
}

/// The upstream got `body` unchanged, with the installation's bot token.
fn assert_forwarded(r: &Recorded, body: &str) {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path_and_query, EVENTS_PATH);
    assert_eq!(r.body, Bytes::from(body.to_owned()), "forwarded body");
    assert_eq!(r.header("x-slack-bot-token"), Some(BOT_TOKEN));
}

/// A 200 as the recording upstream answers it.
fn assert_upstream_ok(reply: &Response) {
    assert_eq!(reply.status, 200, "{}\n{}", reply.head, reply.text());
    assert_eq!(reply.text(), "upstream ok");
}

// ---------------------------------------------------------------------------------------
// Which requests the lane takes, and handing over to hyper
// ---------------------------------------------------------------------------------------

/// A Slack POST (lane), then a GET of the install page (handed to hyper mid-connection), then
/// a Slack POST again (hyper from then on): one connection, three right answers, and both
/// POSTs upstream with the token.
#[tokio::test]
async fn one_connection_moves_from_the_lane_to_hyper_without_losing_a_request() {
    let (up, gw) = recorded().await;
    let mut c = Client::connect(&gw).await;
    let (first, second) = (event(TEAM), event(TEAM));

    c.send(&signed(&first)).await;
    let r = c.expect_response().await;
    assert_upstream_ok(&r);
    assert_eq!(r.header("connection"), None, "the connection stays open");

    c.send(b"GET /slack/install HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        .await;
    let r = c.expect_response().await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.text().contains("Add to Slack"), "{}", r.text());

    c.send(&signed(&second)).await;
    assert_upstream_ok(&c.expect_response().await);

    let got = up.requests();
    assert_eq!(got.len(), 2, "each POST forwarded once, the GET not at all");
    assert_forwarded(&got[0], &first);
    assert_forwarded(&got[1], &second);
}

/// Two requests in one write: the second is already buffered when the first is served. Two
/// responses, in order, and each request upstream exactly once.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let answers = vec![
        with_length("HTTP/1.1 200 OK", "first"),
        with_length("HTTP/1.1 200 OK", "second"),
    ];
    let (url, mut seen) = raw_upstream_answering(answers, false).await;
    let gw = gateway_for(url, TEAM).await;
    let (a, b) = (event(TEAM), event(TEAM));
    let mut c = Client::connect(&gw).await;
    c.send(&[signed(&a), signed(&b)].concat()).await;

    assert_eq!(c.expect_response().await.text(), "first");
    assert_eq!(c.expect_response().await.text(), "second");
    let requests = requests_seen(&mut seen);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests[0].ends_with(&a), "first upstream: {}", requests[0]);
    assert!(
        requests[1].ends_with(&b),
        "second upstream: {}",
        requests[1]
    );
    for r in &requests {
        assert!(
            r.contains(&format!("x-slack-bot-token: {BOT_TOKEN}\r\n")),
            "{r}"
        );
    }
}

/// A head that trickles in a byte at a time (split everywhere, inside the final CRLFCRLF
/// too) is put together, and the body after it goes on byte for byte.
#[tokio::test]
async fn a_head_arriving_a_byte_at_a_time_is_served() {
    let (up, gw) = recorded().await;
    let body = event(TEAM);
    let request = signed(&body);
    let (head, payload) = request.split_at(request.len() - body.len());
    let mut c = Client::connect(&gw).await;
    for byte in head.chunks(1) {
        c.send(byte).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    c.send(payload).await;
    assert_upstream_ok(&c.expect_response().await);
    assert_forwarded(&up.single(), &body);
}

/// `Expect: 100-continue` is hyper's to answer: the client may wait for `100 Continue`
/// before sending the body, then gets the upstream's 200; forwarded once, and the connection
/// goes on.
#[tokio::test]
async fn expect_100_continue_is_handed_to_hyper_and_forwarded_once() {
    let (up, gw) = recorded().await;
    let body = event(TEAM);
    let request = signed_with(
        &post_line("HTTP/1.1"),
        &body,
        &format!("Content-Length: {}\r\nExpect: 100-continue\r\n", body.len()),
    );
    let (head, payload) = request.split_at(request.len() - body.len());
    let mut c = Client::connect(&gw).await;
    c.send(head).await;
    let first = c.expect_response().await;
    assert_eq!(first.status, 100, "the body is asked for: {}", first.head);
    c.send(payload).await;
    assert_upstream_ok(&c.expect_response().await);
    assert_forwarded(&up.single(), &body);

    let next = event(TEAM);
    c.send(&signed(&next)).await;
    assert_upstream_ok(&c.expect_response().await);
    assert_eq!(up.count(), 2);
    assert_forwarded(&up.last(), &next);
}

/// HTTP/1.0 is hyper's: answered, forwarded once, and the connection (no keep-alive asked
/// for) closes after the answer.
#[tokio::test]
async fn an_http_1_0_request_is_answered_and_forwarded_once() {
    let (up, gw) = recorded().await;
    let body = event(TEAM);
    let mut c = Client::connect(&gw).await;
    c.send(&signed_with(
        &post_line("HTTP/1.0"),
        &body,
        &format!("Content-Length: {}\r\n", body.len()),
    ))
    .await;
    assert_upstream_ok(&c.expect_response().await);
    assert!(
        c.closed_within(Duration::from_secs(1)).await,
        "an HTTP/1.0 connection closes after its answer"
    );
    assert_forwarded(&up.single(), &body);
}

/// A client's `Connection: close` is honoured by the lane: the answer says so, the connection
/// closes after it, and the request still went upstream (without the client's hop header).
#[tokio::test]
async fn a_client_asking_to_close_gets_its_answer_and_then_the_close() {
    let (up, gw) = recorded().await;
    let body = event(TEAM);
    let mut c = Client::connect(&gw).await;
    c.send(&signed_with(
        &post_line("HTTP/1.1"),
        &body,
        &format!("Content-Length: {}\r\nConnection: close\r\n", body.len()),
    ))
    .await;
    let r = c.expect_response().await;
    assert_upstream_ok(&r);
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    assert!(
        c.closed_within(Duration::from_secs(1)).await,
        "the gateway keeps the connection open"
    );
    let forwarded = up.single();
    assert_forwarded(&forwarded, &body);
    assert_eq!(forwarded.header("connection"), None, "hop-by-hop");
}

/// Framing the lane will not take (two different lengths, a length that is not all digits)
/// is refused, 4xx, with nothing forwarded; a plain request on a new connection still works.
#[tokio::test]
async fn ambiguous_or_malformed_content_lengths_are_refused_and_nothing_is_forwarded() {
    let (up, gw) = recorded().await;
    let body = event(TEAM);
    let n = body.len();
    for framing in [
        format!("Content-Length: {n}\r\nContent-Length: {}\r\n", n + 3),
        format!("Content-Length: {}\r\nContent-Length: {n}\r\n", n - 3),
        format!("Content-Length: +{n}\r\n"),
        format!("Content-Length: {n}abc\r\n"),
        format!("Content-Length: 0x{n:x}\r\n"),
    ] {
        let mut c = Client::connect(&gw).await;
        c.send(&signed_with(&post_line("HTTP/1.1"), &body, &framing))
            .await;
        let r = c.expect_response().await;
        assert!(
            (400..500).contains(&r.status),
            "{framing:?} answered {}",
            r.head
        );
        assert_eq!(up.count(), 0, "{framing:?} was forwarded");
    }
    let mut c = Client::connect(&gw).await;
    c.send(&signed(&body)).await;
    assert_upstream_ok(&c.expect_response().await);
    assert_forwarded(&up.single(), &body);
}

/// Heads the lane leaves to hyper are served as hyper always served them: an absolute-form
/// target, more headers than the lane parses (but within `server.max_headers`), more than
/// `server.max_headers` (431) and a header name httparse refuses (400). Nothing refused is
/// forwarded.
#[tokio::test]
async fn heads_the_lane_leaves_to_hyper_are_served_as_hyper_serves_them() {
    let (up, gw) = recorded().await;
    let padding = |n: usize| -> String { (0..n).map(|i| format!("X-Pad-{i}: {i}\r\n")).collect() };
    let absolute = format!("POST http://gw.example{EVENTS_PATH} HTTP/1.1");
    let plain = post_line("HTTP/1.1");
    let cases = [
        (
            "absolute-form target",
            absolute.as_str(),
            String::new(),
            200,
        ),
        ("70 more headers", plain.as_str(), padding(70), 200),
        ("over server.max_headers", plain.as_str(), padding(120), 431),
        (
            "a name with a space",
            plain.as_str(),
            "X Bad: 1\r\n".to_owned(),
            400,
        ),
    ];
    let mut forwarded = 0;
    for (case, line, extra, status) in cases {
        let body = event(TEAM);
        let framing = format!("{extra}Content-Length: {}\r\n", body.len());
        let mut c = Client::connect(&gw).await;
        c.send(&signed_with(line, &body, &framing)).await;
        let r = c.expect_response().await;
        assert_eq!(r.status, status, "{case}: {}\n{}", r.head, r.text());
        if status == 200 {
            assert_eq!(r.text(), "upstream ok", "{case}");
            forwarded += 1;
            assert_forwarded(&up.last(), &body);
        }
        assert_eq!(up.count(), forwarded, "{case}");
    }
}

/// Every header the upstream received, by name (lowercase), values in order.
fn headers_of(r: &Recorded) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut all = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (name, value) in &r.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        all.entry(name.as_str().to_owned()).or_default().push(value);
    }
    all
}

/// The lane writes the upstream head from the request's own header lines; hyper's path
/// rewrites a header map. The same head through both — the lane's with a Content-Length, then
/// hyper's with the same body chunked — reaches the upstream with the same headers, value for
/// value: hop-by-hop ones and those `Connection` names gone, smuggled injected names and
/// folded forwarding and framing headers gone, forwarding headers from the real peer (or a
/// trusted proxy's extended), the client's `Host` as `X-Forwarded-Host`, the injected headers,
/// the body's length, and the target's path and query without its fragment.
#[tokio::test]
async fn the_lane_and_hyper_forward_a_head_with_the_same_headers() {
    let tricky = "Connection: keep-alive, X-Hop-Named\r\nX-Hop-Named: 1\r\n\
                  Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
                  X-App: one\r\nx-app: two\r\nCookie: a=b\r\nUser-Agent: Slackbot 1.0\r\n\
                  X_Slack_Bot_Token: xoxb-smuggled\r\nx-slack-team-id: T0EVIL\r\n\
                  X-SLACK-ENTERPRISE-INSTALL: true\r\nX_Forwarded_Proto: https\r\n\
                  Content_Length: 5\r\nTransfer_Encoding: chunked\r\n";
    let forwarding = "X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Host: spoofed.example\r\n\
                      Forwarded: for=198.51.100.7\r\n";
    let cases = [
        ("untrusted peer", false, format!("{tricky}{forwarding}")),
        ("trusted proxy", true, format!("{tricky}{forwarding}")),
        (
            "trusted proxy, no forwarding headers",
            true,
            tricky.to_owned(),
        ),
    ];
    for (case, trusted, extra) in cases {
        let up = FakeUpstream::start().await;
        let mut builder = TestGateway::builder(up.url())
            .seed(workspace_install(TEAM, "U0INSTALLER", BOT_TOKEN))
            .toml("[upstream]\nkeepalive_timeout = \"30s\"\n");
        if trusted {
            builder = builder.toml("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n");
        }
        let gw = builder.start().await;
        // Two bodies, each signed (a replay would be refused): the second is the first with
        // JSON's insignificant trailing whitespace.
        let body = event(TEAM);
        let other = format!("{body} ");
        // A query and a fragment: the upstream gets the path and query, as `Uri` keeps them.
        let line = format!("POST {EVENTS_PATH}?a=1&b=%20#frag HTTP/1.1");
        let lane = format!("{extra}Content-Length: {}\r\n", body.len());
        let hyper = format!("{extra}Transfer-Encoding: chunked\r\n");
        let chunked = format!("{:x}\r\n{other}\r\n0\r\n\r\n", other.len());
        let mut c = Client::connect(&gw).await;
        c.send(&signed_with(&line, &body, &lane)).await;
        assert_upstream_ok(&c.expect_response().await);
        let mut c = Client::connect(&gw).await;
        let mut request = signed_with(&line, &other, &hyper);
        request.truncate(request.len() - other.len());
        request.extend_from_slice(chunked.as_bytes());
        c.send(&request).await;
        assert_upstream_ok(&c.expect_response().await);

        let got = up.requests();
        assert_eq!(got.len(), 2, "{case}");
        for (r, sent) in got.iter().zip([&body, &other]) {
            assert_eq!(
                r.path_and_query,
                format!("{EVENTS_PATH}?a=1&b=%20"),
                "{case}"
            );
            assert_eq!(r.body, Bytes::from(sent.clone()), "{case}");
            assert_eq!(r.header("x-slack-bot-token"), Some(BOT_TOKEN), "{case}");
        }
        let (mut by_lane, mut by_hyper) = (headers_of(&got[0]), headers_of(&got[1]));
        assert_eq!(
            by_lane.remove("content-length"),
            Some(vec![body.len().to_string()])
        );
        assert_eq!(
            by_hyper.remove("content-length"),
            Some(vec![other.len().to_string()])
        );
        // Each signed on its own.
        for signed in ["x-slack-signature", "x-slack-request-timestamp"] {
            assert!(by_lane.remove(signed).is_some() && by_hyper.remove(signed).is_some());
        }
        assert_eq!(by_lane, by_hyper, "{case}");
        let one = |name: &str| by_lane.get(name).map(|v| v.join(" | "));
        for gone in [
            "connection",
            "x-hop-named",
            "keep-alive",
            "proxy-connection",
            "te",
        ] {
            assert_eq!(one(gone), None, "{case}: {gone}");
        }
        assert_eq!(one("x_slack_bot_token"), None, "{case}");
        for gone in ["x_forwarded_proto", "content_length", "transfer_encoding"] {
            assert_eq!(one(gone), None, "{case}: {gone}");
        }
        assert_eq!(one("x-slack-team-id").as_deref(), Some(TEAM), "{case}");
        assert_eq!(one("x-slack-enterprise-install").as_deref(), Some("false"));
        assert_eq!(one("x-app").as_deref(), Some("one | two"), "{case}");
        let (xff, xfh, fwd) = if trusted && extra.contains("Forwarded:") {
            (
                "198.51.100.7, 127.0.0.1",
                "spoofed.example",
                Some("for=198.51.100.7"),
            )
        } else {
            ("127.0.0.1", "gw.example", None)
        };
        assert_eq!(one("x-forwarded-for").as_deref(), Some(xff), "{case}");
        assert_eq!(one("x-forwarded-host").as_deref(), Some(xfh), "{case}");
        assert_eq!(one("x-forwarded-proto").as_deref(), Some("http"), "{case}");
        assert_eq!(one("forwarded").as_deref(), fwd, "{case}");
    }
}

/// A request target's `#fragment` (no part of an origin-form target on the wire, but httparse
/// lets it through) never goes upstream: the lane sends the path and query, exactly as hyper's
/// path does. Seen on a bare-TCP upstream, which would show the fragment.
#[tokio::test]
async fn a_fragment_in_the_request_target_is_not_forwarded() {
    let answers = vec![with_length("HTTP/1.1 200 OK", "ok")];
    let (url, mut seen) = raw_upstream_answering(answers, false).await;
    let gw = gateway_for(url, TEAM).await;
    let body = event(TEAM);
    let line = format!("POST {EVENTS_PATH}?a=1#frag<\"> HTTP/1.1");
    let mut c = Client::connect(&gw).await;
    let framing = format!("Content-Length: {}\r\n", body.len());
    c.send(&signed_with(&line, &body, &framing)).await;
    assert_eq!(c.expect_response().await.text(), "ok");
    let requests = requests_seen(&mut seen);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let first = requests[0].lines().next().unwrap_or_default();
    assert_eq!(first, format!("POST {EVENTS_PATH}?a=1 HTTP/1.1"));
}

/// A head over 64 KiB is refused (431) even when it arrives whole in the read that crosses
/// the limit: the lane checks a complete head's size, not only the size of a partial one.
/// Nothing is forwarded.
#[tokio::test]
async fn a_complete_head_over_64_kib_is_refused_however_it_arrives() {
    let (up, gw) = recorded().await;
    let body = event(TEAM);
    let big = "a".repeat(65 * 1024);
    let request = signed_with(
        &post_line("HTTP/1.1"),
        &body,
        &format!("X-Big: {big}\r\nContent-Length: {}\r\n", body.len()),
    );
    // Most of the head first, read by the lane while incomplete; the rest, end of head
    // included, in one piece after a pause.
    let cut = 62 * 1024;
    let mut c = Client::connect(&gw).await;
    c.send(&request[..cut]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send(&request[cut..]).await;
    let r = c.expect_response().await;
    assert_eq!(r.status, 431, "{}", r.head);
    assert_eq!(up.count(), 0, "an oversized head was forwarded");
}

/// A request in flight when the listener starts draining is answered as the connection's
/// last (`connection: close`), the connection then closes, and the drain waits for it.
#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_answered_as_the_last_one() {
    let up = FakeUpstream::start_with(Reply {
        delay: Duration::from_millis(300),
        ..Reply::default()
    })
    .await;
    let gw = gateway_for(up.url(), TEAM).await;
    let body = event(TEAM);
    let mut c = Client::connect(&gw).await;
    c.send(&signed(&body)).await;
    tokio::time::timeout(ANSWER_LIMIT, async {
        while up.count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the request reached the upstream");
    let stopping = tokio::spawn(gw.shutdown());
    let r = c.expect_response().await;
    assert_upstream_ok(&r);
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    assert!(c.closed_within(Duration::from_secs(1)).await);
    tokio::time::timeout(ANSWER_LIMIT, stopping)
        .await
        .expect("the drain did not end")
        .unwrap();
    assert_forwarded(&up.single(), &body);
}

// ---------------------------------------------------------------------------------------
// Upstream response shapes
// ---------------------------------------------------------------------------------------

/// Every request a scripted upstream has received so far.
fn requests_seen(seen: &mut UnboundedReceiver<Seen>) -> Vec<String> {
    let mut requests = Vec::new();
    while let Ok(s) = seen.try_recv() {
        if let Seen::Request(r) = s {
            requests.push(r);
        }
    }
    requests
}

/// A response with a Content-Length body.
fn with_length(head: &str, body: &str) -> Vec<u8> {
    format!("{head}\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// A close-delimited body (no length, no transfer coding, then the upstream closes) reaches
/// the client whole, re-framed as chunks, so that the client connection can stay open (and a
/// cut-off body could not pass for a whole one): the next request on it is answered.
#[tokio::test]
async fn a_close_delimited_body_is_relayed_whole_as_chunks_and_the_connection_goes_on() {
    let body: String = (0..3000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n{body}");
    let (url, mut seen) = raw_upstream_answering(vec![answer.into_bytes()], true).await;
    let gw = gateway_for(url, TEAM).await;
    let mut c = Client::connect(&gw).await;
    for i in 0..2 {
        let r = c.post_event().await;
        assert_eq!(r.status, 200, "response {i}: {}", r.head);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{}", r.head);
        assert_eq!(r.header("content-length"), None, "{}", r.head);
        assert_eq!(r.header("connection"), None, "{}", r.head);
        assert_eq!(r.text(), body, "response {i}: the whole body");
    }
    assert_eq!(requests_seen(&mut seen).len(), 2);
}

/// After responses of unusual shapes, one after another on one client connection (and one
/// upstream connection), each next request is still read and answered from the right byte:
/// a chunked body with an extension and a trailer (relayed as it came), a `100 Continue`
/// before the final head (never shown to the client), 204 and 304 without a body, and a
/// plain one to end with.
#[tokio::test]
async fn unusual_response_shapes_in_a_row_keep_the_lane_in_step() {
    let chunked = "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n";
    let answers = vec![
        format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n{chunked}")
            .into_bytes(),
        [
            &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
            &with_length("HTTP/1.1 200 OK", "after the interim"),
        ]
        .concat(),
        b"HTTP/1.1 204 No Content\r\nx-shape: 204\r\n\r\n".to_vec(),
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n".to_vec(),
        with_length("HTTP/1.1 201 Created", "last"),
    ];
    let expected: [(u16, &str); 5] = [
        (200, "hello world"),
        (200, "after the interim"),
        (204, ""),
        (304, ""),
        (201, "last"),
    ];
    let (url, mut seen) = raw_upstream_answering(answers, false).await;
    let gw = gateway_for(url, TEAM).await;
    let mut c = Client::connect(&gw).await;
    for (i, (status, body)) in expected.into_iter().enumerate() {
        c.send(&signed(&event(TEAM))).await;
        // A `100 Continue` passed on would show here as the first response.
        let r = c.expect_response().await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (status, body),
            "response {i}: {}",
            r.head
        );
    }
    // The upstream answers by its count per connection: a reconnection would have started
    // the script over.
    assert_eq!(requests_seen(&mut seen).len(), expected.len());
    assert!(
        !c.closed_within(Duration::from_millis(300)).await,
        "the client connection was closed after responses that all had an end"
    );
}

/// A response after which the upstream connection cannot carry another request (the upstream
/// said `Connection: close`, spoke HTTP/1.0 or sent more than the body) ends that upstream
/// connection, not the client's: the client connection stays open, and its next request goes
/// out on a new upstream connection. (A length beside chunked framing, once relayed here
/// without the length, is now refused: see
/// [`hypers_path_refuses_the_upstream_answers_the_lane_refuses`].)
#[tokio::test]
async fn an_upstream_connection_that_cannot_be_reused_is_replaced_and_the_client_stays() {
    for (case, first) in [
        (
            "Connection: close",
            with_length("HTTP/1.1 200 OK\r\nconnection: close", "one"),
        ),
        ("HTTP/1.0", with_length("HTTP/1.0 200 OK", "one")),
        (
            "bytes after the body",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\noneHTTP/1.1 200 OK\r\n".to_vec(),
        ),
    ] {
        // The upstream answers by its count per connection: only a reused connection would
        // ever answer "two".
        let answers = vec![first, with_length("HTTP/1.1 200 OK", "two")];
        let (url, mut seen) = raw_upstream_answering(answers, false).await;
        let gw = gateway_for(url, TEAM).await;
        let mut c = Client::connect(&gw).await;
        for i in 0..2 {
            c.send(&signed(&event(TEAM))).await;
            let r = c.expect_response().await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "one"),
                "{case}, response {i}: a reused upstream connection answers \"two\""
            );
            assert_eq!(r.header("connection"), None, "{case}: {}", r.head);
            assert_eq!(
                r.all("content-length").len(),
                r.all("transfer-encoding").is_empty() as usize,
                "{case}: one framing: {}",
                r.head
            );
        }
        let closed = tokio::time::timeout(ANSWER_LIMIT, async {
            loop {
                match seen.recv().await {
                    Some(Seen::Closed) | None => return,
                    Some(Seen::Request(_)) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "{case}: the gateway kept the upstream connection"
        );
        gw.shutdown().await;
    }
}

/// Hop-by-hop response headers (`Connection`, those it names, `Keep-Alive`) stay on the
/// upstream hop and the others pass, except that the headers framing the body stay with it
/// even when `Connection` names them; a `Date` is added when the upstream sent none (or named
/// its own in `Connection`) and the upstream's is kept as it is otherwise.
#[tokio::test]
async fn response_heads_lose_hop_by_hop_headers_and_always_carry_one_date() {
    let date = "Mon, 23 Nov 2026 21:00:00 GMT";
    let answers =
        vec![
        with_length(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nConnection: x-private\r\n\
             X-Private: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes",
            "ok",
        ),
        with_length(&format!("HTTP/1.1 200 OK\r\nDate: {date}"), "dated"),
        with_length("HTTP/1.1 200 OK\r\nConnection: content-length", "named length"),
        b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\ntransfer-encoding: chunked\r\n\r\n\
          d\r\nnamed chunked\r\n0\r\n\r\n"
            .to_vec(),
        with_length(
            "HTTP/1.1 200 OK\r\nConnection: date\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT",
            "named date",
        ),
    ];
    let (url, _seen) = raw_upstream_answering(answers, false).await;
    let gw = gateway_for(url, TEAM).await;
    let mut c = Client::connect(&gw).await;
    let r = c.post_event_kept_open("ok").await;
    for gone in ["x-private", "keep-alive"] {
        assert_eq!(
            r.header(gone),
            None,
            "{gone} reached the client: {}",
            r.head
        );
    }
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-kept"), Some("yes"));
    assert_eq!(r.header("content-length"), Some("2"));
    assert_date_is_now(&r);

    let r = c.post_event_kept_open("dated").await;
    assert_eq!(
        r.all("date"),
        [date],
        "the upstream's Date, once: {}",
        r.head
    );

    let r = c.post_event_kept_open("named length").await;
    assert_eq!(r.header("content-length"), Some("12"), "{}", r.head);

    let r = c.post_event_kept_open("named chunked").await;
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{}", r.head);

    let r = c.post_event_kept_open("named date").await;
    assert_date_is_now(&r);
}

/// The response carries one `Date`, and it is the gateway's (now).
fn assert_date_is_now(r: &Response) {
    let date = r.header("date").expect("a Date");
    let date = httpdate::parse_http_date(date).expect("an HTTP date");
    let skew = SystemTime::now()
        .duration_since(date)
        .unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_secs(5),
        "Date is {skew:?} off: {date:?}"
    );
}

/// Responses no client can be given as they are each become the gateway's 502, on a client
/// connection that goes on: the next request is answered, from a new upstream connection.
/// No request is sent twice.
#[tokio::test]
async fn unusable_upstream_responses_are_502_and_the_connection_goes_on() {
    let cases: [(&str, &[u8], bool); 6] = [
        ("malformed status line", b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n", false),
        ("not HTTP", b"HTTX/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false),
        ("status below 100", b"HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n", false),
        ("closed before a head", b"", true),
        (
            "two Content-Lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!",
            false,
        ),
        (
            "101 Switching Protocols",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            false,
        ),
    ];
    for (case, bad, drop_after_each) in cases {
        let answers = vec![bad.to_vec(), with_length("HTTP/1.1 200 OK", "ok")];
        let (url, mut seen) = raw_upstream_answering_in_turn(answers, drop_after_each).await;
        let gw = gateway_for(url, TEAM).await;
        let mut c = Client::connect(&gw).await;
        let r = c.post_event().await;
        assert_eq!(r.status, 502, "{case}: {}\n{}", r.head, r.text());
        let r = c.post_event().await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "ok"),
            "{case}: after the 502"
        );
        assert_eq!(requests_seen(&mut seen).len(), 2, "{case}");
        gw.shutdown().await;
    }
}

/// What the lane refuses of an upstream's answer, hyper's path refuses too (it used to relay
/// them: the client got the 101, or `content-length: 40` then 5 bytes and a close): a 101, a
/// length beside a transfer coding (in either order, chunked or not), a length that is not
/// digits only. Each is the gateway's 502 on both paths — a plain POST (the lane) and the
/// same POST chunked (hyper) — with nothing of the answer relayed, and the client connection
/// goes on: the next request is answered from a new upstream connection.
#[tokio::test]
async fn hypers_path_refuses_the_upstream_answers_the_lane_refuses() {
    let cases: [(&str, &[u8]); 6] = [
        (
            "101 Switching Protocols",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        ),
        (
            "a length beside chunked",
            b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunked beside a length",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "another coding beside a length",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ncontent-length: 5\r\n\r\nhello",
        ),
        (
            "a list of lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello",
        ),
        (
            "a length beside chunked, the length not a number",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: x\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (case, bad) in cases {
        for (path, request) in [
            ("lane", signed as fn(&str) -> Vec<u8>),
            ("hyper", signed_chunked),
        ] {
            let answers = vec![bad.to_vec(), with_length("HTTP/1.1 200 OK", "ok")];
            let (url, mut seen) = raw_upstream_answering_in_turn(answers, false).await;
            let gw = gateway_for(url, TEAM).await;
            let mut c = Client::connect(&gw).await;
            c.send(&request(&event(TEAM))).await;
            let r = c.expect_response().await;
            assert_eq!(r.status, 502, "{case} ({path}): {}\n{}", r.head, r.text());
            assert_eq!(r.text(), "upstream unavailable\n", "{case} ({path})");
            for relayed in ["upgrade", "transfer-encoding"] {
                assert_eq!(r.header(relayed), None, "{case} ({path}): {}", r.head);
            }
            c.send(&request(&event(TEAM))).await;
            let r = c.expect_response().await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "ok"),
                "{case} ({path}): after the 502"
            );
            assert_eq!(requests_seen(&mut seen).len(), 2, "{case} ({path})");
            gw.shutdown().await;
        }
    }
}

/// `Expect: 100-continue` is the gateway's to meet on hyper's path: the client gets its
/// `100 Continue` from the gateway before anything went upstream, and the upstream never
/// sees the `Expect` (it gets the whole body at once), for a body with a length and a chunked
/// one.
#[tokio::test]
async fn expect_is_answered_by_the_gateway_and_never_forwarded() {
    let (up, gw) = recorded().await;
    for chunked in [false, true] {
        let body = event(TEAM);
        let framing = if chunked {
            "Transfer-Encoding: chunked\r\n".to_owned()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let request = signed_with(
            &post_line("HTTP/1.1"),
            &body,
            &format!("{framing}Expect: 100-continue\r\n"),
        );
        let head = &request[..request.len() - body.len()];
        let before = up.count();
        let mut c = Client::connect(&gw).await;
        c.send(head).await;
        let first = c.expect_response().await;
        assert_eq!(first.status, 100, "chunked={chunked}: {}", first.head);
        assert_eq!(up.count(), before, "forwarded before the body came");
        if chunked {
            c.send(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes())
                .await;
        } else {
            c.send(body.as_bytes()).await;
        }
        assert_upstream_ok(&c.expect_response().await);
        let forwarded = up.last();
        assert_forwarded(&forwarded, &body);
        assert_eq!(forwarded.header("expect"), None, "chunked={chunked}");
    }
    assert_eq!(up.count(), 2);
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or any request with two, is 400 —
/// on the lane's requests (a plain signed POST, handed to hyper to be refused) and hyper's (a
/// page, a chunked POST, the admin listener) alike — with the connection closed after it,
/// nothing forwarded and no route run, HTTP/1.0 included on the public listener (SPEC); the
/// admin listener serves an HTTP/1.0 health check without `Host` (which that version did not
/// require), and an absolute-form target with its `Host` is served.
#[tokio::test]
async fn a_request_without_host_or_with_two_is_400_and_goes_nowhere() {
    let (up, gw) = recorded().await;
    let page = b"GET /slack/install HTTP/1.1\r\nHost: gw.example\r\n\r\n".to_vec();
    let health = b"GET /healthz HTTP/1.1\r\nHost: gw.example\r\n\r\n".to_vec();
    let requests: [(&str, Vec<u8>, bool); 4] = [
        (
            "a plain signed POST (the lane)",
            signed(&event(TEAM)),
            false,
        ),
        ("a chunked signed POST", signed_chunked(&event(TEAM)), false),
        ("the install page", page, false),
        ("the admin listener", health, true),
    ];
    for (case, request, admin) in &requests {
        for hosts in [
            "",
            "Host: gw.example\r\nHost: evil.example\r\n",
            "Host: a\r\nhost: a\r\n",
        ] {
            let mut s = TcpStream::connect(if *admin { gw.admin } else { gw.public })
                .await
                .unwrap();
            s.write_all(&with_hosts(request, hosts)).await.unwrap();
            let (closed, answer) = closed_within(&mut s, ANSWER_LIMIT).await;
            assert!(
                answer.starts_with("HTTP/1.1 400 "),
                "{case}, {hosts:?}: {answer}"
            );
            assert!(
                answer.to_ascii_lowercase().contains("connection: close"),
                "{case}, {hosts:?}: {answer}"
            );
            assert!(closed, "{case}, {hosts:?}: the connection stays open");
        }
    }
    assert_eq!(up.count(), 0, "a request without one Host was forwarded");

    // HTTP/1.0 without Host: 400 on the public listener, a health check on the admin one.
    let body = event(TEAM);
    let old = signed_with(
        &post_line("HTTP/1.0"),
        &body,
        &format!("Content-Length: {}\r\n", body.len()),
    );
    let mut s = TcpStream::connect(gw.public).await.unwrap();
    s.write_all(&with_hosts(&old, "")).await.unwrap();
    let (_, answer) = closed_within(&mut s, ANSWER_LIMIT).await;
    assert!(answer.starts_with("HTTP/1.0 400 "), "{answer}");
    assert_eq!(
        up.count(),
        0,
        "an HTTP/1.0 request without Host was forwarded"
    );
    let mut s = TcpStream::connect(gw.admin).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.unwrap();
    let (_, answer) = closed_within(&mut s, ANSWER_LIMIT).await;
    assert!(answer.starts_with("HTTP/1.0 200 "), "{answer}");
    // An absolute-form target is fine with its Host.
    let body = event(TEAM);
    let absolute = format!("POST http://gw.example{EVENTS_PATH} HTTP/1.1");
    let framing = format!("Content-Length: {}\r\n", body.len());
    let mut c = Client::connect(&gw).await;
    c.send(&signed_with(&absolute, &body, &framing)).await;
    assert_upstream_ok(&c.expect_response().await);
    assert_forwarded(&up.single(), &body);
}

/// An upstream slower than `upstream.timeout` costs the client a 504, not its connection: the
/// next request on it goes out on a new upstream connection and is answered.
#[tokio::test]
async fn an_upstream_timeout_is_504_and_the_connection_goes_on() {
    let up = FakeUpstream::start_with(Reply {
        delay: Duration::from_millis(800),
        ..Reply::default()
    })
    .await;
    let gw = TestGateway::builder(up.url())
        .seed(workspace_install(TEAM, "U0INSTALLER", BOT_TOKEN))
        .toml("[upstream]\ntimeout = \"200ms\"\nkeepalive_timeout = \"30s\"\n")
        .start()
        .await;
    let mut c = Client::connect(&gw).await;
    let r = c.post_event().await;
    assert_eq!(r.status, 504, "{}\n{}", r.head, r.text());
    up.set_reply(Reply::default());
    let body = event(TEAM);
    c.send(&signed(&body)).await;
    assert_upstream_ok(&c.expect_response().await);
    let got = up.requests();
    assert_eq!(got.len(), 2, "each request upstream once");
    assert_ne!(
        got[1].peer, got[0].peer,
        "the timed-out connection is not reused"
    );
    assert_forwarded(&got[1], &body);
}

/// A body that breaks off midway (10 of 100 bytes, then the upstream closes) never looks
/// like a whole response to the client: its connection closes short of the body. A new
/// client connection then works.
#[tokio::test]
async fn a_body_broken_midway_closes_the_client_connection_short() {
    let answers = vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec(),
        with_length("HTTP/1.1 200 OK", "ok"),
    ];
    let (url, mut seen) = raw_upstream_answering_in_turn(answers, true).await;
    let gw = gateway_for(url, TEAM).await;
    let mut c = Client::connect(&gw).await;
    c.send(&signed(&event(TEAM))).await;
    match c.response().await {
        Ok(r) => panic!("a complete response: {r:?}"),
        Err(e) => assert!(e.contains("closed"), "not closed: {e}"),
    }

    let mut c = Client::connect(&gw).await;
    let r = c.post_event().await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(requests_seen(&mut seen).len(), 2);
}
