//! The MQTT adapter: vehicles receive their staged document on a retained
//! topic and report status, inventory and presence back. It runs an embedded
//! broker ([`rmqtt`]) unless an external broker URL is configured. With an
//! external broker the adapter is one MQTT client of it, acknowledging
//! reports once recorded; the embedded broker records status and inventory
//! before it acknowledges them to the vehicle.
//!
//! The adapter speaks MQTT 5 (vehicles may speak 3.1.1 as well; the broker
//! translates), so its messages carry the W3C trace context as the user
//! property `traceparent` ([`ota_common::trace::TRACEPARENT`]): a report
//! that has one is recorded in that trace, and a document it publishes
//! carries the trace that changed it.

mod broker;
mod ingest;
mod publisher;
pub mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ota_auth::vehicles::VehicleCredentials;
use ota_common::peer::Peer;
use ota_common::rate::VehicleLimits;
use ota_common::{CodedError, ErrorCode};
use ota_proto::v1::campaign_manager_client::CampaignManagerClient;
use ota_proto::v1::vehicle_store_client::VehicleStoreClient;
use rumqttc::v5::{AsyncClient, MqttOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use topics::Kind;

pub use topics::Topics;

/// Payloads larger than this are rejected unread.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Largest packet a vehicle may send the embedded broker: a report at
/// [`MAX_PAYLOAD_BYTES`] with room to spare, so a somewhat larger one still
/// reaches the adapter and is counted; anything larger closes the
/// connection before it is read whole.
pub const MAX_PACKET_BYTES: usize = 64 * 1024;
/// Largest message the embedded broker retains, and largest packet the
/// adapter itself may send it (a staged document); the adapter reaches the
/// broker on a loopback listener of its own for that.
pub const MAX_RETAINED_BYTES: usize = 1024 * 1024;
/// Retained messages the embedded broker keeps by default: each vehicle
/// leaves two (its document and its presence).
pub const MAX_RETAINED: usize = 10_000_000;
/// The bus consumer group that republishes staged documents.
pub const GROUP: &str = "mqtt-adapter";
/// Unacknowledged QoS 1 messages the adapter's client has in flight, each
/// way: what it publishes (documents), and what it lets a broker hand it
/// before acknowledging (reports; the MQTT 5 receive maximum, without which
/// a broker would allow 65,535). The embedded broker's adapter listener
/// allows as many.
pub(crate) const IN_FLIGHT: u16 = 100;
/// How long a broker keeps the adapter's session while it is away: for
/// ever, as an MQTT 3.1.1 persistent session (an MQTT 5 session without an
/// expiry ends with its connection, and with it the reports taken but not
/// acknowledged).
const SESSION_EXPIRY_NEVER: u32 = u32::MAX;

#[derive(Clone)]
pub struct MqttAdapterConfig {
    /// Where the embedded broker listens (`OTA_MQTT_LISTEN`).
    pub listen: SocketAddr,
    /// An external broker, `mqtt://host:port` (`OTA_MQTT_URL`); no embedded
    /// broker is started then.
    pub external_url: Option<String>,
    /// The adapter's own credentials (`OTA_MQTT_USERNAME`,
    /// `OTA_MQTT_PASSWORD`). For the embedded broker they are generated when
    /// unset; the adapter is its only superuser.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Fixed per adapter instance: the broker keeps this client's persistent
    /// session, so reports it took but never acknowledged are redelivered
    /// after a restart.
    pub client_id: String,
    /// Topic root, `ota/v1/vehicles` unless a deployment (or a test sharing
    /// one broker) needs another.
    pub topic_prefix: String,
    /// The shared-subscription group adapter instances split the load in.
    pub share_group: String,
    pub max_payload_bytes: usize,
    /// Sessions the embedded broker holds at most; past it, new vehicles are
    /// refused (CONNACK "server unavailable") and retry later. Each
    /// connection is an open file: a broker that takes every one the process
    /// may open leaves none for the HTTP API, the database or its health
    /// checks. 0: no limit.
    pub max_sessions: usize,
    /// Largest packet a vehicle may send the embedded broker
    /// ([`MAX_PACKET_BYTES`]).
    pub max_packet_bytes: usize,
    /// Retained messages the embedded broker keeps ([`MAX_RETAINED`]);
    /// past it, messages on new topics are no longer retained. 0: no limit.
    pub max_retained: usize,
    /// The vehicles' budgets, shared with the HTTP and DDI adapters of the
    /// process: status, inventory and presence reports take from the
    /// report budget.
    pub limits: Arc<VehicleLimits>,
    /// Where the process notes that a vehicle was heard from (a login to
    /// the embedded broker, a status or inventory report), written to the
    /// vehicle store in batches with the HTTP and DDI polls.
    pub last_seen: Option<ota_common::last_seen::LastSeen>,
}

impl std::fmt::Debug for MqttAdapterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttAdapterConfig")
            .field("listen", &self.listen)
            .field("external_url", &self.external_url)
            .field("username", &self.username)
            .field("client_id", &self.client_id)
            .field("topic_prefix", &self.topic_prefix)
            .field("share_group", &self.share_group)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("max_sessions", &self.max_sessions)
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("max_retained", &self.max_retained)
            .finish_non_exhaustive()
    }
}

