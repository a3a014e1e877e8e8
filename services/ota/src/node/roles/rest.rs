//! `rest`: the management API (`/api/v1`) for engineers and scripts, the
//! admin dashboard (`/ui`) on the same clients, and the bootstrap admin
//! token on a database's first start.

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
    let dashboard = ota_dashboard::DashState::new(rest.clone(), health(node))
        .with_secure_cookies(cfg.public_url().starts_with("https://"));
    parts.http = std::mem::take(&mut parts.http)
        .merge(ota_rest::routes(rest))
        .merge(ota_dashboard::routes(dashboard))
        .fallback(ota_rest::not_found);
    Ok(())
}

/// What the dashboard's health page probes: every role, here or at the
/// peer address this process would call.
fn health(node: &Node) -> ota_dashboard::Health {
    use ota_dashboard::{Place, RoleProbe};
    let roles = Service::ALL
        .into_iter()
        .map(|s| {
            let place = if node.runs(s) {
                Place::Here
            } else {
                match node
                    .cfg
                    .peer_url(s)
                    .and_then(|url| Ok((url, node.peer(s)?)))
                {
                    Ok((url, peer)) => Place::Remote { url, peer },
                    Err(_) if grpc_name(s).is_empty() => {
                        Place::Elsewhere("not in this process (no gRPC service to probe)".into())
                    }
                    Err(_) => Place::Elsewhere("not in this process and no peer address".into()),
                }
            };
            RoleProbe {
                role: s.name().to_owned(),
                grpc_service: grpc_name(s).to_owned(),
                place,
            }
        })
        .collect();
    let health = ota_dashboard::Health::new(roles);
    match node.metrics.clone() {
        Some(m) => health.with_metrics(move || m.render()),
        None => health,
    }
}

/// The gRPC service a role serves, as the health service names it.
fn grpc_name(s: Service) -> &'static str {
    use ota_proto::v1::{
        campaign_manager_server, rule_engine_server, staging_server, vehicle_store_server,
    };
    match s {
        Service::VehicleStore => vehicle_store_server::SERVICE_NAME,
        Service::RuleEngine => rule_engine_server::SERVICE_NAME,
        Service::Staging => staging_server::SERVICE_NAME,
        Service::CampaignManager => campaign_manager_server::SERVICE_NAME,
        Service::HttpAdapter | Service::MqttAdapter | Service::Rest => "",
    }
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
