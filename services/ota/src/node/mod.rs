//! What one `ota serve` process is made of. Each role (`roles/<role>.rs`)
//! declares the peers it calls and whether it needs the database, and its
//! `create` adds its gRPC service, HTTP routes and background work to the
//! [`Parts`] of the process. The [`Node`] owns what roles share (the
//! configuration, the database, the event bus, the shutdown signal) and
//! answers, in one place, whether a peer is in this process or remote.
//!
//! Adding a role: write its module and add one line to [`ROLES`].

pub mod roles;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use ota_auth::vehicles::VehicleCredentials;
use ota_common::last_seen::{self, LastSeen};
use ota_common::peer::{self, Peer};
use ota_common::rate::{RateLimit, VehicleLimits, VehicleRates};
use ota_db::{Db, DbOptions};
use ota_proto::v1::vehicle_store_client::VehicleStoreClient;
use ota_staging::StagingPeer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, Service};
use crate::events::Events;

/// A role's `create`: adds the role to `parts`, using `node`.
pub type Create = for<'a> fn(
    &'a mut Node,
    &'a mut Parts,
) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// One role: what it needs, and how it is made.
pub struct Role {
    pub service: Service,
    /// The roles it calls, here or remote ([`Node::peer`]).
    pub peers: &'static [Service],
    pub needs_db: bool,
    pub create: Create,
}

/// Every role, in the order they are created: a role comes after the
/// roles it calls, so a peer in this process is there when asked for.
pub const ROLES: [Role; 7] = [
    roles::vehicle_store::ROLE,
    roles::rule_engine::ROLE,
    roles::campaign_manager::ROLE,
    roles::staging::ROLE,
    roles::http_adapter::ROLE,
    roles::mqtt_adapter::ROLE,
    roles::rest::ROLE,
];

/// Work that ends after the servers drained, within a bounded time.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the roles of a process add up to.
#[derive(Default)]
pub struct Parts {
    pub grpc: tonic::service::RoutesBuilder,
    /// gRPC service names reported serving by the health service.
    pub grpc_names: Vec<&'static str>,
    pub http: axum::Router,
    /// Loops that watch the shutdown signal themselves.
    pub tasks: Vec<JoinHandle<()>>,
    /// Named stops run once the servers drained (the MQTT adapter, staging).
    pub stops: Vec<(&'static str, Stop)>,
    /// Readiness: staging in this process is not ready until rebuilt.
    pub stager: Option<ota_staging::Stager>,
}

impl Parts {
    /// A gRPC service of this process, served and reported healthy.
    pub fn serve_grpc<S>(&mut self, server: S)
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.grpc.add_service(server);
        self.grpc_names.push(S::NAME);
    }
}

pub struct Node {
    pub cfg: Config,
    pub services: BTreeSet<Service>,
    pub db: Option<Db>,
    pub events: Events,
    pub shutdown: watch::Receiver<bool>,
    /// The process's limit on open files, which bounds the embedded broker.
    pub open_files: Option<u64>,
    /// The services of this process, as their in-process peers.
    local: HashMap<Service, Peer>,
    /// Staging in this process, for the adapters' no-protobuf lookup.
    pub staging: Option<ota_staging::StagingService>,
    vehicle_limits: OnceLock<Arc<VehicleLimits>>,
    last_seen: Option<LastSeen>,
    credentials: OnceLock<VehicleCredentials>,
    /// The process's metrics, for the dashboard's health page.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Node {
    /// Connects what the roles of `cfg` need: the database (when one of
    /// them keeps state in it) and the event bus.
    pub async fn connect(
        cfg: Config,
        shutdown: watch::Receiver<bool>,
        open_files: Option<u64>,
    ) -> anyhow::Result<Self> {
        let services = cfg.services();
        let roles = || ROLES.iter().filter(|r| services.contains(&r.service));
        // Every peer a role calls runs here or has an address: said at
        // once, for all roles, before anything starts.
        let missing: Vec<String> = roles()
            .flat_map(|r| r.peers.iter().map(move |p| (r.service, *p)))
            .filter(|(_, p)| !services.contains(p))
            .filter_map(|(role, p)| {
                cfg.peer_url(p)
                    .err()
                    .map(|e| format!("{role} calls {p}: {e:#}"))
            })
            .collect();
        if !missing.is_empty() {
            anyhow::bail!("{}", missing.join("\n"));
        }
        let db = match roles().any(|r| r.needs_db) {
            true => Some(connect_db(&cfg).await?),
            false => None,
        };
        let events = Events::start(&cfg, &services, db.as_ref(), shutdown.clone()).await?;
        Ok(Self {
            cfg,
            services,
            db,
            events,
            shutdown,
            open_files,
            local: HashMap::new(),
            staging: None,
            vehicle_limits: OnceLock::new(),
            last_seen: None,
            credentials: OnceLock::new(),
            metrics: None,
        })
    }

