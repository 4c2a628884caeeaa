// A Slack app behind slack-gateway, in Express.
//
// The gateway has already verified Slack's signature and looked up the installation; it adds
// the workspace's bot token and identity as headers (X-Slack-Bot-Token, X-Slack-Bot-Id,
// X-Slack-Bot-User-Id, X-Slack-Team-Id, X-Slack-Enterprise-Id, X-Slack-Enterprise-Install,
// and X-Slack-User-Token with upstream.inject_user_token = true). So this app has no signing
// secret, no OAuth flow and no installation store: it reads the token from the request.
//
// Listen only where the gateway alone can reach you (the default is 127.0.0.1): the app
// trusts these headers, and the gateway is what strips forged copies of them.
//
// Environment:
//   HOST           [127.0.0.1]               address to listen on
//   PORT           [8080]                    port to listen on (the gateway's upstream.url)
//   SLACK_API_URL  [https://slack.com/api/]  Slack's Web API (a fake Slack in tests)

import express from 'express';
import { WebClient } from '@slack/web-api';

const HOST = process.env.HOST ?? '127.0.0.1';
const PORT = Number(process.env.PORT ?? 8080);
const SLACK_API_URL = process.env.SLACK_API_URL ?? 'https://slack.com/api/';

/** What the gateway injected (its default header names; Express lowercases them). */
function gateway(req) {
  return {
    botToken: req.get('x-slack-bot-token'),
    botUserId: req.get('x-slack-bot-user-id'),
    teamId: req.get('x-slack-team-id'),
    enterpriseId: req.get('x-slack-enterprise-id'),
    enterpriseInstall: req.get('x-slack-enterprise-install') === 'true',
    userToken: req.get('x-slack-user-token'),
  };
}

/** A Web API client that calls Slack as this workspace's bot. */
function slackFor(token) {
  return new WebClient(token, { slackApiUrl: SLACK_API_URL });
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
  const { botToken } = gateway(req);
  const body = req.body ?? {};

  // No token: the gateway found no installation for this workspace.
  if (!botToken) {
    res.status(200).send(body.command ? 'This app is not installed in this workspace.' : '');
    return;
  }
  const slack = slackFor(botToken);

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
  console.log(`listening on http://${HOST}:${PORT}/slack/events (Slack API: ${SLACK_API_URL})`);
});
