//! `rest`: the management API (`/api/v1`) for engineers and dashboards,
//! and the bootstrap admin token on a database's first start.

use std::collections::BTreeSet;

use ota_auth::TokenStore;

use crate::config::{Config, Service};
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
    let rest = rest.with_info(server_info(cfg, &node.services));
    parts.http = std::mem::take(&mut parts.http)
        .merge(ota_rest::routes(rest))
        .fallback(ota_rest::not_found);
    Ok(())
}

/// What `GET /api/v1/info` tells: where vehicles reach this deployment.
fn server_info(cfg: &Config, services: &BTreeSet<Service>) -> ota_rest::ServerInfo {
    let public_url = cfg.public_url();
    let mqtt = match (&cfg.mqtt_url, services.contains(&Service::MqttAdapter)) {
        (Some(url), _) => Some(ota_rest::MqttInfo {
            url: url.clone(),
            embedded: false,
        }),
        (None, true) => {
            let listen = cfg.mqtt_listen_addr();
            // A broker on every interface is reached by the public host.
            let host = if listen.ip().is_unspecified() {
                http::Uri::try_from(public_url.as_str())
                    .ok()
                    .and_then(|u| u.host().map(str::to_owned))
                    .unwrap_or_else(|| "127.0.0.1".into())
            } else {
                listen.ip().to_string()
            };
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            Some(ota_rest::MqttInfo {
                url: format!("mqtt://{host}:{}", listen.port()),
                embedded: true,
            })
        }
        (None, false) => None,
    };
    ota_rest::ServerInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        services: services.iter().map(|s| s.name().to_owned()).collect(),
        ddi_url: format!("{public_url}/{}/controller/v1/", ota_ddi::TENANT),
        ddi_tenant: ota_ddi::TENANT.into(),
        public_url,
        mqtt,
    }
}
