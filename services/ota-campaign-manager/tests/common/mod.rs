//! A campaign manager over the real vehicle store and rule engine on a fresh
//! database (`ota_tests::platform::Services`); the rollout is driven tick
//! by tick so tests decide when time passes.

#![allow(dead_code)]

/// One test per name on each database: `name(Harness)` runs on a fresh
/// SQLite file and on a fresh PostgreSQL database (the tests' module uses
/// `#[macro_use] mod common;`).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name(super::Harness::new(ota_tests::db::sqlite().await).await).await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name(super::Harness::new(ota_tests::db::postgres().await).await).await } )*
        }
    };
}

use ota_bus::outbox::Relay;
use ota_bus::{topics, SharedBus, StagingEvent};
use ota_campaign_manager::model::ActionState;
use ota_campaign_manager::status::{StatusReport, StatusResult};
use ota_campaign_manager::{CampaignError, CampaignManager};
use ota_common::vehicle::VehiclePatch;
use ota_proto::v1 as pb;
use ota_tests::db::TestDb;
use ota_vehicle_store::VehicleStore;

pub struct Harness {
    pub manager: CampaignManager,
    pub vehicles: VehicleStore,
    pub relay: Relay,
    pub bus: SharedBus,
    pub db: TestDb,
}

pub use ota_tests::platform::{approver, engineer, vin};

impl Harness {
    pub async fn new(db: TestDb) -> Self {
        let s = ota_tests::platform::Services::new(db.db());
        Self {
            manager: s.manager,
            vehicles: s.vehicles,
            relay: s.relay,
            bus: s.bus,
            db,
        }
    }

    /// Vehicles 0..n: EU, BMS at 2.2.0; odd ones on the hcp3 gateway.
    pub async fn fleet(&self, n: u32) {
        for i in 0..n {
            self.upsert(serde_json::json!({
                "vin": vin(i), "model": "ID.4", "platform": "MEB", "region": "EU",
                "gateway": if i % 2 == 1 { "hcp3" } else { "hcp1" },
                "ecus": {"BMS": {"hw": "H2", "sw": "2.2.0"}}
            }))
            .await;
        }
    }

    /// Like [`fleet`](Self::fleet), in one import: for fleets of thousands.
    pub async fn bulk_fleet(&self, n: u32) {
        let items = (0..n).map(|i| {
            let patch: VehiclePatch = serde_json::from_value(serde_json::json!({
                "vin": vin(i), "model": "ID.4", "platform": "MEB", "region": "EU",
                "gateway": "hcp3", "ecus": {"BMS": {"hw": "H2", "sw": "2.2.0"}}
            }))
            .unwrap();
            Ok(ota_vehicle_store::ImportItem::Record {
                line: u64::from(i) + 1,
                patch,
            })
        });
        let summary = self
            .vehicles
            .import("manufacturing", true, futures::stream::iter(items))
            .await
            .unwrap();
        assert_eq!(summary.imported, u64::from(n), "{summary:?}");
    }

    pub async fn upsert(&self, v: serde_json::Value) {
        let patch: VehiclePatch = serde_json::from_value(v).unwrap();
        self.vehicles.upsert("manufacturing", patch).await.unwrap();
    }

    pub async fn package(&self, name: &str, version: &str) -> pb::Package {
        let p = self
            .manager
            .create_package(
                pb::Package {
                    name: name.into(),
                    version: version.into(),
                    ecu: "BMS".into(),
                    artifacts: vec![pb::Artifact {
                        url: format!("https://cdn.example/{name}-{version}.bin"),
                        sha256: "a".repeat(64),
                        size: 1024,
                    }],
                    ..Default::default()
                },
                "erin",
            )
            .await
            .unwrap();
        p.into()
    }

    /// Creates, approves and launches a campaign, and waits for its
    /// targeting scan.
    pub async fn launch(&self, spec: &str) -> String {
        let c = self
            .manager
            .create_campaign(spec, "erin")
            .await
            .unwrap()
            .unwrap_or_else(|errors| panic!("campaign file rejected: {errors:?}"));
        use ota_campaign_manager::model::Transition::*;
        self.manager
            .transition(&c.id, Approve, &approver(), "looks good")
            .await
            .unwrap();
        self.manager
            .transition(&c.id, Launch, &engineer(), "go")
            .await
            .unwrap();
        self.manager.target_campaign(&c.id).await.unwrap();
        c.id
    }

    pub async fn counts(&self, campaign: &str) -> std::collections::HashMap<ActionState, u64> {
        self.manager.store().state_counts(campaign).await.unwrap()
    }

