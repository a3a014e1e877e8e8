//! The `ota.v1.Staging` service, the start-up path, and the campaign manager
//! client as an [`ActionSource`] (against an in-process gRPC server that
//! serves fixture data).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{action, vin, FixtureSource};
use futures::StreamExt;
use ota_bus::memory::MemoryBus;
use ota_bus::{SharedBus, StagingEvent};
use ota_proto::v1 as pb;
use ota_staging::document::{build, EMPTY_ETAG};
use ota_staging::StagedStore;
use ota_staging::{
    campaign_manager_source, ActionSource, MemoryStore, RunConfig, SharedStore, Stager,
    StagingService, StagingTasks, WorkerConfig,
};
use pb::staging_server::Staging;
use tonic::{Code, Request};

fn service(store: SharedStore, source: Arc<FixtureSource>) -> StagingService {
    let bus: SharedBus = Arc::new(MemoryBus::new());
    StagingService::new(Stager::new(store, source, 300), bus)
}

async fn ready_memory_service(source: Arc<FixtureSource>) -> StagingService {
    let svc = service(Arc::new(MemoryStore::new()), source);
    svc.stager().full_rebuild().await.unwrap();
    svc
}

async fn get_actions(svc: &StagingService, vin: &str) -> Result<pb::StagedDocument, tonic::Status> {
    svc.get_actions(Request::new(pb::GetActionsRequest { vin: vin.into() }))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn get_actions_rejects_an_invalid_vin_naming_it() {
    let svc = ready_memory_service(Arc::new(FixtureSource::default())).await;
    let err = get_actions(&svc, "WVWZZZ").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "invalid vin \"WVWZZZ\": must be 17 characters, got 6"
    );
    let err = svc.lookup("WVWZZZE1ZMP00000I").await.unwrap_err();
    assert!(err.to_string().contains("WVWZZZE1ZMP00000I"), "{err}");
}

#[tokio::test]
async fn a_vehicle_without_actions_gets_the_empty_document() {
    let svc = ready_memory_service(Arc::new(FixtureSource::default())).await;
    let doc = get_actions(&svc, &vin(1)).await.unwrap();
    assert_eq!(
        doc,
        pb::StagedDocument {
            vin: vin(1),
            etag: EMPTY_ETAG.into(),
            poll_after_s: 300,
            actions: vec![],
        }
    );
    let fast = svc.lookup(&vin(1)).await.unwrap();
    assert_eq!(fast.etag, EMPTY_ETAG);
    assert_eq!(
        std::str::from_utf8(&fast.json).unwrap(),
        format!(
            r#"{{"vin":"{}","etag":"{EMPTY_ETAG}","poll_after_s":300,"actions":[]}}"#,
            vin(1)
        )
    );
    assert_eq!(
        svc.stager().store().len().await.unwrap(),
        0,
        "nothing stored"
    );
}

#[tokio::test]
async fn get_actions_serves_the_staged_document() {
    let source = Arc::new(FixtureSource::default());
    let actions = vec![action("a1", "c1", 1, "2.3.1")];
    source.set(&vin(1), actions.clone());
    let svc = ready_memory_service(source).await;
    let expected = build(&vin(1), &actions, 300, "").unwrap().unwrap();
    let fast = svc.lookup(&vin(1)).await.unwrap();
    assert_eq!(fast, expected);
    let doc = get_actions(&svc, &vin(1)).await.unwrap();
    assert_eq!(doc, expected.to_proto(&vin(1)).unwrap());
    assert_eq!(doc.actions[0].package.as_ref().unwrap().version, "2.3.1");
}