impl Default for MqttAdapterConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            external_url: None,
            username: None,
            password: None,
            client_id: "ota-mqtt-adapter".to_owned(),
            topic_prefix: topics::DEFAULT_PREFIX.to_owned(),
            share_group: "ota".to_owned(),
            max_payload_bytes: MAX_PAYLOAD_BYTES,
            max_sessions: 0,
            max_packet_bytes: MAX_PACKET_BYTES,
            max_retained: MAX_RETAINED,
            limits: Arc::new(VehicleLimits::default()),
            last_seen: None,
        }
    }
}

/// The services the adapter talks to.
#[derive(Clone)]
pub struct Backends {
    pub campaigns: CampaignManagerClient<Peer>,
    pub vehicles: VehicleStoreClient<Peer>,
    /// Where the adapter reads staged documents.
    pub documents: ota_staging::StagingPeer,
    /// Checks vehicle tokens; needed by the embedded broker only (an
    /// external broker does its own authentication).
    pub credentials: Option<VehicleCredentials>,
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("invalid MQTT configuration: {0}")]
    Config(String),
    #[error(
        "cannot listen for MQTT on {addr}: {reason} (set OTA_MQTT_LISTEN to a free address, \
         or OTA_MQTT_URL to use an external broker instead)"
    )]
    Listen { addr: SocketAddr, reason: String },
    #[error("MQTT broker unavailable: {0}")]
    Unavailable(String),
    #[error("MQTT adapter error: {0}")]
    Internal(String),
}

impl CodedError for MqttError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Config(_) | Self::Listen { .. } => ErrorCode::InvalidArgument,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The running adapter. Dropping it does not stop it; [`stop`](Self::stop)
/// or the shutdown signal does.
pub struct MqttAdapterHandle {
    /// Where vehicles connect: the embedded broker's address, or None with an
    /// external broker.
    pub listen: Option<SocketAddr>,
    client: AsyncClient,
    broker: Option<broker::Broker>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl MqttAdapterHandle {
    /// Stops consuming and publishing, then the embedded broker. Reports
    /// taken but not yet recorded stay unacknowledged, so the broker hands
    /// them out again.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        // Disconnecting first makes the broker stop delivering to us; a task
        // mid-report is then cut off before it acknowledges.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.disconnect()).await;
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        if let Some(b) = self.broker.take() {
            b.stop().await;
        }
    }

    /// Waits until the adapter stopped (the shutdown signal was given).
    pub async fn wait(&mut self) {
        for t in self.tasks.iter_mut() {
            let _ = t.await;
        }
    }
}

/// Starts the adapter: the embedded broker when no external URL is set, the
/// report consumer, and the document publisher fed by
/// [`ota_bus::topics::STAGED`]. Returns once the broker listens; the
/// client connects (and reconnects) in the background.
pub async fn start(
    config: MqttAdapterConfig,
    backends: Backends,
    bus: ota_bus::SharedBus,
    shutdown: watch::Receiver<bool>,
) -> Result<MqttAdapterHandle, MqttError> {
    if config.client_id.is_empty() {
        return Err(MqttError::Config("client_id is empty".into()));
    }
    let topics = Topics::new(&config.topic_prefix)?;
    let (ensure_tx, ensure_rx) = mpsc::channel::<ingest::Ensure>(10_000);
    let recorder = Arc::new(ingest::Recorder {
        topics: topics.clone(),
        max_payload: config.max_payload_bytes,
        backends: backends.clone(),
        ensure: ensure_tx,
        limits: config.limits.clone(),
        last_seen: config.last_seen.clone(),
    });

    let (options, broker) = match &config.external_url {
        Some(url) => {
            let mut o = external_options(url, &config.client_id)?;
            if let (Some(u), Some(p)) = (&config.username, &config.password) {
                o.set_credentials(u, p);
            }
            (o, None)
        }
        None => {
            let credentials = backends.credentials.clone().ok_or_else(|| {
                MqttError::Config(
                    "the embedded MQTT broker needs the vehicle credentials (or set OTA_MQTT_URL)"
                        .into(),
                )
            })?;
            let superuser = broker::Superuser {
                username: config
                    .username
                    .clone()
                    .unwrap_or_else(|| format!("ota-adapter-{}", uuid::Uuid::new_v4().simple())),
                password: config.password.clone().unwrap_or_else(random_secret),
            };
            let b = broker::Broker::start(
                broker::Limits {
                    listen: config.listen,
                    max_sessions: config.max_sessions,
                    max_packet_bytes: config.max_packet_bytes,
                    max_retained: config.max_retained,
                },
                superuser.clone(),
                credentials,
                recorder.clone(),
            )
            .await?;
            // The adapter's own listener: documents may be larger than
            // what a vehicle may send.
            let target = b.internal;
            let mut o = MqttOptions::new(&config.client_id, target.ip().to_string(), target.port());
            o.set_credentials(superuser.username, superuser.password);
            (o, Some(b))
        }
    };
    let options = tune(options);
    let (client, eventloop) = AsyncClient::new(options, 1024);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = merge_stop(shutdown, stop_rx);
    // The embedded broker records status and inventory itself, before it
    // acknowledges them; an external broker's are consumed here, and
    // acknowledged after recording.
    let kinds = if broker.is_some() {
        vec![Kind::Presence]
    } else {
        vec![Kind::Status, Kind::Inventory, Kind::Presence]
    };
    let fresh_sessions = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ingest = ingest::Ingest {
        client: client.clone(),
        topics: topics.clone(),
        share_group: config.share_group.clone(),
        kinds,
        recorder,
        fresh_sessions: fresh_sessions.clone(),
    };
    let publisher = publisher::Publisher::new(
        client.clone(),
        topics,
        backends.documents.clone(),
        fresh_sessions,
    );
    let mut tasks = vec![
        tokio::spawn(ingest.run(eventloop, stopped.clone())),
        tokio::spawn(publisher.run(bus, config.client_id.clone(), ensure_rx, stopped.clone())),
    ];
    if let Some(b) = &broker {
        let (b, mut stopped) = (b.clone(), stopped);
        tasks.push(tokio::spawn(async move {
            stopping(&mut stopped).await;
            b.stop().await;
        }));
    }
    Ok(MqttAdapterHandle {
        listen: broker.as_ref().map(|b| b.addr),
        client,
        broker,
        tasks,
        stop: stop_tx,
    })
}

