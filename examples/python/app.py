"""A Bolt for Python app behind slack-gateway.

The gateway has already verified Slack's signature and looked up the installation. It adds
the workspace's bot token and identity as headers:

    X-Slack-Bot-Token, X-Slack-Bot-Id, X-Slack-Bot-User-Id,
    X-Slack-Team-Id, X-Slack-Enterprise-Id, X-Slack-Enterprise-Install
    (and X-Slack-User-Token with upstream.inject_user_token = true)

so this app has no signing secret, no OAuth flow and no installation store. Bolt hands a
custom `authorize` function only the context, not the request, so a `before_authorize`
middleware copies the gateway's headers into the context first.

Listen only where the gateway alone can reach you (the default is 127.0.0.1): the app trusts
these headers, and the gateway is what strips forged copies of them.

Environment:
    HOST           [127.0.0.1]               address to listen on
    PORT           [8080]                    port to listen on (the gateway's upstream.url)
    SLACK_API_URL  [https://slack.com/api/]  Slack's Web API (tests point it at a fake Slack)
"""

import logging
import os
from socketserver import ThreadingMixIn
from typing import Callable, Optional
from wsgiref.simple_server import WSGIServer, make_server

from slack_bolt import App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient

# The gateway's default header names (`[upstream.headers]` in gateway.toml renames them).
# Bolt lowercases header names.
GATEWAY_HEADERS = {
    "bot_token": "x-slack-bot-token",
    "bot_id": "x-slack-bot-id",
    "bot_user_id": "x-slack-bot-user-id",
    "team_id": "x-slack-team-id",
    "enterprise_id": "x-slack-enterprise-id",
    "enterprise_install": "x-slack-enterprise-install",
    "user_token": "x-slack-user-token",
}

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def slack_api_url() -> str:
    url = os.environ.get("SLACK_API_URL", "https://slack.com/api/")
    # slack_sdk joins method names onto the base URL: without the slash, ".../api" + "chat.postMessage"
    # would lose the "api" segment.
    return url if url.endswith("/") else url + "/"


def copy_gateway_headers(req: BoltRequest, context: BoltContext, next: Callable[[], BoltResponse]):
    """Runs right before `authorize`: puts what the gateway injected into the context."""
    found = {}
    for key, name in GATEWAY_HEADERS.items():
        values = req.headers.get(name) or []
        if values and values[0]:
            found[key] = values[0]
    context["gateway"] = found
    return next()


def authorize(context: BoltContext, enterprise_id: Optional[str], team_id: Optional[str], user_id: Optional[str]):
    """The installation as the gateway resolved it; None when it found none (not installed)."""
    gateway = context.get("gateway") or {}
    bot_token = gateway.get("bot_token")
    user_token = gateway.get("user_token")
    if not bot_token and not user_token:
        return None
    return AuthorizeResult(
        enterprise_id=gateway.get("enterprise_id", enterprise_id),
        team_id=gateway.get("team_id", team_id),
        bot_token=bot_token,
        bot_id=gateway.get("bot_id"),
        bot_user_id=gateway.get("bot_user_id"),
        user_id=user_id,
        user_token=user_token,
    )


app = App(
    client=WebClient(base_url=slack_api_url()),
    # The gateway verified the signature. Slack's headers and the raw body are forwarded as
    # they came, so setting SLACK_SIGNING_SECRET and True here would verify a second time.
    request_verification_enabled=False,
    before_authorize=copy_gateway_headers,
    authorize=authorize,
)


@app.event("app_mention")
def on_mention(event, client: WebClient, logger):
    # `client` already carries the bot token that authorize returned.
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
        logging.info("listening on http://%s:%d/slack/events (Slack API: %s)", host, port, slack_api_url())
        server.serve_forever()


if __name__ == "__main__":
    main()
