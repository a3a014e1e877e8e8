//! The counters reports and the rollout read stay equal to a GROUP BY over
//! the actions through everything that writes actions, with concurrent
//! writers too, and the migration that introduced them counts the actions
//! that existed before.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use ota_campaign_manager::model::{ActionState, Transition};

on_both!(
    counters_equal_a_group_by_through_a_whole_campaign,
    concurrent_status_reports_are_all_counted,
);

/// Vehicles 0..n of three models, two regions, two gateways and two BMS
/// hardware versions; every fifth already runs the target version.
async fn mixed_fleet(h: &Harness, n: u32) {
    for i in 0..n {
        let sw = if i % 5 == 4 { "2.3.1" } else { "2.2.0" };
        let model = ["ID.3", "ID.4", "ID.5"][i as usize % 3];
        h.upsert(serde_json::json!({
            "vin": vin(i), "model": model, "platform": "MEB",
            "region": if i % 7 == 6 { "US" } else { "EU" },
            "gateway": if i % 2 == 1 { "hcp3" } else { "hcp1" },
            "ecus": {"BMS": {"hw": if i % 4 == 0 { "H1" } else { "H2" }, "sw": sw}}
        }))
        .await;
    }
}

async fn counters_equal_a_group_by_through_a_whole_campaign(h: Harness) {
    mixed_fleet(&h, 30).await;
    h.package("bms-fw", "2.3.1").await;
    h.package("bms-fw-hcp3", "2.3.1").await;
    // Every EU vehicle, so those already updated start as succeeded; the
    // second wave waits for a manual advance, so the campaign does not
    // complete while the first one times out.
    let spec = spec(
        "counted",
        "rollout:\n  waves: [60, 100]\n  advance: manual\n  max_per_minute: 600000\n  action_timeout: 1s\n  max_retries: 1\n",
    )
    .replace("version_cmp(vehicle.ecus.BMS.sw, \"2.3.1\") < 0", "true");
    let id = h.launch(&spec).await;
    h.assert_counts_exact(&id, "targeting").await;
    let report = h.manager.report(&id, 5).await.unwrap();
    assert_eq!(report.by_hardware.len(), 2, "{:?}", report.by_hardware);
    assert!(h.count(&id, ActionState::Succeeded).await > 0);

    h.manager.tick().await.unwrap();
    h.assert_counts_exact(&id, "the first wave staged").await;
    let staged = h.actions_in(&id, ActionState::Staged).await;
    assert!(staged.len() >= 6, "{}", staged.len());
    h.manager
        .store()
        .mark_delivered(&staged[0].0, &[staged[0].1.clone()], chrono::Utc::now())
        .await
        .unwrap();
    h.assert_counts_exact(&id, "a delivery").await;

    // Every state a vehicle reports; a failure is retried once.
    let states = [
        ActionState::Accepted,
        ActionState::Downloading,
        ActionState::Installing,
        ActionState::Succeeded,
        ActionState::Failed,
        ActionState::Rejected,
    ];
    for ((vin, action), state) in staged.iter().zip(states) {
        h.report(vin, action, state, 1, "step").await.unwrap();
        h.assert_counts_exact(&id, state.as_str()).await;
    }
    let (failing, action) = &staged[4];
    let r = h
        .report(failing, action, ActionState::Failed, 2, "again")
        .await
        .unwrap();
    assert_eq!(r.state, ActionState::Failed);
    h.assert_counts_exact(&id, "a retried failure failing again")
        .await;

    // Silent actions: staged again once, then timed out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.manager.tick().await.unwrap();
    h.assert_counts_exact(&id, "the first timeout").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.manager.tick().await.unwrap();
    h.assert_counts_exact(&id, "the second timeout").await;
    assert!(h.count(&id, ActionState::TimedOut).await > 0);

    // A vehicle already runs the version, another leaves.
    h.upsert(serde_json::json!({"vin": vin(0), "ecus": {"BMS": {"hw": "H1", "sw": "2.3.1"}}}))
        .await;
    h.upsert(serde_json::json!({"vin": vin(1), "region": "US"}))
        .await;
    h.manager
        .on_vehicles_changed(&[vin(0), vin(1)])
        .await
        .unwrap();
    h.assert_counts_exact(&id, "re-targeting").await;

    h.manager
        .transition(&id, Transition::Pause, &engineer(), "")
        .await
        .unwrap();
    h.assert_counts_exact(&id, "pause").await;
    let groups = h.manager.failure_groups(&id, 0).await.unwrap();
    let mut retried = 0;
    for g in &groups.groups {
        retried += h
            .manager
            .retry_group(&id, &g.reason, &engineer())
            .await
            .unwrap()
            .0;
        h.assert_counts_exact(&id, &format!("retrying {}", g.reason))
            .await;
    }
    assert_eq!(retried, 1, "the rejected action had a retry left");
    h.manager
        .transition(&id, Transition::Resume, &engineer(), "")
        .await
        .unwrap();
    h.manager.tick().await.unwrap();
    h.assert_counts_exact(&id, "resume").await;
    h.manager.advance(&id, &engineer(), "").await.unwrap();
    h.manager.tick().await.unwrap();
    h.assert_counts_exact(&id, "the second wave").await;
    h.manager
        .transition(&id, Transition::Abort, &engineer(), "")
        .await
        .unwrap();
    h.assert_counts_exact(&id, "abort").await;
    // Folding moves PostgreSQL's appended changes; the counts stay.
    h.manager.store().fold_counts().await.unwrap();
    h.assert_counts_exact(&id, "a fold").await;
    let report = h.manager.report(&id, 5).await.unwrap();
    assert_eq!(report.total, 26);
    assert!(!report.failure_series.is_empty());
    assert!(report.retries > 0);
}

