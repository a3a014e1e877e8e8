//! The Eclipse hawkBit DDI API (`/{tenant}/controller/v1/{controllerId}`)
//! for SWUpdate and rauc-hawkbit-updater devices, over the staged
//! documents, the campaign manager and the vehicle store. The controller id
//! is the VIN; the tenant is `default`.

mod error;
mod handlers;
pub mod ids;
pub mod model;
mod seen;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use ota_artifacts::ArtifactStore;
use ota_auth::vehicles::VehicleCredentials;
use ota_common::last_seen::LastSeen;
use ota_common::peer::Peer;
use ota_common::rate::VehicleLimits;
use ota_proto::v1 as pb;
use ota_staging::StagingPeer;
use pb::campaign_manager_client::CampaignManagerClient;
use pb::vehicle_store_client::VehicleStoreClient;

pub use error::DdiError;

/// Largest request body (feedback, config data); larger gets 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The only tenant; DDI clients often spell it `DEFAULT`.
pub const TENANT: &str = "default";

/// Everything the DDI handlers need. Cheap to clone.
#[derive(Clone)]
pub struct DdiState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub credentials: VehicleCredentials,
    pub staging: StagingPeer,
    pub campaigns: CampaignManagerClient<Peer>,
    pub vehicles: VehicleStoreClient<Peer>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub gateway_token: Option<String>,
    /// Absolute links start with this; empty means "from the Host header".
    /// Hosted artifacts are recognised by it too.
    pub base_url: String,
    pub memory: seen::Memory,
    pub ids: ids::ActionIds,
    /// Each controller's budgets, as on the HTTP vehicle API and MQTT: a
    /// device polling or reporting in a tight loop must not take the
    /// server's capacity (or its database) from the fleet.
    pub limits: Arc<VehicleLimits>,
    /// Where authenticated requests note that their device was seen.
    pub last_seen: Option<LastSeen>,
    last_seq: AtomicU64,
    /// SHA-1 and MD5 of hosted artifacts by SHA-256. Every deploymentBase
    /// answer carries them, and reading them from the disk store takes a
    /// trip through tokio's blocking pool per request, which cost about
    /// 30 % of the deploymentBase throughput in bench/ddi_poll.sh. The
    /// store is content-addressed, so an entry never goes stale.
    digests: Mutex<HashMap<String, (String, String)>>,
}

/// Hosted artifacts whose digests are kept; past that the map starts over.
const MAX_DIGESTS: usize = 10_000;

impl DdiState {
    /// `gateway_token`: a secret that may act for any controller (hawkBit's
    /// gateway token), `None` to allow only the vehicles' own tokens.
    /// `base_url`: this server as devices reach it, e.g.
    /// `https://ota.example.com` (the same base hosted artifact URLs use).
    /// The DDI action ids are kept in the credentials' database.
    pub fn new(
        credentials: VehicleCredentials,
        staging: StagingPeer,
        campaigns: CampaignManagerClient<Peer>,
        vehicles: VehicleStoreClient<Peer>,
        artifacts: Arc<dyn ArtifactStore>,
        gateway_token: Option<String>,
        base_url: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ids: ids::ActionIds::new(credentials.db().clone()),
                credentials,
                staging,
                campaigns,
                vehicles,
                artifacts,
                gateway_token: gateway_token.filter(|t| !t.is_empty()),
                base_url: base_url.trim_end_matches('/').to_owned(),
                memory: seen::Memory::default(),
                limits: Arc::new(VehicleLimits::default()),
                last_seen: None,
                last_seq: AtomicU64::new(0),
                digests: Mutex::default(),
            }),
        }
    }
}

impl DdiState {
    /// The budgets of every controller (default:
    /// `VehicleRates::default()`), shared with the other vehicle adapters
    /// of the process. A GatewayToken caller is counted per controller it
    /// acts for. Polls: the poll, `deploymentBase`, `cancelAction` and
    /// `installedBase` (each one staged-document lookup, what a device
    /// repeats in a loop). Reports: feedback and `configData`. Artifact
    /// downloads are not counted (see `handlers::download`).
    pub fn with_limits(mut self, limits: Arc<VehicleLimits>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("the limits are set while the state is built, before it is shared")
            .limits = limits;
        self
    }

    /// Notes every authenticated request (a device's own or a gateway's
    /// for it) in `seen`, which the process writes to the vehicle store in
    /// batches.
    pub fn with_last_seen(mut self, seen: LastSeen) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("last-seen is set while the state is built, before it is shared")
            .last_seen = Some(seen);
        self
    }
}

impl Inner {
    /// DDI feedback has no sequence number, and the campaign manager drops
    /// reports older than one applied. The clock in microseconds keeps order
    /// across restarts; the counter keeps it within one microsecond.
    pub(crate) fn next_seq(&self) -> u64 {
        let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let prev = self
            .last_seq
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .expect("always some");
        now.max(prev + 1)
    }

    /// The SHA-1 and MD5 of a hosted artifact, `None` when the store does
    /// not have it.
    pub(crate) async fn hosted_digests(
        &self,
        sha256: &str,
    ) -> Result<Option<(String, String)>, DdiError> {
        if let Some(d) = self.digests.lock().expect("digests").get(sha256) {
            return Ok(Some(d.clone()));
        }
        let Some(meta) = self.artifacts.stat(sha256).await? else {
            return Ok(None);
        };
        let d = (meta.sha1, meta.md5);
        let mut map = self.digests.lock().expect("digests");
        if map.len() >= MAX_DIGESTS {
            map.clear();
        }
        map.insert(sha256.to_owned(), d.clone());
        Ok(Some(d))
    }
}

/// The DDI routes, with their state applied.
pub fn router(state: DdiState) -> axum::Router {
    use handlers::*;
    let base = "/{tenant}/controller/v1/{controller}";
    axum::Router::new()
        .route(base, get(poll))
        .route(
            &format!("{base}/deploymentBase/{{action}}"),
            get(deployment_base),
        )
        .route(
            &format!("{base}/deploymentBase/{{action}}/feedback"),
            post(deployment_feedback),
        )
        .route(
            &format!("{base}/cancelAction/{{action}}"),
            get(cancel_action),
        )
        .route(
            &format!("{base}/cancelAction/{{action}}/feedback"),
            post(cancel_feedback),
        )
        .route(&format!("{base}/configData"), put(config_data))
        .route(
            &format!("{base}/installedBase/{{action}}"),
            get(installed_base),
        )
        .route(
            &format!("{base}/softwaremodules/{{module}}/artifacts/{{filename}}"),
            get(download),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
