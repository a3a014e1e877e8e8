//! The admin dashboard in a real headless Chromium against the `ota`
//! binary: log in, watch a running campaign's progress change as vehicles
//! report over the HTTP vehicle API, retry a failure group, look up a VIN
//! and read its explanation, check that vehicle data is shown as text and
//! that a viewer gets no buttons. Screenshots land in the target
//! directory (`tmp/dashboard/`), to look at.

mod common;

use std::time::Duration;

use common::{
    create_approve_launch, credential, http, import, post, staged_action, vehicle, Server,
};
use ota_tests::browser::Browser;
use serde_json::{json, Value};

const SPEC: &str = "name: bms-2.3.1\n\
    target: 'vehicle.model == \"ID.4\"'\n\
    rules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\n\
    rollout:\n  waves: [100]\n  max_retries: 1\n  failure_threshold: {percent: 80, min_finished: 50, action: pause}\n";

const LIVE: Duration = Duration::from_secs(20);

async fn report(s: &Server, vin: &str, token: &str, state: &str, message: &str, seq: u64) {
    let action = staged_action(&s.http, vin, token).await["action_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http()
        .post(format!(
            "{}/v1/vehicles/{vin}/actions/{action}/status",
            s.http
        ))
        .bearer_auth(token)
        .json(&json!({"state": state, "progress": 100, "seq": seq, "message": message}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{vin} {state}: {}", r.status());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_follows_a_campaign_and_diagnoses_a_vehicle_in_the_browser() {
    let s = Server::start(&[("OTA_LOG", "warn")], &[]);
    let admin = s.admin_token();
    let mut fleet: Vec<Value> = (0..6).map(vehicle).collect();
    fleet[5]["attributes"] = json!({"nickname": "<script>window.__xss = 1</script><b>bold</b>"});
    let vins: Vec<String> = fleet
        .iter()
        .map(|v| v["vin"].as_str().unwrap().to_owned())
        .collect();
    import(&s.http, &admin, &fleet).await;
    let mut tokens = Vec::new();
    for vin in &vins {
        tokens.push(credential(&s.http, &admin, vin).await);
    }
    // One poll: the vehicle page must show it online, from the batch of
    // last-seen times the server writes every few seconds.
    let polled = http()
        .get(format!("{}/v1/vehicles/{}/actions", s.http, vins[5]))
        .bearer_auth(&tokens[5])
        .send()
        .await
        .unwrap();
    assert!(polled.status().is_success(), "{}", polled.status());
    post(
        format!("{}/api/v1/packages", s.http),
        &admin,
        json!({"name": "bms-fw", "version": "2.3.1", "ecu": "BMS",
               "artifacts": [{"url": "https://cdn.example/bms.bin", "sha256": "ab".repeat(32), "size": 1}]}),
    )
    .await;
    let id = create_approve_launch(&s.http, &admin, SPEC).await;
    let viewer = post(
        format!("{}/api/v1/tokens", s.http),
        &admin,
        json!({"principal": "vic", "role": "viewer"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let b = Browser::start(&shots).await.expect("headless chromium");

    // Sign in: a page without a session sends the browser to the form.
    b.goto(&format!("{}/ui/campaigns/{id}", s.http))
        .await
        .unwrap();
    assert!(
        b.url().await.unwrap().contains("/ui/login"),
        "{}",
        b.url().await.unwrap()
    );
    let field = b.find("input[name=token]").await.unwrap();
    b.type_into(&field, "ota_not-a-token").await.unwrap();
    b.click(&b.find("form button[type=submit]").await.unwrap())
        .await
        .unwrap();
    b.wait_for_text("That token is not valid", LIVE)
        .await
        .unwrap();
    let field = b.find("input[name=token]").await.unwrap();
    b.type_into(&field, &admin).await.unwrap();
    b.click(&b.find("form button[type=submit]").await.unwrap())
        .await
        .unwrap();
    b.wait_for_text("Failure triage", LIVE).await.unwrap();
    assert!(
        b.url()
            .await
            .unwrap()
            .ends_with(&format!("/ui/campaigns/{id}")),
        "back to the page asked for"
    );
    let before = b.text_of(".progress-label").await.unwrap();
    assert!(before.starts_with("0.0%"), "{before}");
    b.screenshot("1-campaign-launched").await.unwrap();

    // Vehicles report; the open page follows without a reload.
    b.script("window.__same_page = true").await.unwrap();
    // One success; two failures that stay (the one retry allowed fails
    // too); two drivers decline.
    report(&s, &vins[0], &tokens[0], "succeeded", "", 1).await;
    for i in [1, 2] {
        report(
            &s,
            &vins[i],
            &tokens[i],
            "failed",
            "E42 checksum mismatch",
            1,
        )
        .await;
        report(
            &s,
            &vins[i],
            &tokens[i],
            "failed",
            "E42 checksum mismatch",
            2,
        )
        .await;
    }
    for i in [3, 4] {
        report(&s, &vins[i], &tokens[i], "rejected", "driver declined", 1).await;
    }
    b.wait_for_text("E42 checksum mismatch", LIVE)
        .await
        .unwrap();
    b.wait_for_text("83.3% done", LIVE).await.unwrap();
    assert_eq!(
        b.script("return window.__same_page === true")
            .await
            .unwrap(),
        json!(true),
        "refreshed in place"
    );
    b.screenshot("2-campaign-failures").await.unwrap();

    // The declined group can be offered again (the failures are out of
    // retries): confirm, and the page says what happened.
    assert!(b
        .find_all("form[action$='/retry']:has(input[value='E42 checksum mismatch'])")
        .await
        .unwrap()
        .is_empty());
    let retry = b
        .find("form[action$='/retry']:has(input[value='driver declined']) button")
        .await
        .unwrap();
    b.click(&retry).await.unwrap();
    b.accept_dialog().await.unwrap();
    b.wait_for_text("2 vehicles offered the update again", LIVE)
        .await
        .unwrap();
    b.wait_for_text("retry-group", LIVE).await.unwrap();
    b.screenshot("3-group-retried").await.unwrap();

    // Look up the vehicle with the hostile nickname from the search box.
    let search = b.find("form.search input[name=vin]").await.unwrap();
    // U+E007 is WebDriver's Enter key.
    b.type_into(&search, &format!("{}\u{E007}", vins[5].to_lowercase()))
        .await
        .unwrap();
    b.wait_for_text("Why this vehicle is, or is not, in each campaign", LIVE)
        .await
        .unwrap();
    b.wait_for_text("<script>window.__xss = 1</script><b>bold</b>", LIVE)
        .await
        .unwrap();
    assert_eq!(
        b.script("return window.__xss === undefined").await.unwrap(),
        json!(true),
        "never run"
    );
    assert_eq!(b.find_all("td b").await.unwrap().len(), 0, "never markup");
    b.wait_for_text("won", LIVE).await.unwrap();
    b.wait_for_text("\"action_id\"", LIVE).await.unwrap();
    // Each field's source and when it was set.
    let inventory = b.text_of("table.kv").await.unwrap();
    assert!(
        inventory.contains("Set")
            && inventory.contains(&format!(
                "model ID.4 api {}",
                chrono::Utc::now().format("%Y-%m-%d")
            )),
        "{inventory}"
    );
    // Online from its poll, once the batch is written (every 5 s).
    let page = b.url().await.unwrap();
    let deadline = std::time::Instant::now() + LIVE;
    loop {
        let title = b.text_of("h1").await.unwrap();
        if title.contains("online") && title.contains("seen") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never online: {title}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.goto(&page).await.unwrap();
    }
    b.screenshot("4-vehicle").await.unwrap();

    b.goto(&format!("{}/ui/health", s.http)).await.unwrap();
    b.wait_for_text("Staged vehicles", LIVE).await.unwrap();
    b.screenshot("5-health").await.unwrap();

    // A viewer sees the campaign and no button.
    b.click(&b.find("form[action='/ui/logout'] button").await.unwrap())
        .await
        .unwrap();
    b.wait_for_text("Sign in", LIVE).await.unwrap();
    let field = b.find("input[name=token]").await.unwrap();
    b.type_into(&field, &viewer).await.unwrap();
    b.click(&b.find("form button[type=submit]").await.unwrap())
        .await
        .unwrap();
    b.wait_for_text("Campaigns", LIVE).await.unwrap();
    b.goto(&format!("{}/ui/campaigns/{id}", s.http))
        .await
        .unwrap();
    b.wait_for_text("Failure triage", LIVE).await.unwrap();
    let buttons = b
        .script("return [...document.querySelectorAll('main button')].map(b => b.innerText)")
        .await
        .unwrap();
    assert_eq!(buttons, json!([]), "a viewer has no action buttons");
    b.screenshot("6-viewer").await.unwrap();
    eprintln!("screenshots in {}", shots.display());
}
