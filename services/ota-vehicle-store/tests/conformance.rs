//! One behaviour suite for the vehicle store, run against every backend: the
//! embedded SQLite file and the real PostgreSQL.

use futures::stream;
use ota_common::vehicle::{EcuPatch, VehiclePatch, MAX_ATTRIBUTES, MAX_ECUS, MAX_VALUE_LEN};
use ota_common::{CodedError, ErrorCode};
use ota_vehicle_store::{
    ImportItem, ImportSummary, Precedence, StoreError, VehicleFilter, VehicleStore,
};

fn vin(n: u32) -> String {
    format!("WVWZZZE1ZMP{n:06}")
}

fn patch(n: u32) -> VehiclePatch {
    VehiclePatch {
        vin: vin(n),
        model: Some(if n.is_multiple_of(2) { "ID.4" } else { "ID.3" }.into()),
        model_year: Some(2020 + (n % 4) as i32),
        platform: Some("MEB".into()),
        gateway: Some(if n.is_multiple_of(3) { "hcp3" } else { "icas1" }.into()),
        region: Some(if n.is_multiple_of(5) { "NA" } else { "EU" }.into()),
        tags: Some(if n.is_multiple_of(7) {
            vec!["test-fleet".into()]
        } else {
            vec![]
        }),
        ecus: [
            (
                "BMS".to_owned(),
                EcuPatch {
                    hw: Some("H2".into()),
                    sw: Some("2.2.0".into()),
                },
            ),
            (
                "HU".to_owned(),
                EcuPatch {
                    hw: Some("MIB3".into()),
                    sw: Some("5.1.0".into()),
                },
            ),
            (
                "GW".to_owned(),
                EcuPatch {
                    hw: Some("G1".into()),
                    sw: Some("1.0.0".into()),
                },
            ),
        ]
        .into(),
        ..Default::default()
    }
}

fn items(
    records: Vec<ImportItem>,
) -> impl futures::Stream<Item = Result<ImportItem, StoreError>> + Send {
    stream::iter(records.into_iter().map(Ok))
}

fn record(line: u64, patch: VehiclePatch) -> ImportItem {
    ImportItem::Record { line, patch }
}

async fn import(
    store: &VehicleStore,
    source: &str,
    strict: bool,
    records: Vec<ImportItem>,
) -> ImportSummary {
    store
        .import(source, strict, items(records))
        .await
        .expect("import")
}

async fn get_unknown_vehicle_is_not_found(store: VehicleStore) {
    let err = store.get(&vin(999_999)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(
        err.to_string(),
        format!("vehicle {} not found", vin(999_999))
    );
}

async fn get_with_malformed_vin_is_invalid_argument(store: VehicleStore) {
    let err = store.get("NOT-A-VIN").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("\"NOT-A-VIN\""), "{err}");
}

