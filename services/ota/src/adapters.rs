//! The vehicle-facing side of `ota serve`: the HTTP vehicle API, hawkBit
//! DDI and hosted artifacts (the `http-adapter` role), and MQTT with the
//! embedded broker or an external one (the `mqtt-adapter` role).

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use ota_auth::vehicles::VehicleCredentials;
use ota_bus::SharedBus;
use ota_common::peer::{self, Peer};
use ota_db::Db;
use ota_proto::v1 as pb;
use ota_staging::StagingPeer;
use pb::campaign_manager_client::CampaignManagerClient;
use pb::vehicle_store_client::VehicleStoreClient;
use tokio::sync::watch;

use crate::config::{Config, Service};

pub struct Inputs<'a> {
    pub cfg: &'a Config,
    pub services: &'a BTreeSet<Service>,
    pub db: Option<&'a Db>,
    /// Staging in this process, for the no-protobuf lookup.
    pub staging: Option<ota_staging::StagingService>,
    pub campaign_peer: Option<Peer>,
    pub vehicle_peer: Option<Peer>,
    pub bus: SharedBus,
    /// The process's limit on open files, which bounds the embedded broker.
    pub open_files: Option<u64>,
}

pub struct Adapters {
    pub router: Router,
    pub mqtt: Option<ota_mqtt_adapter::MqttAdapterHandle>,
    /// Held so the MQTT adapter's own stop signal never fires on its own.
    _mqtt_signal: Option<watch::Sender<bool>>,
}

pub async fn start(i: Inputs<'_>) -> anyhow::Result<Adapters> {
    let http = i.services.contains(&Service::HttpAdapter);
    let mqtt = i.services.contains(&Service::MqttAdapter);
    let mut out = Adapters {
        router: Router::new(),
        mqtt: None,
        _mqtt_signal: None,
    };
    if !http && !mqtt {
        return Ok(out);
    }
    let db = i.db.context("the vehicle adapters need the database")?;
    let credentials = VehicleCredentials::new(db.clone());
    let campaigns = i.campaign_peer.clone().context("built for the adapters")?;
    let vehicles = i.vehicle_peer.clone().context("built for the adapters")?;
    // One peer for the three adapters: staging in this process, or the
    // staging service named in the config.
    let staging = match &i.staging {
        Some(s) => StagingPeer::local(s.clone()),
        None => StagingPeer::remote(
            peer::remote(&i.cfg.peer_url(Service::Staging)?).map_err(anyhow::Error::msg)?,
        ),
    };
    let public_url = i.cfg.public_url();
    // One set of budgets per vehicle for all three adapters of this
    // process: a vehicle gets no more by switching protocols.
    let a = &i.cfg.adapters;
    let limits = Arc::new(ota_common::rate::VehicleLimits::new(
        ota_common::rate::VehicleRates {
            polls: ota_common::rate::RateLimit {
                per_second: a.vehicle_rate_per_s,
                burst: a.vehicle_burst,
            },
            reports: ota_common::rate::RateLimit {
                per_second: a.report_rate_per_s,
                burst: a.report_burst,
            },
        },
    ));

    if http {
        let superuser = match (&i.cfg.mqtt_username, &i.cfg.mqtt_password) {
            (Some(u), Some(p)) => Some(ota_http_adapter::MqttSuperuser {
                username: u.clone(),
                password: p.clone(),
            }),
            _ => None,
        };
        let config = ota_http_adapter::AdapterConfig {
            mqtt_superuser: superuser,
            ..Default::default()
        };
        let state = ota_http_adapter::AdapterState::new(
            credentials.clone(),
            staging.clone(),
            campaigns.clone(),
            vehicles.clone(),
            config,
        )
        .with_limits(limits.clone());
        let store: Arc<dyn ota_artifacts::ArtifactStore> =
            Arc::new(ota_artifacts::DiskStore::new(&i.cfg.data_dir));
        let ddi = ota_ddi::DdiState::new(
            credentials.clone(),
            staging.clone(),
            CampaignManagerClient::new(campaigns.clone()),
            VehicleStoreClient::new(vehicles.clone()),
            store.clone(),
            i.cfg.adapters.ddi_gateway_token.clone(),
            public_url.clone(),
        )
        .with_limits(limits.clone());
        out.router = out
            .router
            .merge(ota_http_adapter::router(state))
            .merge(ota_ddi::router(ddi))
            .merge(crate::artifacts::router(
                store,
                credentials.clone(),
                ota_auth::TokenStore::new(db.clone()),
                public_url.clone(),
                i.cfg.adapters.ddi_gateway_token.clone(),
            ));
    }

    if mqtt {
        let listen = i.cfg.mqtt_listen.parse().expect("validated");
        let config = ota_mqtt_adapter::MqttAdapterConfig {
            listen,
            external_url: i.cfg.mqtt_url.clone(),
            username: i.cfg.mqtt_username.clone(),
            password: i.cfg.mqtt_password.clone(),
            max_sessions: i.cfg.adapters.mqtt_max_sessions.unwrap_or_else(|| {
                crate::files::broker_sessions(i.open_files, i.cfg.http.max_connections)
            }),
            max_packet_bytes: a.mqtt_max_packet_bytes,
            max_retained: a.mqtt_max_retained,
            limits,
            ..Default::default()
        };
        let backends = ota_mqtt_adapter::Backends {
            campaigns: CampaignManagerClient::new(campaigns),
            vehicles: VehicleStoreClient::new(vehicles),
            documents: staging,
            credentials: Some(credentials),
        };
        // Stopped explicitly (and bounded in time) after the servers drained,
        // not by the shutdown signal.
        let (signal, never) = watch::channel(false);
        out._mqtt_signal = Some(signal);
        let handle = ota_mqtt_adapter::start(config, backends, i.bus.clone(), never)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        out.mqtt = Some(handle);
    }
    Ok(out)
}
