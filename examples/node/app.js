// A Slack app behind slack-gateway, in Express, holding no Slack token at all.
//
// The gateway has already verified Slack's signature and looked up the installation; with
// upstream.inject_tokens = false it forwards the request with the workspace's identity as
// headers and never a token (X-Slack-Team-Id, X-Slack-Enterprise-Id,
// X-Slack-Enterprise-Install, and X-Slack-Bot-Id and X-Slack-Bot-User-Id when it found an
// installation). The app calls Slack's Web API through the gateway's egress, sending those
// identity headers back; the gateway adds the installation's token on the way to Slack. So
// this app has no token, no signing secret, no OAuth flow and no installation store.
//
// Listen only where the gateway alone can reach you (the default is 127.0.0.1): the app
// trusts these headers, and the gateway is what strips forged copies of them.
//
// Environment:
//   HOST                  [127.0.0.1]                   address to listen on
//   PORT                  [8080]                        port to listen on (the gateway's upstream.url)
//   SLACK_EGRESS_URL      [http://127.0.0.1:3001/api/]  the gateway's egress (egress.listen + /api/)
//   GATEWAY_EGRESS_TOKEN  [unset]                       the gateway's egress.token, when it has one:
//                                                       sent as Proxy-Authorization: Bearer

import express from 'express';
import { WebClient } from '@slack/web-api';

const HOST = process.env.HOST ?? '127.0.0.1';
const PORT = Number(process.env.PORT ?? 8080);
const SLACK_EGRESS_URL = process.env.SLACK_EGRESS_URL ?? 'http://127.0.0.1:3001/api/';
// Required by an egress with egress.token set (which it must have off loopback).
const EGRESS_AUTH = process.env.GATEWAY_EGRESS_TOKEN
  ? { 'Proxy-Authorization': `Bearer ${process.env.GATEWAY_EGRESS_TOKEN}` }
  : {};

/** What the gateway sent (its default header names; `req.get` ignores case). */
function gateway(req) {
  return {
    teamId: req.get('x-slack-team-id'),
    enterpriseId: req.get('x-slack-enterprise-id'),
    enterpriseInstall: req.get('x-slack-enterprise-install'),
    botId: req.get('x-slack-bot-id'),
    botUserId: req.get('x-slack-bot-user-id'),
  };
}

/**
 * A Web API client that calls Slack through the gateway as this workspace's bot: no token,
 * the identity headers the gateway sent, sent back as they came.
 */
function slackFor({ teamId, enterpriseId, enterpriseInstall }) {
  const identity = {};
  if (teamId) identity['X-Slack-Team-Id'] = teamId;
  if (enterpriseId) identity['X-Slack-Enterprise-Id'] = enterpriseId;
  if (enterpriseInstall) identity['X-Slack-Enterprise-Install'] = enterpriseInstall;
  return new WebClient(undefined, {
    slackApiUrl: SLACK_EGRESS_URL,
    headers: { ...EGRESS_AUTH, ...identity },
    // @slack/web-api retries every non-200 answer, by default 10 times over about 30 minutes.
    // The gateway's own refusals (401 proxy_auth_required, 404 not_installed, ...) are not
    // 200 and will not change on retry; the egress already waits out Slack's rate limits.
    retryConfig: { retries: 2 },
  });
}

async function onMention(slack, event) {
  await slack.chat.postMessage({
    channel: event.channel,
    thread_ts: event.thread_ts ?? event.ts,
    text: `Hi <@${event.user}>, you said: ${event.text ?? ''}`,
  });
}

async function onEcho(slack, command) {
  await slack.chat.postMessage({
    channel: command.channel_id,
    text: `<@${command.user_id}> asked me to say: ${command.text ?? ''}`,
  });
}

const app = express();
// Events come as JSON, slash commands and interactivity as forms. The gateway verified the
// signature over the raw body; this app does not need it.
app.use(express.json({ limit: '1mb' }));
app.use(express.urlencoded({ extended: false, limit: '1mb' }));

app.post('/slack/events', (req, res) => {
  const identity = gateway(req);
  const body = req.body ?? {};

  // No bot: the gateway found no installation for this workspace.
  if (!identity.botId && !identity.botUserId) {
    res.status(200).send(body.command ? 'This app is not installed in this workspace.' : '');
    return;
  }
  const slack = slackFor(identity);

  // Slack waits 3 seconds for the answer: acknowledge first, then call the API.
  if (body.type === 'event_callback') {
    res.sendStatus(200);
    if (body.event?.type === 'app_mention') {
      onMention(slack, body.event).catch((e) => console.error('app_mention:', e.message));
    }
    return;
  }
  if (body.command === '/echo') {
    res.status(200).send(`Echoing to <#${body.channel_id}>`);
    onEcho(slack, body).catch((e) => console.error('/echo:', e.message));
    return;
  }
  // Other commands, interactivity (a form with a `payload` field) and events: acknowledged.
  res.sendStatus(200);
});

app.listen(PORT, HOST, (err) => {
  if (err) throw err;
  console.log(`listening on http://${HOST}:${PORT}/slack/events (Slack API through the gateway: ${SLACK_EGRESS_URL})`);
});