/// Reports of many vehicles at once land in concurrent status batches: each
/// one is counted, none waits for another on a counter, none deadlocks.
async fn concurrent_status_reports_are_all_counted(h: Harness) {
    const N: u32 = 400;
    h.bulk_fleet(N).await;
    h.package("bms-fw", "2.3.1").await;
    let id = h
        .launch(
            "name: many\ntarget: 'true'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\n\
             rollout:\n  max_per_minute: 600000\n",
        )
        .await;
    // The rate limit's bucket fills from the launch: 10,000 a second
    // hold the 400 after 40 ms.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    h.manager.tick().await.unwrap();
    let staged = h.actions_in(&id, ActionState::Staged).await;
    assert_eq!(staged.len(), N as usize);
    let mut tasks = Vec::new();
    for (i, (vin, action)) in staged.into_iter().enumerate() {
        let manager = h.manager.clone();
        tasks.push(tokio::spawn(async move {
            let report = |state, seq| ota_campaign_manager::status::StatusReport {
                vin: vin.clone(),
                action_id: action.clone(),
                state,
                progress: 50,
                message: format!("m{}", i % 3),
                seq,
                protocol: "test".into(),
            };
            manager
                .report_status(report(ActionState::Downloading, 1))
                .await
                .unwrap();
            let last = if i % 4 == 0 {
                ActionState::Failed
            } else {
                ActionState::Succeeded
            };
            manager.report_status(report(last, 2)).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    h.assert_counts_exact(&id, "concurrent reports").await;
    assert_eq!(h.count(&id, ActionState::Succeeded).await, 300);
    assert_eq!(h.count(&id, ActionState::Failed).await, 100);
}

mod migration {
    //! A database of the previous version, with actions, migrated.

    use ota_db::{Db, DbOptions};
    use sqlx::Connection;

    /// Migrations before the counters, copied apart.
    fn previous_migrations(backend: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let src = format!("{}/../../migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.as_str() < "0007" {
                std::fs::copy(&path, dir.path().join(name)).unwrap();
            }
        }
        dir
    }

    /// A campaign with actions in several states, written as the previous
    /// version did.
    const EXISTING: &[&str] = &[
        "INSERT INTO packages (id, name, version, ecu, created_by, created_at) VALUES ('p1', 'bms-fw', '2.3.1', 'BMS', 'erin', 0)",
        "INSERT INTO campaigns (id, name, state, spec, plan, priority, created_by, created_at, updated_at) \
         VALUES ('c1', 'old', 'running', '', '{}', 0, 'erin', 0, 0), ('c2', 'other', 'running', '', '{}', 0, 'erin', 0, 0)",
        "INSERT INTO actions (id, campaign_id, vin, ecu, package_id, rule_index, bucket, wave, state, attempts, model, region, finished_at, state_at, created_at) VALUES \
         ('1', 'c1', 'WVWZZZE1ZMP000001', 'BMS', 'p1', 0, 1, 0, 'succeeded', 1, 'ID.4', 'EU', 120000, 0, 0), \
         ('2', 'c1', 'WVWZZZE1ZMP000002', 'BMS', 'p1', 0, 2, 0, 'failed', 3, 'ID.4', 'EU', 180000, 0, 0), \
         ('3', 'c1', 'WVWZZZE1ZMP000003', 'BMS', 'p1', 0, 3, 1, 'staged', 1, 'ID.3', 'US', NULL, 0, 0), \
         ('4', 'c1', 'WVWZZZE1ZMP000004', 'BMS', 'p1', 0, 4, 1, 'pending', 0, 'ID.3', 'EU', NULL, 0, 0), \
         ('5', 'c2', 'WVWZZZE1ZMP000001', 'BMS', 'p1', 0, 5, 0, 'timed_out', 2, 'ID.4', 'EU', 125000, 0, 0)",
    ];

    async fn check(url: &str, db: Db) {
        for c in ["c1", "c2"] {
            let kept = ota_campaign_manager::store::Store::new(db.clone(), Default::default())
                .counts(c, None)
                .await
                .unwrap();
            let expected = super::grouped_counts(&db, c).await;
            assert!(!expected.is_empty());
            assert_eq!(kept.rows, expected, "{c} in {url}");
        }
    }

    #[tokio::test]
    async fn sqlite_counts_the_actions_that_existed() {
        let migrations = previous_migrations("sqlite");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ota.db").display());
        {
            let opts: sqlx::sqlite::SqliteConnectOptions = url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
            sqlx::migrate::Migrator::new(migrations.path())
                .await
                .unwrap()
                .run(&pool)
                .await
                .unwrap();
            for sql in EXISTING {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        let db = Db::connect(&url, &DbOptions::default()).await.unwrap();
        check(&url, db).await;
    }

    #[tokio::test]
    async fn postgres_counts_the_actions_that_existed() {
        let migrations = previous_migrations("postgres");
        let admin = ota_tests::db::admin_url();
        let name = format!("ota_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = format!("{}/{name}", &admin[..admin.rfind('/').unwrap()]);
        {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::migrate::Migrator::new(migrations.path())
                .await
                .unwrap()
                .run(&pool)
                .await
                .unwrap();
            for sql in EXISTING {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        let db = Db::connect(&url, &DbOptions::default()).await.unwrap();
        check(&url, db.clone()).await;
        if let Db::Postgres(pool) = db {
            pool.close().await;
        }
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
