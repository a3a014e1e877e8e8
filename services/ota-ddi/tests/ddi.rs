//! A whole update driven by a real DDI client (the `hawkbit` crate) against
//! the real services, and the error answers, on SQLite and PostgreSQL.

mod common;

use common::{vin, Platform, GATEWAY, POLL_S};
use hawkbit::ddi::{Client, ClientAuthorization, Execution, Finished, Mode};
use ota_campaign_manager::model::ActionState;
use ota_common::rate::{RateLimit, VehicleRates};
use ota_proto::v1 as pb;
use serde_json::json;

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$name(super::Platform::new(ota_tests::db::sqlite().await).await).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$name(super::Platform::new(ota_tests::db::postgres().await).await).await })*
        }
    };
}

on_both!(
    hawkbit_client_installs_an_update,
    authentication_and_authorization,
    feedback_errors_and_legacy_fields,
    withdrawn_action_gets_a_cancel_link,
    a_controller_over_its_request_rate_gets_429,
    action_ids_are_small_shared_and_new_for_each_attempt,
    polls_mark_devices_seen_in_one_batch,
);

#[tokio::test(flavor = "multi_thread")]
async fn hawkbit_client_installs_an_update_with_remote_staging() {
    let p = Platform::with_remote_staging(ota_tests::db::sqlite().await).await;
    hawkbit_client_installs_an_update(p).await;
}

fn client(p: &Platform, v: &str, auth: ClientAuthorization) -> Client {
    Client::new(&p.base, "DEFAULT", v, auth, None, None, None).unwrap()
}