/// One receiver that turns true when either the caller's shutdown signal or
/// the handle's own stop does.
fn merge_stop(
    mut outer: watch::Receiver<bool>,
    mut own: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*outer.borrow() || *own.borrow());
    tokio::spawn(async move {
        // A dropped outer sender means no shutdown will come from there.
        let mut outer_open = true;
        loop {
            if *outer.borrow_and_update() || *own.borrow_and_update() {
                let _ = tx.send(true);
                return;
            }
            tokio::select! {
                r = outer.changed(), if outer_open => outer_open = r.is_ok(),
                r = own.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

fn tune(mut o: MqttOptions) -> MqttOptions {
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_NEVER))
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        // Incoming packets larger than the client's limit kill the connection,
        // and a persistent session would hand the same packet out again
        // forever; so accept large ones here and reject them by size.
        .set_max_packet_size(Some(16 * 1024 * 1024))
        .set_receive_maximum(Some(IN_FLIGHT))
        .set_outgoing_inflight_upper_limit(IN_FLIGHT);
    o
}

fn external_options(url: &str, client_id: &str) -> Result<MqttOptions, MqttError> {
    // TLS to the broker is not built in yet: rustls here has two crypto
    // providers enabled by other crates and cannot pick one by itself.
    let Some(rest) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    else {
        return Err(MqttError::Config(format!(
            "mqtt_url {url:?} must start with mqtt:// (mqtts:// is not supported yet)"
        )));
    };
    let hostport = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| MqttError::Config(format!("mqtt_url {url:?}: bad port {p:?}")))?,
        ),
        None => (hostport, 1883),
    };
    if host.is_empty() {
        return Err(MqttError::Config(format!("mqtt_url {url:?} has no host")));
    }
    Ok(MqttOptions::new(
        client_id,
        host.trim_matches(['[', ']']),
        port,
    ))
}

fn random_secret() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// Shared by the tasks: whether the adapter is stopping.
pub(crate) type Stopped = watch::Receiver<bool>;

pub(crate) async fn stopping(s: &mut Stopped) {
    let _ = s.wait_for(|v| *v).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_external_urls() {
        let o = external_options("mqtt://127.0.0.1:1884", "a").unwrap();
        assert_eq!(o.broker_address(), ("127.0.0.1".to_owned(), 1884));
        let o = external_options("tcp://broker", "a").unwrap();
        assert_eq!(o.broker_address(), ("broker".to_owned(), 1883));
        let o = external_options("mqtt://broker.example/", "a").unwrap();
        assert_eq!(o.broker_address(), ("broker.example".to_owned(), 1883));
        for bad in ["http://x", "mqtts://x", "mqtt://:1883", "mqtt://h:notaport"] {
            assert!(matches!(
                external_options(bad, "a"),
                Err(MqttError::Config(_))
            ));
        }
    }

    #[test]
    fn errors_map_to_codes() {
        let e = MqttError::Listen {
            addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            reason: "address in use".into(),
        };
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        let msg = e.to_string();
        assert!(
            msg.contains("OTA_MQTT_LISTEN") && msg.contains("OTA_MQTT_URL"),
            "{msg}"
        );
        assert_eq!(
            MqttError::Unavailable("x".into()).code(),
            ErrorCode::Unavailable
        );
    }
}