async fn upsert_creates_then_merges(store: VehicleStore) {
    let (v, created) = store.upsert("manufacturing", patch(1)).await.unwrap();
    assert!(created);
    assert_eq!(v.model.as_deref(), Some("ID.3"));
    assert_eq!(v.provenance["model"], "manufacturing");
    let (v, created) = store
        .upsert(
            "dealer",
            VehiclePatch {
                vin: vin(1),
                country: Some("AT".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(v.country.as_deref(), Some("AT"));
    assert_eq!(v.model.as_deref(), Some("ID.3"), "absent fields are kept");
    let stored = store.get(&vin(1)).await.unwrap();
    assert_eq!(stored, v, "what upsert returns is what get reads");
    assert_eq!(stored.ecus["BMS"].sw, "2.2.0");
}

async fn vehicle_reports_win_for_ecu_software(store: VehicleStore) {
    import(&store, "manufacturing", false, vec![record(1, patch(2))]).await;
    let mut report = VehiclePatch {
        vin: vin(2),
        ..Default::default()
    };
    report.ecus.insert(
        "BMS".into(),
        EcuPatch {
            hw: None,
            sw: Some("2.3.1".into()),
        },
    );
    let v = store.report_inventory(report).await.unwrap();
    assert_eq!(v.ecus["BMS"].sw, "2.3.1");
    assert_eq!(v.ecus["BMS"].hw, "H2", "hw was not reported and is kept");
    assert!(v.last_seen.is_some(), "a report marks the vehicle seen");
    // Manufacturing re-imports its (older) view: the vehicle's word stands.
    let s = import(&store, "manufacturing", false, vec![record(1, patch(2))]).await;
    assert_eq!((s.imported, s.updated, s.unchanged), (0, 0, 1));
    let v = store.get(&vin(2)).await.unwrap();
    assert_eq!(v.ecus["BMS"].sw, "2.3.1");
    assert_eq!(v.provenance["ecus.BMS.sw"], "vehicle");
    // But manufacturing still owns the model over a dealer's typo.
    store
        .upsert(
            "dealer",
            VehiclePatch {
                vin: vin(2),
                model: Some("ID4".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(&vin(2)).await.unwrap().model.as_deref(),
        Some("ID.4")
    );
}

async fn report_inventory_for_unknown_vehicle_is_not_found(store: VehicleStore) {
    let err = store
        .report_inventory(VehiclePatch {
            vin: vin(3),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert!(store.get(&vin(3)).await.is_err(), "nothing was created");
}

async fn import_counts_and_names_every_rejected_line(store: VehicleStore) {
    store.upsert("manufacturing", patch(10)).await.unwrap();
    let mut changed = patch(10);
    changed.country = Some("DE".into());
    let bad_vin = VehiclePatch {
        vin: "WVWZZZE1ZMP00000I".into(),
        ..Default::default()
    };
    let s = import(
        &store,
        "manufacturing",
        false,
        vec![
            record(1, patch(11)),
            record(2, changed),
            record(3, bad_vin),
            ImportItem::Rejected {
                line: 4,
                vin: String::new(),
                reason: "invalid JSON: eof".into(),
            },
            record(5, patch(12)),
        ],
    )
    .await;
    assert_eq!(
        (s.imported, s.updated, s.unchanged, s.rejected),
        (2, 1, 0, 2)
    );
    assert!(!s.aborted);
    assert_eq!(s.errors.len(), 2);
    assert_eq!(s.errors[0].line, 3);
    assert!(
        s.errors[0].reason.contains("'I' at position 17"),
        "{}",
        s.errors[0].reason
    );
    assert_eq!(s.errors[1].line, 4);
    assert_eq!(
        store.get(&vin(10)).await.unwrap().country.as_deref(),
        Some("DE")
    );
    store
        .get(&vin(12))
        .await
        .expect("valid lines after a bad one are imported");
}

async fn strict_import_imports_nothing_and_lists_all_errors(store: VehicleStore) {
    store.upsert("manufacturing", patch(20)).await.unwrap();
    let mut changed = patch(20);
    changed.model = Some("ID.7".into());
    let mut bad_year = patch(22);
    bad_year.model_year = Some(3000);
    let mut records: Vec<ImportItem> = (0..2500)
        .map(|i| record(i + 1, patch(30_000 + i as u32)))
        .collect();
    records.push(record(2501, changed));
    records.push(record(2502, bad_year));
    records.push(record(
        2503,
        VehiclePatch {
            vin: "short".into(),
            ..Default::default()
        },
    ));
    let s = import(&store, "manufacturing", true, records).await;
    assert!(s.aborted);
    assert_eq!((s.imported, s.updated, s.rejected), (0, 0, 2));
    assert_eq!(
        s.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![2502, 2503]
    );
    assert_eq!(
        store.get(&vin(20)).await.unwrap().model.as_deref(),
        Some("ID.4"),
        "no change landed"
    );
    assert_eq!(
        store.get(&vin(30_000)).await.unwrap_err().code(),
        ErrorCode::NotFound,
        "records before the bad line (even in earlier batches) were rolled back"
    );
}

async fn repeated_vins_in_one_import_merge_in_order(store: VehicleStore) {
    let first = patch(40);
    let second = VehiclePatch {
        vin: vin(40),
        country: Some("FR".into()),
        ..Default::default()
    };
    let third = VehiclePatch {
        vin: vin(40),
        model: Some("ID.5".into()),
        ..Default::default()
    };
    let s = import(
        &store,
        "dealer",
        false,
        vec![record(1, first), record(2, second), record(3, third)],
    )
    .await;
    assert_eq!((s.imported, s.updated), (1, 2));
    let v = store.get(&vin(40)).await.unwrap();
    assert_eq!(v.country.as_deref(), Some("FR"));
    assert_eq!(v.model.as_deref(), Some("ID.5"));
    assert_eq!(v.ecus.len(), 3);
}

async fn import_spanning_many_batches_is_complete(store: VehicleStore) {
    let n = 5_123u32;
    let s = import(
        &store,
        "manufacturing",
        false,
        (0..n).map(|i| record(i as u64 + 1, patch(i))).collect(),
    )
    .await;
    assert_eq!(s.imported, n as u64);
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = store
            .list(&VehicleFilter::default(), cursor.as_deref(), 1000)
            .await
            .unwrap();
        seen += page.len();
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, n as usize);
}

async fn list_pages_by_cursor_and_filters(store: VehicleStore) {
    import(
        &store,
        "manufacturing",
        false,
        (0..50).map(|i| record(i as u64 + 1, patch(i))).collect(),
    )
    .await;
    let (p1, c1) = store
        .list(&VehicleFilter::default(), None, 20)
        .await
        .unwrap();
    let (p2, c2) = store
        .list(&VehicleFilter::default(), c1.as_deref(), 20)
        .await
        .unwrap();
    let (p3, c3) = store
        .list(&VehicleFilter::default(), c2.as_deref(), 20)
        .await
        .unwrap();
    assert_eq!((p1.len(), p2.len(), p3.len()), (20, 20, 10));
    assert_eq!(c3, None);
    assert!(p1.last().unwrap().vin < p2[0].vin, "pages are in VIN order");

    let f = VehicleFilter {
        model: Some("ID.4".into()),
        region: Some("EU".into()),
        ..Default::default()
    };
    let (page, _) = store.list(&f, None, 100).await.unwrap();
    let expected = (0..50).filter(|i| i % 2 == 0 && i % 5 != 0).count();
    assert_eq!(page.len(), expected);
    assert!(page
        .iter()
        .all(|v| v.model.as_deref() == Some("ID.4") && v.region.as_deref() == Some("EU")));

    let f = VehicleFilter {
        tag: Some("test-fleet".into()),
        ..Default::default()
    };
    assert_eq!(
        store.list(&f, None, 100).await.unwrap().0.len(),
        (0..50).filter(|i| i % 7 == 0).count()
    );
    let f = VehicleFilter {
        model_year: Some(2021),
        gateway: Some("hcp3".into()),
        ..Default::default()
    };
    assert_eq!(
        store.list(&f, None, 100).await.unwrap().0.len(),
        (0..50).filter(|i| i % 4 == 1 && i % 3 == 0).count()
    );
}

async fn list_rejects_bad_limits_and_cursors(store: VehicleStore) {
    let err = store
        .list(&VehicleFilter::default(), None, 5000)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "limit 5000 is above the maximum page size 1000"
    );
    let err = store
        .list(&VehicleFilter::default(), Some("'; DROP TABLE"), 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

async fn invalid_source_is_rejected(store: VehicleStore) {
    let err = store.upsert("Bad Source", patch(1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("\"Bad Source\""));
}

async fn database_gone_is_unavailable(store: VehicleStore, db: ota_db::Db) {
    db.close().await;
    let err = store.get(&vin(1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
}

async fn vin_scan_lists_every_vin_in_order_with_filters(store: VehicleStore) {
    use futures::StreamExt;
    use ota_proto::v1 as pb;
    use pb::vehicle_store_server::VehicleStore as _;
    for i in 0..25 {
        let mut p = patch(i);
        p.region = Some(if i % 5 == 0 { "EU" } else { "US" }.into());
        store.upsert("manufacturing", p).await.unwrap();
    }
    let svc = ota_vehicle_store::grpc::VehicleStoreService::new(store);
    let scan = |filter: Option<pb::VehicleFilter>| {
        let req = tonic::Request::new(pb::ScanVehiclesRequest {
            filter,
            batch_size: 7,
        });
        async {
            let mut stream = svc.scan_vins(req).await.unwrap().into_inner();
            let mut vins = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch.unwrap().vins;
                assert!(batch.len() <= 7);
                vins.extend(batch);
            }
            vins
        }
    };
    let all = scan(None).await;
    assert_eq!(all, (0..25).map(vin).collect::<Vec<_>>());
    let eu = scan(Some(pb::VehicleFilter {
        region: Some("EU".into()),
        ..Default::default()
    }))
    .await;
    assert_eq!(
        eu,
        (0..25).filter(|i| i % 5 == 0).map(vin).collect::<Vec<_>>()
    );
    let req = tonic::Request::new(pb::ScanVehiclesRequest {
        filter: None,
        batch_size: 20_000,
    });
    let err = svc
        .scan_vins(req)
        .await
        .err()
        .expect("batch size above the maximum");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// `n` attributes `{prefix}{i}`.
fn attributes(prefix: &str, n: usize) -> std::collections::BTreeMap<String, String> {
    (0..n)
        .map(|i| (format!("{prefix}{i}"), "x".into()))
        .collect()
}

fn report(n: u32, attributes: std::collections::BTreeMap<String, String>) -> VehiclePatch {
    VehiclePatch {
        vin: vin(n),
        attributes,
        ..Default::default()
    }
}

/// The attack: report after report of new attributes, each report within
/// the per-write bound, used to grow one record without limit.
async fn inventory_reports_cannot_grow_a_record_past_its_bounds(store: VehicleStore) {
    let mut base = patch(50);
    base.attributes = attributes("color", 1);
    store.upsert("manufacturing", base).await.unwrap();
    store.upsert("manufacturing", patch(51)).await.unwrap();
    let other = store.get(&vin(51)).await.unwrap();

    let half = MAX_ATTRIBUTES / 2;
    store
        .report_inventory(report(50, attributes("a", half)))
        .await
        .expect("within the bound");
    for round in 0..20 {
        let err = store
            .report_inventory(report(50, attributes(&format!("r{round}-"), half + 1)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        let msg = err.to_string();
        assert!(
            msg.contains(&vin(50))
                && msg.contains("attributes")
                && msg.contains(&MAX_ATTRIBUTES.to_string()),
            "names the vehicle, the field and the limit: {msg}"
        );
    }
    let v = store.get(&vin(50)).await.unwrap();
    assert_eq!(v.attributes.len(), half + 1, "nothing of a refused report");
    assert_eq!(v.attributes["color0"], "x", "the valid part is intact");
    assert_eq!(v.ecus["BMS"].sw, "2.2.0");
    assert_eq!(
        store.get(&vin(51)).await.unwrap(),
        other,
        "others untouched"
    );

    // Up to the bound exactly is fine, and changing what is there always is.
    let room = MAX_ATTRIBUTES - v.attributes.len();
    store
        .report_inventory(report(50, attributes("b", room)))
        .await
        .expect("fills the record to the bound");
    let mut change = report(50, attributes("a", 3));
    change.attributes.values_mut().for_each(|v| *v = "y".into());
    change.ecus.insert(
        "BMS".into(),
        EcuPatch {
            hw: None,
            sw: Some("2.3.1".into()),
        },
    );
    let v = store.report_inventory(change).await.unwrap();
    assert_eq!(
        (v.attributes.len(), v.attributes["a0"].as_str()),
        (MAX_ATTRIBUTES, "y")
    );
    assert_eq!(v.ecus["BMS"].sw, "2.3.1");
    let err = store
        .report_inventory(report(50, attributes("c", 1)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Bound {
                field: "attributes",
                ..
            }
        ),
        "{err}"
    );

    // Names and values are bounded on this path as on every other.
    let long = report(50, [("k".to_owned(), "v".repeat(MAX_VALUE_LEN + 1))].into());
    let err = store.report_inventory(long).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "attributes.k is longer than {MAX_VALUE_LEN} bytes"
        )),
        "{err}"
    );
}

/// The same bound on upserts (ECUs here) and on imports, where the line
/// that would pass it is rejected and the others go on.
async fn upserts_and_imports_cannot_grow_a_record_past_its_bounds(store: VehicleStore) {
    let ecus = |prefix: &str, n: usize| -> std::collections::BTreeMap<String, EcuPatch> {
        (0..n)
            .map(|i| {
                let e = EcuPatch {
                    hw: Some("H".into()),
                    sw: Some("1".into()),
                };
                (format!("{prefix}{i}"), e)
            })
            .collect()
    };
    store.upsert("manufacturing", patch(60)).await.unwrap();
    let mut grow = patch(60);
    grow.ecus = ecus("E", MAX_ECUS - 3);
    store.upsert("dealer", grow).await.expect("up to the bound");
    let mut over = patch(60);
    over.ecus = ecus("F", 1);
    let err = store.upsert("dealer", over).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    let msg = err.to_string();
    assert!(
        msg.contains(&vin(60)) && msg.contains("ecus") && msg.contains(&MAX_ECUS.to_string()),
        "{msg}"
    );
    let full = store.get(&vin(60)).await.unwrap();
    assert_eq!(full.ecus.len(), MAX_ECUS);

    store.upsert("manufacturing", patch(61)).await.unwrap();
    let mut renamed = patch(61);
    renamed.country = Some("PL".into());
    let mut over = patch(60);
    over.attributes = attributes("n", MAX_ATTRIBUTES);
    over.ecus = ecus("G", 2);
    // Vehicle 62 is new: its first line fills it, its second would pass the
    // bound, its third changes a field (merged onto the first).
    let mut first = patch(62);
    first.attributes = attributes("a", MAX_ATTRIBUTES);
    let second = report(62, attributes("b", 1));
    let third = VehiclePatch {
        vin: vin(62),
        country: Some("CZ".into()),
        ..Default::default()
    };
    let lines = vec![
        record(1, patch(63)),
        record(2, over.clone()),
        record(3, renamed),
        record(4, first),
        record(5, second),
        record(6, third),
    ];
    let s = import(&store, "manufacturing", false, lines.clone()).await;
    assert_eq!((s.imported, s.updated, s.rejected), (2, 2, 2), "{s:?}");
    assert_eq!(
        s.errors
            .iter()
            .map(|e| (e.line, e.vin.as_str()))
            .collect::<Vec<_>>(),
        vec![(2, vin(60).as_str()), (5, vin(62).as_str())]
    );
    assert!(s.errors[0].reason.contains("ecus"), "{:?}", s.errors[0]);
    assert!(
        s.errors[1].reason.contains("attributes"),
        "{:?}",
        s.errors[1]
    );
    assert_eq!(
        store.get(&vin(60)).await.unwrap(),
        full,
        "refused line left no trace"
    );
    assert_eq!(
        store.get(&vin(61)).await.unwrap().country.as_deref(),
        Some("PL")
    );
    let v62 = store.get(&vin(62)).await.unwrap();
    assert_eq!(v62.attributes.len(), MAX_ATTRIBUTES);
    assert_eq!(v62.country.as_deref(), Some("CZ"), "the line after goes on");
    store.get(&vin(63)).await.expect("the line before is in");

    // Strict: the refused line rejects the whole file.
    let mut changed = patch(63);
    changed.model = Some("ID.7".into());
    let s = import(
        &store,
        "manufacturing",
        true,
        vec![record(1, changed), record(2, over)],
    )
    .await;
    assert!(s.aborted);
    assert_eq!(s.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2]);
    assert_eq!(
        store.get(&vin(63)).await.unwrap().model.as_deref(),
        Some("ID.3")
    );
}

async fn writes_announce_the_changed_vehicles_in_the_outbox(store: VehicleStore, db: ota_db::Db) {
    store.upsert("manufacturing", patch(1)).await.unwrap();
    store.upsert("manufacturing", patch(2)).await.unwrap();
    let payloads: Vec<String> = ota_db::with_pool!(&db, pool => {
        sqlx::query_scalar("SELECT payload FROM outbox WHERE topic = 'vehicles' ORDER BY id")
            .fetch_all(pool).await.unwrap()
    });
    let vins: Vec<String> = payloads
        .iter()
        .flat_map(|p| match serde_json::from_str(p).unwrap() {
            ota_bus::VehicleEvent::Changed { vins, .. } => vins,
        })
        .collect();
    assert_eq!(vins, [vin(1), vin(2)]);
}

/// Polls reach the store as one batch of last-seen times: it moves
/// `last_seen` forward only, skips VINs it does not know, and is no change
/// of the vehicle (no `updated_at`, no change event for campaigns).
async fn last_seen_batches_move_forward_only(store: VehicleStore, db: ota_db::Db) {
    let t = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap();
    store.upsert("manufacturing", patch(1)).await.unwrap();
    store.upsert("manufacturing", patch(2)).await.unwrap();
    let before = store.get(&vin(1)).await.unwrap();
    let outbox = |db: ota_db::Db| async move {
        let n: i64 = ota_db::with_pool!(&db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE topic = 'vehicles'")
                .fetch_one(pool).await.unwrap()
        });
        n
    };
    let events = outbox(db.clone()).await;

    let moved = store
        .mark_seen([
            (vin(1), t(1_700_000_000)),
            (vin(2), t(1_700_000_100)),
            // The same vehicle twice in a batch: the later time counts.
            (vin(1), t(1_700_000_050)),
            // Unknown: skipped, not an error (it may have been deleted).
            (vin(99), t(1_700_000_000)),
        ])
        .await
        .unwrap();
    assert_eq!(moved, 2);
    let v = store.get(&vin(1)).await.unwrap();
    assert_eq!(v.last_seen, Some(t(1_700_000_050)));
    assert_eq!(
        v.updated_at, before.updated_at,
        "being seen is not a change"
    );
    assert_eq!(outbox(db.clone()).await, events, "no change event");
    assert!(store.get(&vin(99)).await.is_err(), "nothing was created");

    // An older time (a batch from a slower replica) does not move it back.
    assert_eq!(
        store.mark_seen([(vin(1), t(1_600_000_000))]).await.unwrap(),
        0
    );
    assert_eq!(
        store.get(&vin(1)).await.unwrap().last_seen,
        Some(t(1_700_000_050))
    );
    // A time in the future is taken as now.
    let future = chrono::Utc::now() + chrono::Duration::days(365);
    store.mark_seen([(vin(2), future)]).await.unwrap();
    let seen = store.get(&vin(2)).await.unwrap().last_seen.unwrap();
    assert!(seen < future - chrono::Duration::days(300), "{seen}");
    // A malformed VIN rejects the batch and names it; nothing moves.
    let e = store
        .mark_seen([
            (vin(1), chrono::Utc::now()),
            ("NOT-A-VIN".into(), chrono::Utc::now()),
        ])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("NOT-A-VIN"), "{e}");
    assert_eq!(
        store.get(&vin(1)).await.unwrap().last_seen,
        Some(t(1_700_000_050))
    );
    assert_eq!(store.mark_seen(Vec::new()).await.unwrap(), 0);
}

/// Each field keeps when its value (or its source) was set, read back as
/// written on either database, and the set time of a field nobody changed
/// stays.
async fn each_field_keeps_when_it_was_set(store: VehicleStore) {
    store.upsert("manufacturing", patch(1)).await.unwrap();
    let first = store.get(&vin(1)).await.unwrap();
    let created = first.provenance_at["model"];
    assert_eq!(first.provenance_at["ecus.BMS.sw"], created);
    assert_eq!(
        first.provenance_at.keys().collect::<Vec<_>>(),
        first.provenance.keys().collect::<Vec<_>>(),
        "every field with a source has a time"
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut report = VehiclePatch {
        vin: vin(1),
        ..Default::default()
    };
    report.ecus.insert(
        "BMS".into(),
        EcuPatch {
            hw: None,
            sw: Some("2.3.1".into()),
        },
    );
    store.report_inventory(report).await.unwrap();
    let v = store.get(&vin(1)).await.unwrap();
    assert!(v.provenance_at["ecus.BMS.sw"] > created);
    assert_eq!(
        v.provenance_at["model"], created,
        "the model was not written"
    );
    assert_eq!(v.provenance_at["ecus.BMS.hw"], created);
    // Listing shows them too; full scans leave them out with provenance.
    let (page, _) = store
        .list(&VehicleFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(page[0].provenance_at, v.provenance_at);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                let t = ota_tests::db::sqlite().await;
                super::$name(VehicleStore::new(t.db(), Precedence::default())).await;
            })*

            #[tokio::test]
            async fn writes_announce_the_changed_vehicles_in_the_outbox() {
                let t = ota_tests::db::sqlite().await;
                super::writes_announce_the_changed_vehicles_in_the_outbox(VehicleStore::new(t.db(), Precedence::default()), t.db.clone()).await;
            }

            #[tokio::test]
            async fn last_seen_batches_move_forward_only() {
                let t = ota_tests::db::sqlite().await;
                super::last_seen_batches_move_forward_only(VehicleStore::new(t.db(), Precedence::default()), t.db.clone()).await;
            }

            #[tokio::test]
            async fn database_gone_is_unavailable() {
                let t = ota_tests::db::sqlite().await;
                super::database_gone_is_unavailable(VehicleStore::new(t.db(), Precedence::default()), t.db.clone()).await;
            }
        }
        mod postgres {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                let t = ota_tests::db::postgres().await;
                super::$name(VehicleStore::new(t.db(), Precedence::default())).await;
            })*

            #[tokio::test]
            async fn writes_announce_the_changed_vehicles_in_the_outbox() {
                let t = ota_tests::db::postgres().await;
                super::writes_announce_the_changed_vehicles_in_the_outbox(VehicleStore::new(t.db(), Precedence::default()), t.db.clone()).await;
            }

            #[tokio::test]
            async fn last_seen_batches_move_forward_only() {
                let t = ota_tests::db::postgres().await;
                super::last_seen_batches_move_forward_only(VehicleStore::new(t.db(), Precedence::default()), t.db.clone()).await;
            }

            #[tokio::test]
            async fn database_gone_is_unavailable() {
                let t = ota_tests::db::postgres().await;
                super::database_gone_is_unavailable(VehicleStore::new(t.db(), Precedence::default()), t.db.clone()).await;
            }
        }
    };
}

conformance!(
    get_unknown_vehicle_is_not_found,
    get_with_malformed_vin_is_invalid_argument,
    upsert_creates_then_merges,
    vehicle_reports_win_for_ecu_software,
    report_inventory_for_unknown_vehicle_is_not_found,
    import_counts_and_names_every_rejected_line,
    strict_import_imports_nothing_and_lists_all_errors,
    repeated_vins_in_one_import_merge_in_order,
    import_spanning_many_batches_is_complete,
    list_pages_by_cursor_and_filters,
    list_rejects_bad_limits_and_cursors,
    invalid_source_is_rejected,
    vin_scan_lists_every_vin_in_order_with_filters,
    inventory_reports_cannot_grow_a_record_past_its_bounds,
    upserts_and_imports_cannot_grow_a_record_past_its_bounds,
    each_field_keeps_when_it_was_set,
);
