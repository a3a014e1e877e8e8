//! A campaign through the real binary on embedded defaults: REST to create,
//! approve and launch it, staging's gRPC to see what vehicles would fetch,
//! the campaign manager's ReportStatus as the adapters will call it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ota_proto::v1 as pb;
use pb::campaign_manager_client::CampaignManagerClient;
use pb::staging_client::StagingClient;
use serde_json::{json, Value};

async fn post(url: String, token: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(url.clone())
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url}: {status} {v}");
    v
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_campaign_reaches_staged_documents_and_completes() {
    let s = Server::start(&[("OTA_CAMPAIGNS__TICK_MS", "200")], &[]);
    let admin = s.admin_token();
    let api = |p: &str| format!("{}/api/v1{p}", s.http);
    let r = reqwest::Client::new()
        .post(api("/vehicles:import?source=manufacturing"))
        .bearer_auth(&admin)
        .header("content-type", "application/x-ndjson")
        .body(
            (0..4)
                .map(|i| {
                    json!({"vin": format!("WVWZZZE1ZMP{i:06}"), "region": "EU", "gateway": "hcp1",
                           "ecus": {"BMS": {"hw": "H2", "sw": "2.2.0"}}})
                    .to_string()
                        + "\n"
                })
                .collect::<String>(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    post(
        api("/packages"),
        &admin,
        json!({"name": "bms-fw", "version": "2.3.1", "ecu": "BMS",
               "artifacts": [{"url": "https://cdn.example/bms.bin", "sha256": "b".repeat(64), "size": 7}]}),
    )
    .await;
    let spec = "name: e2e\ntarget: 'vehicle.region == \"EU\"'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\nrollout:\n  max_per_minute: 60000\npriority: 7\n";
    let r = reqwest::Client::new()
        .post(api("/campaigns"))
        .bearer_auth(&admin)
        .header("content-type", "application/yaml")
        .body(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let approver = post(
        api("/tokens"),
        &admin,
        json!({"name": "ann", "role": "approver"}),
    )
    .await;
    let approver = approver["token"].as_str().unwrap().to_string();
    post(
        api(&format!("/campaigns/{id}:approve")),
        &approver,
        json!({}),
    )
    .await;
    post(api(&format!("/campaigns/{id}:launch")), &admin, json!({})).await;

    let mut staging = StagingClient::connect(s.grpc.clone()).await.unwrap();
    let mut campaigns = CampaignManagerClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let vin = "WVWZZZE1ZMP000002".to_string();
    let doc = |staging: &mut StagingClient<tonic::transport::Channel>| {
        let mut staging = staging.clone();
        let vin = vin.clone();
        async move {
            staging
                .get_actions(pb::GetActionsRequest { vin })
                .await
                .unwrap()
                .into_inner()
        }
    };
    eventually("the action reaching the staged document", || {
        let d = doc(&mut staging);
        async move { d.await.actions.len() == 1 }
    })
    .await;
    let d = doc(&mut staging).await;
    let action = &d.actions[0];
    assert_eq!(
        (action.campaign_id.as_str(), action.ecu.as_str()),
        (id.as_str(), "BMS")
    );
    assert_eq!(action.package.as_ref().unwrap().version, "2.3.1");
    assert!(
        action.deadline.is_some(),
        "72h default timeout gives a deadline"
    );
    let etag = d.etag.clone();

    // Pausing takes the undelivered action back from the document.
    post(
        api(&format!("/campaigns/{id}:pause")),
        &admin,
        json!({"reason": "check"}),
    )
    .await;
    eventually("the paused action leaving the document", || {
        let d = doc(&mut staging);
        async move { d.await.actions.is_empty() }
    })
    .await;
    post(api(&format!("/campaigns/{id}:resume")), &admin, json!({})).await;
    eventually("the resumed action returning", || {
        let d = doc(&mut staging);
        async move { d.await.actions.len() == 1 }
    })
    .await;
    // Staged again, the action has a new deadline: new content, new etag.
    let again = doc(&mut staging).await;
    assert_ne!(again.etag, etag);
    assert_ne!(again.actions[0].deadline, d.actions[0].deadline);
    assert_eq!(
        doc(&mut staging).await.etag,
        again.etag,
        "same content, same etag"
    );

    // Every vehicle reports success; the campaign completes.
    for i in 0..4 {
        let vin = format!("WVWZZZE1ZMP{i:06}");
        let vin2 = vin.clone();
        eventually("every vehicle's action staged", || {
            let mut staging = staging.clone();
            let vin = vin2.clone();
            async move {
                let d = staging.get_actions(pb::GetActionsRequest { vin }).await;
                !d.unwrap().into_inner().actions.is_empty()
            }
        })
        .await;
        let d = staging
            .get_actions(pb::GetActionsRequest { vin: vin.clone() })
            .await
            .unwrap()
            .into_inner();
        let r = campaigns
            .report_status(pb::ReportStatusRequest {
                vin: vin.clone(),
                action_id: d.actions[0].action_id.clone(),
                state: "succeeded".into(),
                progress: 100,
                seq: 1,
                protocol: "test".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.applied);
    }
    eventually("the campaign completing", || {
        let url = api(&format!("/campaigns/{id}"));
        let admin = admin.clone();
        async move {
            let c: Value = reqwest::Client::new()
                .get(url)
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            c["state"] == "completed"
        }
    })
    .await;
    eventually("finished actions leaving the documents", || {
        let d = doc(&mut staging);
        async move { d.await.actions.is_empty() }
    })
    .await;
    let stats = staging
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.store.as_str(), stats.staged_vehicles), ("memory", 0));
    assert!(stats.events_processed > 0);
}
