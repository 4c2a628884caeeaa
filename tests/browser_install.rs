//! "Add to Slack" in a real headless Chromium: the install page, the (fake) Slack authorize
//! page, the callback and the success page, then a signed event forwarded with the new token.

mod support;

use fantoccini::Locator;
use slack_gateway::store::{InstallationStore, TeamRef};
use support::browser::Browser;
use support::oauth_harness::{Harness, CLIENT_ID};

#[tokio::test]
async fn add_to_slack_in_a_browser_then_an_event_gets_the_new_token() {
    let h = Harness::start("").await;
    let browser = Browser::start().await;
    let c = &browser.client;

    c.goto(&format!("{}/slack/install", h.public_url()))
        .await
        .unwrap();
    c.find(Locator::Id("add-to-slack"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Slack's (fake) authorize page: approve.
    c.wait()
        .for_element(Locator::Id("allow"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Back at the gateway: the success page.
    let heading = c
        .wait()
        .for_element(Locator::Id("installed"))
        .await
        .unwrap();
    assert_eq!(heading.text().await.unwrap(), "Thank you!");
    let open = c.find(Locator::Id("open-slack")).await.unwrap();
    assert_eq!(
        open.attr("href").await.unwrap().as_deref(),
        Some("slack://app?team=T0FAKE1&id=A0GATEWAY")
    );
    browser.close().await;

    let team = TeamRef::new(None, Some("T0FAKE1"), false);
    let inst = h
        .store
        .find_bot(CLIENT_ID, &team)
        .await
        .unwrap()
        .expect("installed");
    let token = h.signed_event("T0FAKE1").await;
    assert_eq!(
        token.as_deref(),
        inst.bot_token.as_ref().map(|t| t.expose())
    );
}
