//! `staging`: every vehicle's pre-computed document, kept in memory or in
//! Redis, rebuilt from the campaign manager's open actions and its events.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ota_common::peer;

use crate::config::Service;
use crate::node::{Node, Parts, Role};

pub const ROLE: Role = Role {
    service: Service::Staging,
    peers: &[Service::CampaignManager],
    needs_db: false,
    create: |node, parts| Box::pin(create(node, parts)),
};

async fn create(node: &mut Node, parts: &mut Parts) -> anyhow::Result<()> {
    let cfg = &node.cfg;
    let store: ota_staging::SharedStore =
        match &cfg.redis_url {
            Some(url) => Arc::new(ota_staging::RedisStore::connect(url).await.with_context(
                || {
                    format!(
                        "cannot reach Redis for staged documents at {} (redis_url / OTA_REDIS_URL)",
                        ota_db::redact(url)
                    )
                },
            )?),
            None => Arc::new(ota_staging::MemoryStore::new()),
        };
    let source = ota_staging::campaign_manager_source(node.peer(Service::CampaignManager)?);
    let stager = ota_staging::Stager::new(store, Arc::new(source), cfg.staging.poll_after_s)
        .with_public_url(&cfg.public_url());
    let tasks = ota_staging::StagingTasks::spawn(
        stager.clone(),
        node.events.bus.clone(),
        ota_staging::RunConfig {
            reconcile_every: Duration::from_secs(cfg.staging.reconcile_interval_s.max(1)),
            worker: ota_staging::WorkerConfig {
                // The MQTT adapter listens: here, or anywhere Redis
                // carries events.
                announce_staged: node.runs(Service::MqttAdapter) || cfg.redis_url.is_some(),
                ..Default::default()
            },
        },
    );
    parts
        .stops
        .push(("staging", Box::pin(async move { tasks.shutdown().await })));
    parts.stager = Some(stager.clone());
    let service = ota_staging::StagingService::new(stager, node.events.bus.clone());
    node.staging = Some(service.clone());
    let server = service.into_server();
    node.register(Service::Staging, peer::in_process(server.clone()));
    parts.serve_grpc(server);
    Ok(())
}
