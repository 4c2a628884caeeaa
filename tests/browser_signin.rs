//! Sign in with Slack in a real headless Chromium: a protected page sends the browser to
//! Slack's (fake) sign-in, and back to the page, now forwarded with the user's identity.

mod support;

use fantoccini::Locator;
use support::browser::Browser;
use support::fake_slack::FakeSlack;
use support::oauth_harness::{Harness, CLIENT_ID, CLIENT_SECRET};

#[tokio::test]
async fn sign_in_in_a_browser_and_load_a_protected_page() {
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    let h = Harness::start_full(
        slack,
        "",
        "",
        "\n[signin]\nenabled = true\ncookie_secret = \"browser-test-cookie-secret-32-bytes!!\"\nprotect = [\"/app\"]\n",
    )
    .await;
    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("{}/app/dashboard?tab=1", h.public_url()))
        .await
        .unwrap();
    // Redirected to the (fake) Slack sign-in page: continue.
    c.wait()
        .for_element(Locator::Id("allow"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Back on the protected page, which the upstream rendered with the injected identity.
    c.wait()
        .for_url(&url::Url::parse(&format!("{}/app/dashboard?tab=1", h.public_url())).unwrap())
        .await
        .unwrap();
    let body = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(seen["x-slack-user-id"], "U0ALICE");
    assert_eq!(seen["x-slack-user-email"], "alice@example.com");
    assert!(
        seen.get("cookie")
            .is_none_or(|c| !c.as_str().unwrap().contains("slack-gateway")),
        "{seen}"
    );
    // The session persists: a second protected page loads directly.
    c.goto(&format!("{}/app/other", h.public_url()))
        .await
        .unwrap();
    let body = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("U0ALICE"), "{body}");
    browser.close().await;
}
