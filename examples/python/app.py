"""A Bolt for Python app behind slack-gateway, holding no Slack token at all.

The gateway verifies Slack's signature, looks up the installation and forwards each request
with the workspace's identity as headers (with `upstream.inject_tokens = false`, never a
token):

    X-Slack-Team-Id, X-Slack-Enterprise-Id, X-Slack-Enterprise-Install,
    X-Slack-Bot-Id, X-Slack-Bot-User-Id   (these two only when it found an installation)

The app calls Slack's Web API through the gateway's egress instead: its `client` is a
slack_sdk WebClient whose base URL is the egress and which sends the identity headers back
with every call; the gateway adds the installation's token on the way to Slack. So this app
has no token, no OAuth flow and no installation store.

Bolt hands a custom `authorize` function only the context, not the request, so a
`before_authorize` middleware reads the gateway's headers into the context and gives the
listeners that workspace's egress client. `authorize` returns an AuthorizeResult without a
token when the gateway found an installation (X-Slack-Bot-Id or X-Slack-Bot-User-Id
present), else None: Bolt then answers with its "please reinstall" message.

Signature verification: the gateway has verified every request. With SLACK_SIGNING_SECRET
set, Bolt verifies it a second time (the gateway forwards Slack's signature headers and the
raw body unchanged, so it passes); unset, Bolt's verification is off.

Listen only where the gateway alone can reach you (the default is 127.0.0.1): unless Bolt
verifies signatures, the app trusts these headers, and the gateway is what strips forged
copies of them.

Environment:
    HOST                  [127.0.0.1]                   address to listen on
    PORT                  [8080]                        port to listen on (the gateway's upstream.url)
    SLACK_EGRESS_URL      [http://127.0.0.1:3001/api/]  the gateway's egress (egress.listen + /api/)
    GATEWAY_EGRESS_TOKEN  [unset]                       the gateway's egress.token, when it has one:
                                                        sent as Proxy-Authorization: Bearer
    SLACK_SIGNING_SECRET  [unset]                       set: Bolt verifies Slack's signature too
"""

import logging
import os
from socketserver import ThreadingMixIn
from typing import Callable, Dict, Optional
from wsgiref.simple_server import WSGIServer, make_server

from slack_bolt import App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient

# The gateway's default header names (`[upstream.headers]` in gateway.toml renames them).
# Bolt lowercases header names.
GATEWAY_HEADERS = {
    "team_id": "x-slack-team-id",
    "enterprise_id": "x-slack-enterprise-id",
    "enterprise_install": "x-slack-enterprise-install",
    "bot_id": "x-slack-bot-id",
    "bot_user_id": "x-slack-bot-user-id",
}
# What names the workspace to the egress: sent back with every Web API call as they came.
IDENTITY = ("team_id", "enterprise_id", "enterprise_install")

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def egress_url() -> str:
    url = os.environ.get("SLACK_EGRESS_URL", "http://127.0.0.1:3001/api/")
    # slack_sdk joins method names onto the base URL: without the slash, ".../api" + "chat.postMessage"
    # would lose the "api" segment.
    return url if url.endswith("/") else url + "/"


def egress_auth() -> Dict[str, str]:
    """Proxy-Authorization for an egress with `egress.token` set (required off loopback)."""
    token = os.environ.get("GATEWAY_EGRESS_TOKEN")
    return {"Proxy-Authorization": f"Bearer {token}"} if token else {}


def egress_client(identity: Dict[str, str]) -> WebClient:
    """A Web API client that calls Slack through the gateway as the workspace `identity` names.

    A new one per request: Bolt's own per-request client shares its headers dict with
    `app.client`, so adding headers to it would leak them into other requests."""
    headers = egress_auth()
    headers.update({GATEWAY_HEADERS[key]: identity[key] for key in IDENTITY if key in identity})
    return WebClient(base_url=egress_url(), headers=headers)


def read_gateway_headers(req: BoltRequest, context: BoltContext, next: Callable[[], BoltResponse]):
    """Runs right before `authorize`: puts what the gateway sent into the context, and makes
    the `client` every listener gets call Slack as this workspace."""
    found = {}
    for key, name in GATEWAY_HEADERS.items():
        values = req.headers.get(name) or []
        if values and values[0]:
            found[key] = values[0]
    context["gateway"] = found
    if "team_id" in found or "enterprise_id" in found:
        context["client"] = egress_client(found)
    return next()


def authorize(context: BoltContext, enterprise_id: Optional[str], team_id: Optional[str], user_id: Optional[str]):
    """The installation as the gateway resolved it, without a token (the egress adds it);
    None when the gateway found none (not installed)."""
    gateway = context.get("gateway") or {}
    if not gateway.get("bot_id") and not gateway.get("bot_user_id"):
        return None
    return AuthorizeResult(
        enterprise_id=gateway.get("enterprise_id", enterprise_id),
        team_id=gateway.get("team_id", team_id),
        bot_id=gateway.get("bot_id"),
        bot_user_id=gateway.get("bot_user_id"),
        user_id=user_id,
    )


def signing_secret() -> Optional[str]:
    return os.environ.get("SLACK_SIGNING_SECRET") or None


# Bolt turns its own OAuth flow (and a file-based installation store) on when it finds
# SLACK_CLIENT_ID and SLACK_CLIENT_SECRET in the environment, as when the app is started from
# the shell that runs the gateway. The gateway does the OAuth flow: the app needs neither.
for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"):
    os.environ.pop(name, None)

app = App(
    # `app.client` holds no token; the listeners get egress_client(...) for their workspace.
    client=WebClient(base_url=egress_url(), headers=egress_auth()),
    # The gateway verified the signature. Slack's headers and the raw body are forwarded as
    # they came, so with SLACK_SIGNING_SECRET set Bolt verifies a second time.
    signing_secret=signing_secret() or "",
    request_verification_enabled=signing_secret() is not None,
    before_authorize=read_gateway_headers,
    authorize=authorize,
)


@app.event("app_mention")
def on_mention(event, client: WebClient, logger):
    # `client` calls Slack through the gateway as this workspace's bot.
    client.chat_postMessage(
        channel=event["channel"],
        thread_ts=event.get("thread_ts") or event.get("ts"),
        text=f"Hi <@{event.get('user')}>, you said: {event.get('text', '')}",
    )


@app.command("/echo")
def on_echo(ack, command, client: WebClient):
    # Slack waits 3 seconds for the acknowledgement: answer first, then call the API.
    ack(f"Echoing to <#{command['channel_id']}>")
    client.chat_postMessage(
        channel=command["channel_id"],
        text=f"<@{command['user_id']}> asked me to say: {command.get('text', '')}",
    )


# The WSGI application: `gunicorn -b 127.0.0.1:8080 app:handler` serves it in production.
handler = SlackRequestHandler(app)


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main():
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    # wsgiref is enough to try the app; run `handler` under a WSGI server in production.
    with make_server(host, port, handler, server_class=ThreadingWSGIServer) as server:
        logging.info(
            "listening on http://%s:%d/slack/events (Slack API through the gateway: %s; Bolt verifies signatures: %s)",
            host,
            port,
            egress_url(),
            "yes" if signing_secret() else "no",
        )
        server.serve_forever()


if __name__ == "__main__":
    main()
