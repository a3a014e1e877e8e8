//! Shared by the integration tests: the real Redis at `OTA_TEST_REDIS_URL`
//! (a test fails loudly when it is unreachable, never skips), a namespace
//! per test so tests run in parallel on one Redis, and an in-memory
//! [`ActionSource`] as the input fixture (the campaign manager's open
//! actions).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use ota_common::ErrorCode;
use ota_proto::v1 as pb;
use ota_staging::{ActionBatches, ActionSource, RedisStore, RedisStoreConfig, StagingError};

pub fn redis_url() -> String {
    std::env::var("OTA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A raw connection for what the store must not do itself: planting damaged
/// values, looking at the stored bytes, cleaning up.
pub async fn raw_redis() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("valid OTA_TEST_REDIS_URL");
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out connecting to Redis at {url}"))
    .unwrap_or_else(|e| {
        panic!("Redis is required for this test but {url} is not reachable: {e} (run scripts/test.sh, which starts it)")
    })
}

/// A Redis store in a namespace of its own; fails the test when Redis is
/// not reachable.
pub async fn redis_store(namespace: &str) -> RedisStore {
    redis_store_at(&redis_url(), namespace).await
}

pub async fn redis_store_at(url: &str, namespace: &str) -> RedisStore {
    let store = RedisStore::connect_with(
        url,
        RedisStoreConfig {
            namespace: namespace.to_owned(),
            ..Default::default()
        },
    )
    .await
    .expect("redis store");
    // The first command may race the lazy connection; give it a few tries
    // before declaring Redis absent.
    let mut last = None;
    for _ in 0..5 {
        match store.ping().await {
            Ok(()) => return store,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "Redis is required for this test but {url} is not reachable: {} (run scripts/test.sh, which starts it)",
        last.unwrap()
    );
}

/// Deletes every key of a test namespace (and a test bus topic's stream).
pub async fn cleanup(namespace: &str, topic: Option<&str>) {
    let mut con = raw_redis().await;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .expect("scan");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut con)
                .await
                .expect("del");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if let Some(topic) = topic {
        let _: i64 = redis::cmd("DEL")
            .arg(ota_bus::redis::stream_key(topic))
            .query_async(&mut con)
            .await
            .expect("del stream");
    }
}

/// The `host:port` of a `redis://` URL, for a proxy in front of it.
pub fn redis_addr(url: &str) -> std::net::SocketAddr {
    let rest = url.trim_start_matches("redis://");
    let rest = rest.rsplit('@').next().unwrap();
    let hostport = rest.split('/').next().unwrap();
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:6379")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .expect("resolvable redis host")
        .next()
        .expect("an address")
}

pub fn vin(n: u32) -> String {
    format!("WVWZZZE1ZMP{n:06}")
}

pub fn action(id: &str, campaign: &str, priority: i32, version: &str) -> pb::OpenAction {
    pb::OpenAction {
        action_id: id.into(),
        campaign_id: campaign.into(),
        ecu: "BMS".into(),
        priority,
        package: Some(pb::StagedPackage {
            name: "bms-fw".into(),
            version: version.into(),
            artifacts: vec![pb::Artifact {
                url: format!("https://cdn.example/bms-{version}.bin"),
                sha256: "ab".repeat(32),
                size: 4_194_304,
            }],
        }),
        deadline: None,
        state: pb::ActionState::Pending.into(),
        attempt: 1,
    }
}

/// The campaign manager's open actions, in memory: the tests' input.
#[derive(Default)]
pub struct FixtureSource {
    state: Mutex<State>,
    /// Added to every open-actions call, to let two workers interleave.
    pub delay: Duration,
}

#[derive(Default)]
struct State {
    actions: BTreeMap<String, Vec<pb::OpenAction>>,
    /// Every VIN a campaign ever had an action for.
    campaigns: BTreeMap<String, BTreeSet<String>>,
    /// open_actions requests per VIN.
    calls: HashMap<String, u32>,
    failing: bool,
}

impl FixtureSource {
    pub fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Default::default()
        }
    }

    pub fn set(&self, vin: &str, actions: Vec<pb::OpenAction>) {
        let mut s = self.state.lock().unwrap();
        for a in &actions {
            s.campaigns
                .entry(a.campaign_id.clone())
                .or_default()
                .insert(vin.to_owned());
        }
        if actions.is_empty() {
            s.actions.remove(vin);
        } else {
            s.actions.insert(vin.to_owned(), actions);
        }
    }

    pub fn clear(&self, vin: &str) {
        self.set(vin, Vec::new());
    }

    pub fn calls(&self, vin: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(vin)
            .copied()
            .unwrap_or(0)
    }

    /// Makes every call fail with UNAVAILABLE (the campaign manager is down).
    pub fn set_failing(&self, failing: bool) {
        self.state.lock().unwrap().failing = failing;
    }

    fn check(&self) -> Result<(), StagingError> {
        if self.state.lock().unwrap().failing {
            return Err(StagingError::Source {
                code: ErrorCode::Unavailable,
                message: "campaign manager down (fixture)".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ActionSource for FixtureSource {
    async fn open_actions(&self, vins: &[String]) -> Result<Vec<pb::VehicleActions>, StagingError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.check()?;
        let mut s = self.state.lock().unwrap();
        for v in vins {
            *s.calls.entry(v.clone()).or_default() += 1;
        }
        Ok(vins
            .iter()
            .filter_map(|v| {
                s.actions.get(v).map(|a| pb::VehicleActions {
                    vin: v.clone(),
                    actions: a.clone(),
                })
            })
            .collect())
    }

    async fn scan_all(&self, batch_size: u32) -> Result<ActionBatches, StagingError> {
        self.check()?;
        let all: Vec<pb::VehicleActions> = self
            .state
            .lock()
            .unwrap()
            .actions
            .iter()
            .map(|(vin, a)| pb::VehicleActions {
                vin: vin.clone(),
                actions: a.clone(),
            })
            .collect();
        let batches: Vec<_> = all
            .chunks(batch_size.max(1) as usize)
            .map(|c| Ok(c.to_vec()))
            .collect();
        Ok(futures::stream::iter(batches).boxed())
    }

    async fn campaign_vins(&self, campaign_id: &str) -> Result<Vec<String>, StagingError> {
        self.check()?;
        self.state
            .lock()
            .unwrap()
            .campaigns
            .get(campaign_id)
            .map(|v| v.iter().cloned().collect())
            .ok_or_else(|| StagingError::Source {
                code: ErrorCode::NotFound,
                message: format!("campaign {campaign_id} not found"),
            })
    }
}