    /// Creates every role of this process, in [`ROLES`] order.
    pub async fn create_roles(&mut self) -> anyhow::Result<Parts> {
        let mut parts = Parts::default();
        let services = self.services.clone();
        for role in ROLES.iter().filter(|r| services.contains(&r.service)) {
            (role.create)(self, &mut parts)
                .await
                .with_context(|| format!("starting the {} role", role.service))?;
        }
        Ok(parts)
    }

    pub fn runs(&self, s: Service) -> bool {
        self.services.contains(&s)
    }

    /// The database; roles that declare `needs_db` always have it.
    pub fn db(&self) -> &Db {
        self.db
            .as_ref()
            .expect("connect() opens the database for roles that declare needs_db")
    }

    /// Registers a service of this process: its callers here reach it
    /// without a network hop.
    pub fn register(&mut self, s: Service, local: Peer) {
        self.local.insert(s, local);
    }

    /// The one answer to "local or remote": `s` in this process when it
    /// runs here, else the address `peers.<service>` gives.
    pub fn peer(&self, s: Service) -> anyhow::Result<Peer> {
        match self.local.get(&s) {
            Some(p) => Ok(p.clone()),
            None => peer::remote(&self.cfg.peer_url(s)?).map_err(anyhow::Error::msg),
        }
    }

    /// Staging as the vehicle adapters read it: the service of this
    /// process without protobuf, or the remote one.
    pub fn staging_peer(&self) -> anyhow::Result<StagingPeer> {
        Ok(match &self.staging {
            Some(s) => StagingPeer::local(s.clone()),
            None => StagingPeer::remote(self.peer(Service::Staging)?),
        })
    }

    /// Vehicle secrets, one cache for every adapter of the process.
    pub fn vehicle_credentials(&self) -> VehicleCredentials {
        self.credentials
            .get_or_init(|| VehicleCredentials::new(self.db().clone()))
            .clone()
    }

    /// The per-vehicle budgets, one set for every vehicle adapter of the
    /// process: a vehicle gets no more by switching protocols.
    /// Where the vehicle adapters of this process note vehicles heard from;
    /// the first caller starts the task that writes them to the vehicle
    /// store in one batch every [`last_seen::FLUSH_INTERVAL`].
    pub fn last_seen(&mut self, parts: &mut Parts) -> anyhow::Result<LastSeen> {
        if let Some(s) = &self.last_seen {
            return Ok(s.clone());
        }
        let seen = LastSeen::new();
        parts.tasks.push(seen.spawn_flusher(
            VehicleStoreClient::new(self.peer(Service::VehicleStore)?),
            last_seen::FLUSH_INTERVAL,
            self.shutdown.clone(),
        ));
        self.last_seen = Some(seen.clone());
        Ok(seen)
    }

    pub fn vehicle_limits(&self) -> Arc<VehicleLimits> {
        self.vehicle_limits
            .get_or_init(|| {
                let a = &self.cfg.adapters;
                Arc::new(VehicleLimits::new(VehicleRates {
                    polls: RateLimit {
                        per_second: a.vehicle_rate_per_s,
                        burst: a.vehicle_burst,
                    },
                    reports: RateLimit {
                        per_second: a.report_rate_per_s,
                        burst: a.report_burst,
                    },
                }))
            })
            .clone()
    }
}

async fn connect_db(cfg: &Config) -> anyhow::Result<Db> {
    let url = cfg.database_url();
    let opts = DbOptions {
        max_connections: cfg.database.max_connections,
        acquire_timeout: Duration::from_millis(cfg.database.acquire_timeout_ms),
    };
    tokio::time::timeout(Duration::from_secs(15), Db::connect(&url, &opts))
        .await
        .with_context(|| {
            format!(
                "timed out connecting to the database {} (database_url / OTA_DATABASE_URL)",
                ota_db::redact(&url)
            )
        })?
        .context("the database is not usable (database_url / OTA_DATABASE_URL)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_once_and_after_the_roles_it_calls() {
        let order: Vec<Service> = ROLES.iter().map(|r| r.service).collect();
        let mut all = order.clone();
        all.sort();
        assert_eq!(all, Service::ALL.to_vec(), "each role once");
        for (i, role) in ROLES.iter().enumerate() {
            for p in role.peers {
                let at = order.iter().position(|s| s == p).unwrap();
                assert!(at < i, "{} calls {p}, created after it", role.service);
            }
        }
    }
}
