//! `rest`: the management API (`/api/v1`) for engineers and dashboards,
//! and the bootstrap admin token on a database's first start.

use ota_auth::TokenStore;

use crate::config::Service;
use crate::node::{Node, Parts, Role};

pub const ROLE: Role = Role {
    service: Service::Rest,
    // Staging is optional: reached when it runs here or `peers.staging`
    // names it.
    peers: &[
        Service::VehicleStore,
        Service::RuleEngine,
        Service::CampaignManager,
    ],
    needs_db: true,
    create: |node, parts| Box::pin(create(node, parts)),
};

async fn create(node: &mut Node, parts: &mut Parts) -> anyhow::Result<()> {
    let cfg = &node.cfg;
    let tokens = TokenStore::new(node.db().clone());
    if let Some(path) = tokens.bootstrap(&cfg.data_dir).await? {
        tracing::info!(path = %path.display(), "created the bootstrap admin token (first start on this database); the CLI reads it from there");
    }
    let limits = ota_rest::Limits {
        max_body_bytes: cfg.limits.max_body_bytes,
        max_import_bytes: cfg.limits.max_import_bytes,
    };
    let mut rest = ota_rest::RestState::new(
        tokens,
        node.peer(Service::VehicleStore)?,
        node.peer(Service::RuleEngine)?,
        node.peer(Service::CampaignManager)?,
        limits,
    );
    if node.runs(Service::Staging) || cfg.peers.staging.is_some() {
        rest = rest.with_staging(node.peer(Service::Staging)?);
    }
    let rest = rest.with_info(crate::serve::server_info(cfg, &node.services));
    parts.http = std::mem::take(&mut parts.http)
        .merge(ota_rest::routes(rest))
        .fallback(ota_rest::not_found);
    Ok(())
}
