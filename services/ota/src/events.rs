//! The event bus of one process: Redis Streams when `redis_url` is set (the
//! only way events cross processes), an in-process channel otherwise; and
//! the relay that moves this process's outbox rows onto it.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context;
use ota_bus::memory::MemoryBus;
use ota_bus::outbox::Relay;
use ota_bus::redis::RedisBus;
use ota_bus::SharedBus;
use ota_db::Db;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::{Config, Service};

/// Events the in-process bus keeps per topic (each names up to 1000 VINs).
const IN_PROCESS_MAX_EVENTS: usize = 10_000;

pub struct Events {
    pub bus: SharedBus,
    /// Wakes the relay after a commit that wrote events (it polls anyway).
    pub relay_waker: Arc<Notify>,
    pub tasks: Vec<JoinHandle<()>>,
}

impl Events {
    pub async fn start(
        cfg: &Config,
        services: &BTreeSet<Service>,
        db: Option<&Db>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let claim_timeout = std::time::Duration::from_millis(cfg.bus.claim_timeout_ms);
        let bus: SharedBus = match &cfg.redis_url {
            Some(url) => Arc::new(
                RedisBus::connect(url)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot reach Redis at {} (redis_url / OTA_REDIS_URL)",
                            ota_db::redact(url)
                        )
                    })?
                    .with_claim_timeout(claim_timeout),
            ),
            None => {
                // Producers and consumers of events must share a process
                // when there is no Redis to carry events between them.
                let producers = services.contains(&Service::VehicleStore)
                    || services.contains(&Service::CampaignManager);
                let all = [
                    Service::VehicleStore,
                    Service::CampaignManager,
                    Service::Staging,
                ]
                .iter()
                .all(|s| services.contains(s));
                if producers && !all {
                    tracing::warn!("vehicle-store, campaign-manager and staging do not all run in this process and redis_url (OTA_REDIS_URL) is unset: their events cannot reach the other processes, so staged documents and dynamic targeting only catch up through reconciles");
                }
                // Bounded: events no group reads (a consumer in another
                // process) must not pile up; reconciles repair what is dropped.
                Arc::new(
                    MemoryBus::new()
                        .with_max_len(IN_PROCESS_MAX_EVENTS)
                        .with_claim_timeout(claim_timeout),
                )
            }
        };
        // Every consumer group subscribed in this process reports its
        // pending events (`ota_bus_pending_events`).
        let metered = ota_bus::pending::Metered::new(bus);
        let mut tasks = vec![tokio::spawn(metered.clone().run(shutdown.clone()))];
        let bus: SharedBus = metered;
        let relay_waker = match db {
            Some(db)
                if services.contains(&Service::VehicleStore)
                    || services.contains(&Service::CampaignManager) =>
            {
                let relay = Relay::new(db.clone(), bus.clone());
                let waker = relay.waker();
                tasks.push(tokio::spawn(relay.run(shutdown)));
                waker
            }
            _ => Arc::new(Notify::new()),
        };
        Ok(Self {
            bus,
            relay_waker,
            tasks,
        })
    }
}