async fn hawkbit_client_installs_an_update(p: Platform) {
    let tokens = p.fleet(1).await;
    let ddi = client(
        &p,
        &vin(0),
        ClientAuthorization::TargetToken(tokens[0].clone()),
    );

    // Nothing to do yet, but the device is asked for its config data.
    let reply = ddi.poll().await.unwrap();
    assert!(reply.update().is_none());
    assert_eq!(reply.polling_sleep().unwrap().as_secs(), POLL_S as u64);
    let config = reply.config_data_request().expect("config data wanted");
    config
        .upload(
            Execution::Closed,
            Finished::Success,
            Some(Mode::Merge),
            json!({"hw_revision": "H2", "serial": "42"}),
            vec![],
        )
        .await
        .unwrap();
    let v = p.vehicles.get(&vin(0)).await.unwrap();
    assert_eq!(v.attributes["hw_revision"], "H2");
    assert!(ddi.poll().await.unwrap().config_data_request().is_none());

    let campaign = p.launch().await;
    let (action_id, state) = p.action_of(&campaign, &vin(0)).await;
    assert_eq!(state, "staged");

    let ddi_id = p.ddi_id(&action_id).await;
    let own = format!("TargetToken {}", tokens[0]);
    let polled: serde_json::Value = get(&p.controller_url(&vin(0)), Some(&own))
        .await
        .json()
        .await
        .unwrap();
    assert_ids_fit(&polled);
    let reply = ddi.poll().await.unwrap();
    let update = reply.update().expect("a deployment").fetch().await.unwrap();
    assert_eq!(update.action_id(), ddi_id);
    let deployment: serde_json::Value = get(
        &format!("{}/deploymentBase/{ddi_id}", p.controller_url(&vin(0))),
        Some(&own),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_ids_fit(&deployment);
    let chunks: Vec<_> = update.chunks().collect();
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        (chunks[0].part(), chunks[0].name(), chunks[0].version()),
        ("BMS", "bms-fw", "2.3.1")
    );
    let artifacts: Vec<_> = chunks[0].artifacts().collect();
    assert_eq!(artifacts[0].filename(), "bms-fw-2.3.1.bin");
    assert_eq!(artifacts[0].size() as u64, p.stored.size);

    update
        .send_feedback(Execution::Proceeding, Finished::None, vec!["downloading"])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = update.download(dir.path()).await.unwrap();
    assert_eq!(files.len(), 1);
    files[0].check_sha256().await.unwrap();
    files[0].check_sha1().await.unwrap();
    files[0].check_md5().await.unwrap();
    assert_eq!(std::fs::read(files[0].file()).unwrap(), p.firmware);
    // Delivery is marked off the response path; give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(p.action_of(&campaign, &vin(0)).await.1, "installing");

    update
        .send_feedback(Execution::Closed, Finished::Success, vec!["installed"])
        .await
        .unwrap();
    assert_eq!(p.count(&campaign, ActionState::Succeeded).await, 1);

    // The final feedback restaged the vehicle before it was answered: no
    // worker runs here, yet the finished action has left the staged
    // document, so no poll can hand it out again.
    let staged = p.stager.lookup(&vin(0)).await.unwrap();
    assert!(
        !String::from_utf8_lossy(&staged.json).contains(&action_id),
        "{staged:?}"
    );
    let reply = ddi.poll().await.unwrap();
    assert!(reply.update().is_none());
    assert!(reply.cancel_action().is_none());
    let installed: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/installedBase/{ddi_id}",
            p.controller_url(&vin(0))
        ))
        .header("authorization", format!("TargetToken {}", tokens[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(installed["actionHistory"]["status"], "succeeded");
    assert_ids_fit(&installed);
    assert_eq!(installed["deployment"]["chunks"][0]["version"], "2.3.1");
}

async fn get(url: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

async fn post(url: &str, auth: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn authentication_and_authorization(p: Platform) {
    let tokens = p.fleet(2).await;
    let url = p.controller_url(&vin(0));
    let own = format!("TargetToken {}", tokens[0]);
    assert_eq!(get(&url, Some(&own)).await.status(), 200);
    let res = get(&url, None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "TargetToken");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    for bad in [
        "TargetToken otav_nope",
        "Bearer whatever",
        "GatewayToken wrong",
        "TargetToken",
    ] {
        assert_eq!(get(&url, Some(bad)).await.status(), 401, "{bad}");
    }
    // A scheme of another API is named, with the ones DDI takes.
    let res = get(&url, Some("Bearer whatever")).await;
    let body: serde_json::Value = res.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("\"Bearer\"") && msg.contains("TargetToken") && msg.contains("GatewayToken"),
        "{msg}"
    );
    // Another vehicle's own token.
    let res = get(&url, Some(&format!("TargetToken {}", tokens[1]))).await;
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains(&vin(1)));
    // The gateway may act for any controller.
    let gw = format!("GatewayToken {GATEWAY}");
    assert_eq!(get(&url, Some(&gw)).await.status(), 200);
    assert_eq!(
        get(&p.controller_url(&vin(1)), Some(&gw)).await.status(),
        200
    );
    let res = get(
        &format!("{}/other/controller/v1/{}", p.base, vin(0)),
        Some(&own),
    )
    .await;
    assert_eq!(res.status(), 404);
    // The gateway token through the hawkbit client too.
    let ddi = client(
        &p,
        &vin(1),
        ClientAuthorization::GatewayToken(GATEWAY.into()),
    );
    ddi.poll().await.unwrap();
}

/// A device's polls (and a gateway's for it) are noted in memory and
/// written as one batch; a refused request is not a sign of the device.
async fn polls_mark_devices_seen_in_one_batch(p: Platform) {
    let tokens = p.fleet(3).await;
    let own = format!("TargetToken {}", tokens[0]);
    for _ in 0..3 {
        assert_eq!(
            get(&p.controller_url(&vin(0)), Some(&own)).await.status(),
            200
        );
    }
    let gw = format!("GatewayToken {GATEWAY}");
    assert_eq!(
        get(&p.controller_url(&vin(1)), Some(&gw)).await.status(),
        200
    );
    let wrong = format!("TargetToken {}", tokens[0]);
    assert_eq!(
        get(&p.controller_url(&vin(2)), Some(&wrong)).await.status(),
        403
    );
    assert_eq!(p.seen.pending(), 2);
    assert_eq!(
        p.vehicles.get(&vin(0)).await.unwrap().last_seen,
        None,
        "no write per poll"
    );

    let mut store = pb::vehicle_store_client::VehicleStoreClient::new(p.vehicle_peer.clone());
    let flushed = p.seen.flush(&store).await.unwrap();
    assert_eq!(
        (flushed.vehicles, flushed.calls, flushed.updated),
        (2, 1, 2)
    );
    assert_eq!(p.seen.pending(), 0);
    for (n, seen) in [(0, true), (1, true), (2, false)] {
        let v = store
            .get(pb::GetVehicleRequest { vin: vin(n) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v.last_seen.is_some(), seen, "{}", vin(n));
    }
}

/// The default budget (2 polls a second, bursts of 10) per controller, as
/// on the HTTP vehicle API: a device polling in a loop is told when to come
/// back, and the others are not slowed by it.
async fn a_controller_over_its_request_rate_gets_429(p: Platform) {
    let tokens = p.fleet(2).await;
    let url = p.controller_url(&vin(0));
    let own = format!("TargetToken {}", tokens[0]);
    let mut ok = 0;
    let limited = loop {
        let res = get(&url, Some(&own)).await;
        if res.status() != 200 {
            break res;
        }
        ok += 1;
        assert!(ok < 40, "40 polls in a row were all answered");
    };
    assert!(ok >= 10, "the burst of 10 is allowed, got {ok}");
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(wait, 1, "under half a second at 2 a second, rounded up");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_exhausted");
    assert!(body["error"]["message"].as_str().unwrap().contains(&vin(0)));
    // Another controller has its own budget.
    let other = format!("TargetToken {}", tokens[1]);
    assert_eq!(
        get(&p.controller_url(&vin(1)), Some(&other)).await.status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_controller_over_its_report_budget_gets_429() {
    let p = Platform::with_rates(ota_tests::db::sqlite().await, tight()).await;
    a_controller_over_its_report_budget_gets_429(p).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_controller_over_its_report_budget_gets_429() {
    let p = Platform::with_rates(ota_tests::db::postgres().await, tight()).await;
    a_controller_over_its_report_budget_gets_429(p).await;
}

/// Budgets that do not refill during a test: 4 polls, 5 reports.
fn tight() -> VehicleRates {
    VehicleRates {
        polls: RateLimit {
            per_second: 0.001,
            burst: 4,
        },
        reports: RateLimit {
            per_second: 0.001,
            burst: 5,
        },
    }
}

/// The attack: a burst of 40 configData PUTs, each a database write. Five
/// are written, the rest get 429 with Retry-After and write nothing; then
/// feedback is refused the same way, while polls (a budget of their own)
/// and other controllers carry on. deploymentBase counts as a poll;
/// artifact downloads are not counted.
async fn a_controller_over_its_report_budget_gets_429(p: Platform) {
    let tokens = p.fleet(2).await;
    let campaign = p.launch().await;
    let own = format!("TargetToken {}", tokens[0]);
    let base = p.controller_url(&vin(0));
    let config = |i: usize, auth: &str, url: &str| {
        reqwest::Client::new()
            .put(format!("{url}/configData"))
            .header("authorization", auth.to_owned())
            .header("content-type", "application/json")
            .body(json!({"mode": "merge", "data": {format!("burst{i}"): "x"}}).to_string())
            .send()
    };
    let (mut written, mut limited) = (0, None);
    for i in 0..40 {
        let res = config(i, &own, &base).await.unwrap();
        match res.status().as_u16() {
            200 => written += 1,
            429 => limited = Some(res),
            other => panic!("configData {i}: {other}"),
        }
    }
    assert_eq!(written, 5);
    let limited = limited.expect("the rest were refused");
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1);
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_exhausted");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&vin(0)) && msg.contains("report"), "{msg}");
    let v = p.vehicles.get(&vin(0)).await.unwrap();
    let burst = v
        .attributes
        .keys()
        .filter(|k| k.starts_with("burst"))
        .count();
    assert_eq!(burst, 5, "refused configData wrote nothing");
    assert_eq!(
        v.ecus["BMS"].sw, "2.2.0",
        "the rest of the record is intact"
    );

    // Feedback shares the report budget: refused, not recorded.
    let (action, state) = p.action_of(&campaign, &vin(0)).await;
    let action = p.ddi_id(&action).await;
    let res = post(
        &format!("{base}/deploymentBase/{action}/feedback"),
        &own,
        json!({"status": {"execution": "closed", "result": {"finished": "failure"}}}).to_string(),
    )
    .await;
    assert_eq!(res.status(), 429);
    assert_eq!(
        p.action_of(&campaign, &vin(0)).await.1,
        state,
        "not recorded"
    );

    // Polls have their own budget: the poll and deploymentBase count,
    // downloads do not.
    assert_eq!(get(&base, Some(&own)).await.status(), 200);
    let deployment: serde_json::Value = get(&format!("{base}/deploymentBase/{action}"), Some(&own))
        .await
        .json()
        .await
        .unwrap();
    let href = deployment["deployment"]["chunks"][0]["artifacts"][0]["_links"]["download-http"]
        ["href"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(get(&base, Some(&own)).await.status(), 200);
    assert_eq!(
        get(&format!("{base}/installedBase/{action}"), Some(&own))
            .await
            .status(),
        200
    );
    assert_eq!(get(&base, Some(&own)).await.status(), 429, "the fifth poll");
    for _ in 0..3 {
        let res = get(&href, Some(&own)).await;
        assert_eq!(res.status(), 200, "downloads are not counted");
        assert_eq!(res.bytes().await.unwrap(), p.firmware);
    }

    // Another controller has budgets of its own.
    let other = format!("TargetToken {}", tokens[1]);
    let res = config(0, &other, &p.controller_url(&vin(1))).await.unwrap();
    assert_eq!(res.status(), 200);
    let v1 = p.vehicles.get(&vin(1)).await.unwrap();
    assert_eq!(v1.attributes["burst0"], "x");
}

async fn feedback_errors_and_legacy_fields(p: Platform) {
    let tokens = p.fleet(2).await;
    let campaign = p.launch().await;
    let a0 = p.ddi_id(&p.action_of(&campaign, &vin(0)).await.0).await;
    let a1 = p.ddi_id(&p.action_of(&campaign, &vin(1)).await.0).await;
    let own = format!("TargetToken {}", tokens[0]);
    let base = p.controller_url(&vin(0));
    let feedback = |a: &str| format!("{base}/deploymentBase/{a}/feedback");

    // Legacy `id` and `time` are ignored; the answer is 200 with no body.
    let res = post(
        &feedback(&a0),
        &own,
        json!({"id": "999", "time": "20190809T121314",
               "status": {"execution": "proceeding",
                          "result": {"finished": "none", "progress": {"cnt": 1, "of": 2}},
                          "details": ["step 1"]}})
        .to_string(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), 0);
    assert_eq!(p.action_of(&campaign, &vin(0)).await.1, "installing");

    let ok =
        json!({"status": {"execution": "closed", "result": {"finished": "failure"}}}).to_string();
    for unknown in ["no-such-action", "2147483647", "99999999999999999999"] {
        let res = post(&feedback(unknown), &own, ok.clone()).await;
        assert_eq!(res.status(), 404, "{unknown}");
    }
    // A platform action id is not a DDI id.
    let platform_id = p.action_of(&campaign, &vin(0)).await.0;
    let res = post(&feedback(&platform_id), &own, ok.clone()).await;
    assert_eq!(res.status(), 404);
    // Vehicle 0 reporting on vehicle 1's action.
    let res = post(&feedback(&a1), &own, ok.clone()).await;
    assert_eq!(res.status(), 403);
    assert_eq!(p.action_of(&campaign, &vin(1)).await.1, "staged");

    for (body, needle) in [
        ("{not json", "invalid feedback"),
        (
            r#"{"status": {"execution": "flying", "result": {"finished": "none"}}}"#,
            "flying",
        ),
        (r#"{"status": {"execution": "closed"}}"#, "result"),
        (r#"{"id": "1"}"#, "status"),
    ] {
        let res = post(&feedback(&a0), &own, body.to_owned()).await;
        assert_eq!(res.status(), 400, "{body}");
        let e: serde_json::Value = res.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_argument");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let huge = json!({"status": {"execution": "proceeding", "result": {"finished": "none"},
        "details": ["x".repeat(70 * 1024)]}})
    .to_string();
    assert_eq!(post(&feedback(&a0), &own, huge).await.status(), 413);

    // Unknown deployment; the artifact link with a range.
    assert_eq!(
        get(&format!("{base}/deploymentBase/nope"), Some(&own))
            .await
            .status(),
        404
    );
    let deployment: serde_json::Value = get(&format!("{base}/deploymentBase/{a0}"), Some(&own))
        .await
        .json()
        .await
        .unwrap();
    let art = &deployment["deployment"]["chunks"][0]["artifacts"][0];
    assert_eq!(art["hashes"]["sha1"], p.stored.sha1);
    assert_eq!(art["hashes"]["md5"], p.stored.md5);
    let href = art["_links"]["download-http"]["href"].as_str().unwrap();
    let res = reqwest::Client::new()
        .get(href)
        .header("authorization", &own)
        .header("range", "bytes=-100")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.bytes().await.unwrap(),
        p.firmware[p.firmware.len() - 100..]
    );
    // Vehicle 1 cannot fetch through vehicle 0's URL.
    let other = format!("TargetToken {}", tokens[1]);
    assert_eq!(get(href, Some(&other)).await.status(), 403);

    // Bad config data names the key.
    let res = reqwest::Client::new()
        .put(format!("{base}/configData"))
        .header("authorization", &own)
        .body(json!({"mode": "merge", "data": {"nested": {"a": 1}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let e: serde_json::Value = res.json().await.unwrap();
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("data.nested"));
}

async fn withdrawn_action_gets_a_cancel_link(p: Platform) {
    let tokens = p.fleet(1).await;
    let campaign = p.launch().await;
    let ddi = client(
        &p,
        &vin(0),
        ClientAuthorization::TargetToken(tokens[0].clone()),
    );
    let update = ddi
        .poll()
        .await
        .unwrap()
        .update()
        .unwrap()
        .fetch()
        .await
        .unwrap();
    let action_id = update.action_id().to_owned();
    assert!(action_id.parse::<i32>().is_ok(), "{action_id}");

    let engineer = ota_campaign_manager::Actor {
        name: "erin".into(),
        role: "engineer".into(),
    };
    p.manager
        .transition(
            &campaign,
            ota_campaign_manager::model::Transition::Abort,
            &engineer,
            "wrong build",
        )
        .await
        .unwrap();
    p.restage(&campaign).await;

    let reply = ddi.poll().await.unwrap();
    assert!(reply.update().is_none());
    let cancel = reply.cancel_action().expect("a cancel link");
    assert_eq!(cancel.id().await.unwrap(), action_id);
    let own = format!("TargetToken {}", tokens[0]);
    let answer: serde_json::Value = get(
        &format!("{}/cancelAction/{action_id}", p.controller_url(&vin(0))),
        Some(&own),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["cancelAction"]["stopId"], action_id.as_str());
    assert_ids_fit(&answer);
    cancel
        .send_feedback(Execution::Closed, Finished::Success, vec!["stopped"])
        .await
        .unwrap();
    assert!(ddi.poll().await.unwrap().cancel_action().is_none());
}

/// Every action id in a DDI answer, and every number in its links, fits a
/// signed 32-bit integer: SWUpdate and Zephyr's client keep the id in one.
fn assert_ids_fit(answer: &serde_json::Value) {
    fn walk(key: &str, v: &serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| walk(k, v)),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(key, v)),
            serde_json::Value::String(s) if key == "id" || key == "stopId" => {
                let n: i64 = s
                    .parse()
                    .unwrap_or_else(|_| panic!("{key} {s:?} is a number"));
                assert!((1..=i32::MAX as i64).contains(&n), "{key} {n}");
            }
            serde_json::Value::String(s) if key == "href" => {
                let path = s.split('?').next().unwrap();
                for seg in path
                    .split('/')
                    .filter(|x| x.bytes().all(|b| b.is_ascii_digit()))
                {
                    if let Ok(n) = seg.parse::<u128>() {
                        assert!(n <= i32::MAX as u128, "{s}");
                    }
                }
            }
            _ => {}
        }
    }
    walk("", answer);
}

/// The DDI ids: within 32 bits, the same from any process (two
/// independent id stores over one database), and a new one for a retry.
async fn action_ids_are_small_shared_and_new_for_each_attempt(p: Platform) {
    use ota_ddi::ids::{ActionIds, ActionRef};
    let a = ActionIds::new(p.db.db().clone());
    let b = ActionIds::new(p.db.db().clone());
    let big = format!("{}", i64::MAX - 7);
    let first = ActionRef {
        action_id: big.clone(),
        attempt: 1,
    };
    let retry = ActionRef {
        action_id: big,
        attempt: 2,
    };
    let id = a.ddi_id(&first).await.unwrap();
    assert!(id > 0);
    assert_eq!(b.ddi_id(&first).await.unwrap(), id);
    assert_eq!(a.ddi_id(&first).await.unwrap(), id);
    let id2 = b.ddi_id(&retry).await.unwrap();
    assert_ne!(id2, id);
    assert_eq!(a.action(&id2.to_string()).await.unwrap(), Some(retry));
    assert_eq!(b.action(&id.to_string()).await.unwrap(), Some(first));
    assert_eq!(a.action("0").await.unwrap(), None);
    assert_eq!(a.action("-1").await.unwrap(), None);
    assert_eq!(a.action("not a number").await.unwrap(), None);
}

/// Polls of the base resource are counted by outcome in
/// `ota_poll_requests_total`, beside the HTTP vehicle API's; no label
/// carries the controller id. A current-thread runtime, so the test's own
/// metrics recorder sees the server's requests.
#[tokio::test]
async fn polls_are_counted_by_outcome() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let p = Platform::with_rates(ota_tests::db::sqlite().await, tight()).await;
    let tokens = p.fleet(1).await;
    let url = p.controller_url(&vin(0));
    let own = format!("TargetToken {}", tokens[0]);
    for _ in 0..4 {
        assert_eq!(get(&url, Some(&own)).await.status(), 200);
    }
    assert_eq!(get(&url, Some(&own)).await.status(), 429);
    assert_eq!(get(&url, Some("TargetToken nope")).await.status(), 401);
    let text = metrics.render();
    for line in [
        r#"ota_poll_requests_total{protocol="ddi",outcome="200"} 4"#,
        r#"ota_poll_requests_total{protocol="ddi",outcome="429"} 1"#,
        r#"ota_poll_requests_total{protocol="ddi",outcome="401"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    assert!(
        !text.contains(&vin(0)),
        "a controller id in a label:\n{text}"
    );
}