#[tokio::test]
async fn a_memory_store_answers_unavailable_until_it_is_rebuilt() {
    let source = Arc::new(FixtureSource::default());
    source.set(&vin(1), vec![action("a1", "c1", 1, "2.3.1")]);
    let svc = service(Arc::new(MemoryStore::new()), source);
    let err = get_actions(&svc, &vin(1)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(svc.stager().full_rebuild().await.unwrap(), 1);
    assert_eq!(get_actions(&svc, &vin(1)).await.unwrap().actions.len(), 1);
}

#[tokio::test]
async fn a_corrupt_redis_document_is_restaged_and_served() {
    let ns = common::unique("test-staging");
    let store = Arc::new(common::redis_store(&ns).await);
    let source = Arc::new(FixtureSource::default());
    let actions = vec![action("a1", "c1", 1, "2.3.1")];
    source.set(&vin(1), actions.clone());
    let svc = service(store.clone(), source);
    let expected = build(&vin(1), &actions, 300, "").unwrap().unwrap();
    store
        .put_many(&[(vin(1), expected.clone())], &[false])
        .await
        .unwrap();
    // Damaged behind an intact stamp: same etag line, same length.
    let mut raw = [expected.etag.as_bytes(), b"\n", &expected.json].concat();
    let last = raw.len() - 1;
    raw[last] = b']';
    let _: () = redis::cmd("SET")
        .arg(store.key(&vin(1)))
        .arg(raw)
        .query_async(&mut common::raw_redis().await)
        .await
        .unwrap();

    let doc = get_actions(&svc, &vin(1)).await.unwrap();
    assert_eq!(doc, expected.to_proto(&vin(1)).unwrap());
    assert_eq!(
        store.get(&vin(1)).await.unwrap(),
        Some(expected),
        "repaired in place"
    );
    assert_eq!(
        store.len().await.unwrap(),
        1,
        "a repair is not a new vehicle"
    );
    common::cleanup(&ns, None).await;
}

#[tokio::test]
async fn restage_recomputes_vins_and_campaigns_and_counts_changes() {
    let source = Arc::new(FixtureSource::default());
    for n in 1..=3 {
        source.set(&vin(n), vec![action(&format!("a{n}"), "c1", 1, "2.3.1")]);
    }
    let svc = ready_memory_service(source.clone()).await;
    let restage = |scope| {
        let svc = svc.clone();
        async move {
            svc.restage(Request::new(pb::RestageRequest { scope }))
                .await
                .map(|r| r.into_inner())
        }
    };
    let vins = |v: Vec<String>| Some(pb::restage_request::Scope::Vins(pb::VinList { vins: v }));
    let campaign = |c: &str| Some(pb::restage_request::Scope::CampaignId(c.into()));

    let r = restage(vins(vec![vin(1), vin(2)])).await.unwrap();
    assert_eq!((r.vehicles, r.changed), (2, 0), "unchanged");

    source.set(&vin(2), vec![action("a2", "c1", 1, "2.4.0")]);
    source.clear(&vin(3));
    let r = restage(campaign("c1")).await.unwrap();
    assert_eq!(
        (r.vehicles, r.changed),
        (3, 2),
        "vin 2 changed, vin 3 deleted"
    );
    assert_eq!(svc.stager().store().len().await.unwrap(), 2);

    let err = restage(None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = restage(vins(vec![vin(1), "BAD".into()])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("\"BAD\""), "{}", err.message());
    let err = restage(campaign("nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_the_start_up_path() {
    let source = Arc::new(FixtureSource::default());
    source.set(&vin(1), vec![action("a1", "c1", 1, "2.3.1")]);
    let store: SharedStore = Arc::new(MemoryStore::new());
    let bus: SharedBus = Arc::new(MemoryBus::new());
    let stager = Stager::new(store.clone(), source.clone(), 300);
    let topic = common::unique("test-staging-topic");
    let svc = StagingService::new(stager.clone(), bus.clone()).with_queue(&topic, "staging");
    let tasks = StagingTasks::spawn(
        stager.clone(),
        bus.clone(),
        RunConfig {
            worker: WorkerConfig {
                topic: topic.clone(),
                wait: Duration::from_millis(100),
                ..Default::default()
            },
            reconcile_every: Duration::from_secs(3600),
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stager.is_ready() {
        assert!(Instant::now() < deadline, "rebuild did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get_actions(&svc, &vin(1)).await.unwrap().actions.len(), 1);

    source.set(&vin(2), vec![action("a2", "c1", 1, "2.3.1")]);
    let event = StagingEvent::Vins {
        vins: vec![vin(2)],
        at_ms: chrono::Utc::now().timestamp_millis() - 2000,
    };
    bus.publish(&topic, &[serde_json::to_string(&event).unwrap()])
        .await
        .unwrap();
    while tasks.worker().processed() < 1 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "event not processed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stager.reconcile().await.unwrap().unwrap();

    let stats = svc
        .stats(Request::new(pb::StatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.staged_vehicles, 2);
    assert_eq!(stats.store, "memory");
    assert_eq!(stats.events_processed, 1);
    assert_eq!(stats.queue_depth, 0);
    assert!(
        stats.lag_p50_seconds >= 2.0 && stats.lag_p99_seconds < 30.0,
        "{stats:?}"
    );
    assert!(stats.last_reconcile.is_some());
    assert_eq!(stats.last_reconcile_repaired, 0);
    tasks.shutdown().await;
}

/// Serves fixture open actions the way the campaign manager's contract
/// says; its first scan breaks off after one batch, as a restarting peer
/// would.
struct FakeCampaignManager {
    vehicles: Vec<pb::VehicleActions>,
    broke_once: AtomicBool,
}

#[tonic::async_trait]
impl pb::campaign_manager_server::CampaignManager for FakeCampaignManager {
    async fn open_actions(
        &self,
        req: Request<pb::OpenActionsRequest>,
    ) -> Result<tonic::Response<pb::OpenActionsResponse>, tonic::Status> {
        let wanted = req.into_inner().vins;
        Ok(tonic::Response::new(pb::OpenActionsResponse {
            vehicles: self
                .vehicles
                .iter()
                .filter(|v| wanted.contains(&v.vin))
                .cloned()
                .collect(),
        }))
    }

    async fn scan_open_actions(
        &self,
        req: Request<pb::ScanOpenActionsRequest>,
    ) -> Result<tonic::Response<tonic::codegen::BoxStream<pb::OpenActionsResponse>>, tonic::Status>
    {
        let req = req.into_inner();
        let rest: Vec<_> = self
            .vehicles
            .iter()
            .filter(|v| v.vin > req.after_vin)
            .cloned()
            .collect();
        let mut items: Vec<Result<pb::OpenActionsResponse, tonic::Status>> = rest
            .chunks(req.batch_size as usize)
            .map(|c| {
                Ok(pb::OpenActionsResponse {
                    vehicles: c.to_vec(),
                })
            })
            .collect();
        if !self.broke_once.swap(true, Ordering::SeqCst) {
            items.truncate(1);
            items.push(Err(tonic::Status::unavailable("restarting")));
        }
        Ok(tonic::Response::new(futures::stream::iter(items).boxed()))
    }

    async fn report_vehicles(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<tonic::Response<tonic::codegen::BoxStream<pb::ReportVehiclesResponse>>, tonic::Status>
    {
        let id = req.into_inner().id;
        if id != "c1" {
            return Err(tonic::Status::not_found(format!("campaign {id} not found")));
        }
        // Two actions of vin 1 in the campaign: two rows, one VIN.
        let row = |v: String, a: &str| pb::VehicleActionRow {
            vin: v,
            action_id: a.into(),
            ..Default::default()
        };
        let pages = vec![
            Ok(pb::ReportVehiclesResponse {
                rows: vec![row(vin(1), "a1"), row(vin(1), "a1b")],
            }),
            Ok(pb::ReportVehiclesResponse {
                rows: vec![row(vin(2), "a2")],
            }),
        ];
        Ok(tonic::Response::new(futures::stream::iter(pages).boxed()))
    }
}

#[tokio::test]
async fn the_campaign_manager_client_is_an_action_source() {
    let vehicles: Vec<_> = (0..25)
        .map(|n| pb::VehicleActions {
            vin: vin(n),
            actions: vec![action(&format!("a{n}"), "c1", 1, "2.3.1")],
        })
        .collect();
    let server = pb::campaign_manager_server::CampaignManagerServer::new(FakeCampaignManager {
        vehicles: vehicles.clone(),
        broke_once: AtomicBool::new(false),
    });
    let source = campaign_manager_source(ota_common::peer::in_process(server));

    let got = source.open_actions(&[vin(3), vin(99)]).await.unwrap();
    assert_eq!(got, vec![vehicles[3].clone()]);

    let mut scanned = Vec::new();
    let mut batches = source.scan_all(10).await.unwrap();
    while let Some(batch) = batches.next().await {
        scanned.extend(batch.unwrap());
    }
    assert_eq!(scanned, vehicles, "resumed after the break, nothing twice");

    assert_eq!(
        source.campaign_vins("c1").await.unwrap(),
        vec![vin(1), vin(2)]
    );
    let err = source.campaign_vins("c9").await.unwrap_err();
    assert_eq!(
        ota_common::CodedError::code(&err),
        ota_common::ErrorCode::NotFound
    );
    assert_eq!(err.to_string(), "campaign manager: campaign c9 not found");
}