    pub async fn count(&self, campaign: &str, s: ActionState) -> u64 {
        self.counts(campaign).await.get(&s).copied().unwrap_or(0)
    }

    /// The campaign's actions in the given state: (vin, action id).
    pub async fn actions_in(&self, campaign: &str, s: ActionState) -> Vec<(String, String)> {
        let rows = self
            .manager
            .store()
            .campaign_rows(campaign, "", 100_000)
            .await
            .unwrap();
        rows.into_iter()
            .filter(|r| r.state == s.as_str())
            .map(|r| (r.vin, r.id))
            .collect()
    }

    pub async fn report(
        &self,
        vin: &str,
        action: &str,
        state: ActionState,
        seq: u64,
        message: &str,
    ) -> Result<StatusResult, CampaignError> {
        self.manager
            .report_status(StatusReport {
                vin: vin.into(),
                action_id: action.into(),
                state,
                progress: 100,
                message: message.into(),
                seq,
                protocol: "test".into(),
            })
            .await
    }

    /// The campaign's counters, as the store keeps them, equal a GROUP BY
    /// over its actions; `step` names the moment in the failure message.
    pub async fn assert_counts_exact(&self, campaign: &str, step: &str) {
        let kept = self.manager.store().counts(campaign, None).await.unwrap();
        let expected = grouped_counts(self.db.db(), campaign).await;
        assert_eq!(kept.rows, expected, "counters of {campaign} after {step}");
    }

    /// Staging events relayed from the outbox so far: the VINs they name.
    pub async fn staging_vins(&self, group: &str) -> Vec<String> {
        self.relay.relay_once().await.unwrap();
        while self.relay.relay_once().await.unwrap() > 0 {}
        let mut sub = self
            .bus
            .subscribe(topics::STAGING, group, "test")
            .await
            .unwrap();
        let mut vins = Vec::new();
        loop {
            let msgs = sub
                .next(1000, std::time::Duration::from_millis(50))
                .await
                .unwrap();
            if msgs.is_empty() {
                break;
            }
            for m in &msgs {
                if let StagingEvent::Vins { vins: v, .. } =
                    serde_json::from_str::<StagingEvent>(&m.payload).unwrap()
                {
                    vins.extend(v);
                }
            }
            let ids: Vec<String> = msgs.into_iter().map(|m| m.id).collect();
            sub.ack(&ids).await.unwrap();
        }
        vins
    }
}

pub fn spec(name: &str, extra: &str) -> String {
    format!(
        r#"name: {name}
target: 'vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0'
rules:
  - when: 'vehicle.gateway == "hcp3"'
    install: {{package: bms-fw-hcp3, version: 2.3.1, ecu: BMS}}
  - install: {{package: bms-fw, version: 2.3.1, ecu: BMS}}
{extra}"#
    )
}

/// What the counters of a campaign must be, grouped from its actions here
/// (not by the store's own SQL).
pub async fn grouped_counts(
    db: &ota_db::Db,
    campaign: &str,
) -> std::collections::BTreeMap<ota_campaign_manager::store::CountKey, i64> {
    let mut parts: Vec<String> = ["model", "platform", "gateway", "region", "hardware"]
        .iter()
        .map(|c| format!("SELECT '{c}', {c}, state, COUNT(*) FROM actions WHERE campaign_id = $1 GROUP BY {c}, state"))
        .collect();
    parts.push(
        "SELECT 'state', '', state, COUNT(*) FROM actions WHERE campaign_id = $1 GROUP BY state"
            .into(),
    );
    parts.push("SELECT 'wave', CAST(wave AS TEXT), state, COUNT(*) FROM actions WHERE campaign_id = $1 GROUP BY wave, state".into());
    parts.push(
        "SELECT 'minute', CAST(finished_at / 60000 AS TEXT), state, COUNT(*) FROM actions \
        WHERE campaign_id = $1 AND finished_at IS NOT NULL GROUP BY finished_at / 60000, state"
            .into(),
    );
    parts.push("SELECT 'retries', '', '', CAST(SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END) AS BIGINT) \
        FROM actions WHERE campaign_id = $1".into());
    let sql = parts.join(" UNION ALL ");
    let rows: Vec<(String, String, String, Option<i64>)> = ota_db::with_pool!(db, pool => {
        sqlx::query_as(&sql).bind(campaign).fetch_all(pool).await.unwrap()
    });
    rows.into_iter()
        .filter_map(|(d, k, s, n)| n.filter(|n| *n != 0).map(|n| ((d, k, s), n)))
        .collect()
}
