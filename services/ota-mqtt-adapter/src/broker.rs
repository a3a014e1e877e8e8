//! The embedded broker: rmqtt with the retainer and shared-subscription
//! plugins, and hooks that authenticate vehicles by their token and confine
//! each to its own topics and to what the contract lets it say there:
//! reports on `status` and `inventory` (never retained), `online` or
//! `offline` on `presence` (the will: `offline`). Vehicles connect on the
//! public listener, whose packets are small; the adapter on a loopback
//! listener of its own, since a staged document may be larger.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ota_auth::vehicles::VehicleCredentials;
use rmqtt::codec::v5::{PublishAckReason, SubscribeAckReason};
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::types::{AuthResult, ConnectInfo, PublishAclResult, PublishResult, SubscribeAclResult};
use tokio::task::JoinHandle;

use crate::ingest::{Outcome, Recorder};
use crate::topics::{Kind, Topics};
use crate::{MqttError, IN_FLIGHT, MAX_RETAINED_BYTES};

/// How long a vehicle's report waits for the platform before the vehicle is
/// disconnected (and sends it again after reconnecting).
const RECORD_PATIENCE: Duration = Duration::from_secs(20);

/// Vehicle handshakes in progress at once (rmqtt's default is 1,000). A
/// handshake is a token check, cached after a vehicle's first connect.
const MAX_HANDSHAKES: usize = 128;

/// Unacknowledged messages between the adapter and its listener, each way.
const ADAPTER_IN_FLIGHT: std::num::NonZeroU16 = match std::num::NonZeroU16::new(IN_FLIGHT) {
    Some(n) => n,
    None => panic!("IN_FLIGHT is not 0"),
};

/// The adapter's own account: the only one allowed everywhere.
#[derive(Clone)]
pub(crate) struct Superuser {
    pub username: String,
    pub password: String,
}

/// Where the broker listens and what it holds at most.
pub(crate) struct Limits {
    pub listen: SocketAddr,
    /// Sessions (vehicles), 0: no limit.
    pub max_sessions: usize,
    /// Largest packet on the public listener.
    pub max_packet_bytes: usize,
    /// Retained messages, 0: no limit.
    pub max_retained: usize,
}

#[derive(Clone)]
pub(crate) struct Broker {
    /// The public listener, for vehicles.
    pub addr: SocketAddr,
    /// The adapter's own listener, on loopback.
    pub internal: SocketAddr,
    scx: ServerContext,
    run: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// The retainer's settings: how many messages it keeps, how large one may
/// be (a larger one is forwarded but not kept), and that they never expire.
/// Without the TTL of 0 a retained message inherits its listener's message
/// expiry (5 minutes): a vehicle connecting later would find no document,
/// and the publisher does not send an unchanged one again.
fn retainer_config(max_retained: usize) -> String {
    format!(
        "max_retained_messages = {}\nmax_payload_size = \"{}B\"\nretained_message_ttl = \"0s\"\n",
        isize::try_from(max_retained).unwrap_or(isize::MAX),
        MAX_RETAINED_BYTES
    )
}

impl Broker {
    pub async fn start(
        limits: Limits,
        superuser: Superuser,
        credentials: VehicleCredentials,
        recorder: Arc<Recorder>,
    ) -> Result<Self, MqttError> {
        let Limits {
            listen: addr,
            max_sessions,
            max_packet_bytes,
            max_retained,
        } = limits;
        let scx = ServerContext::new()
            // Busy checking refuses connections while the process is loaded
            // (a burst of reconnecting vehicles is exactly when it must not).
            .busy_check_enable(false)
            // Checked before the token, so a full broker costs no database
            // query; a vehicle whose session exists may always come back.
            // One more for the adapter's own session.
            .mqtt_max_sessions(match max_sessions {
                0 => 0,
                n => isize::try_from(n).map_or(isize::MAX, |n| n.saturating_add(1)),
            })
            .plugins_config_map_add("rmqtt-retainer", retainer_config(max_retained))
            .build()
            .await;
        rmqtt_retainer::register(&scx, true, false)
            .await
            .map_err(|e| MqttError::Internal(format!("retainer plugin: {e}")))?;
        rmqtt_shared_subscription::register(&scx, true, false)
            .await
            .map_err(|e| MqttError::Internal(format!("shared subscription plugin: {e}")))?;

        let listen_err = |addr: SocketAddr| {
            move |e: rmqtt::Error| MqttError::Listen {
                addr,
                reason: e.to_string(),
            }
        };
        let public = Builder::new()
            .name("ota/tcp")
            .laddr(addr)
            // A restart must not wait out TIME_WAIT; SO_REUSEADDR still
            // refuses a port another process listens on.
            .reuseaddr(Some(true))
            .allow_anonymous(false)
            // The session cap is checked as a handshake starts and counts
            // the session only when it ends, so it can be overrun by the
            // handshakes in flight: few of them keep that within the open
            // files `ota serve` keeps for the rest of the server.
            .max_handshaking_limit(MAX_HANDSHAKES)
            // Read whole before any hook sees it: what a vehicle may send
            // at most. Larger closes the connection.
            .max_packet_size(u32::try_from(max_packet_bytes).unwrap_or(u32::MAX))
            .bind()
            .map_err(listen_err(addr))?
            .tcp()
            .map_err(listen_err(addr))?;
        let bound = public.local_addr().map_err(|e| MqttError::Listen {
            addr,
            reason: e.to_string(),
        })?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let internal = Builder::new()
            .name("ota/adapter")
            .laddr(loopback)
            .allow_anonymous(false)
            .max_packet_size(MAX_RETAINED_BYTES as u32)
            // The adapter's window each way (rmqtt takes the smaller of
            // this and the client's receive maximum for both).
            .max_inflight(ADAPTER_IN_FLIGHT)
            .bind()
            .map_err(listen_err(loopback))?
            .tcp()
            .map_err(listen_err(loopback))?;
        let internal_addr = internal.local_addr().map_err(|e| MqttError::Listen {
            addr: loopback,
            reason: e.to_string(),
        })?;

        let register = scx.extends.hook_mgr().register();
        let acl = Arc::new(Acl {
            superuser_name: superuser.username,
            superuser_digest: ota_auth::secret_digest(&superuser.password),
            internal_listener: internal_addr.port(),
            credentials,
            topics: recorder.topics.clone(),
            recorder,
        });
        for typ in [
            Type::ClientAuthenticate,
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublishCheckAcl,
            Type::ClientConnected,
            Type::ClientDisconnected,
        ] {
            register.add(typ, Box::new(AclHandler(acl.clone()))).await;
        }
        register.start().await;

        let server = MqttServer::new(scx.clone())
            .listener_by_id(public, bound.port())
            .listener_by_id(internal, internal_addr.port())
            .build();
        // Never `start()`: it exits the process when the server fails.
        let run = tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        });
        tracing::info!(addr = %bound, "embedded MQTT broker listening");
        Ok(Self {
            addr: bound,
            internal: internal_addr,
            scx,
            run: Arc::new(Mutex::new(Some(run))),
        })
    }

    /// rmqtt has no shutdown: stop accepting (which drops the listener),
    /// then disconnect every session.
    pub async fn stop(&self) {
        let run = self.run.lock().expect("broker run").take();
        let Some(run) = run else { return };
        run.abort();
        let _ = run.await;
        let kick = async {
            // Ids first: kicking while iterating would lock the session map
            // the iterator holds.
            let ids: Vec<_> = {
                let shared = self.scx.extends.shared().await;
                shared.iter().map(|e| e.id()).collect()
            };
            for id in ids {
                let mut entry = self.scx.extends.shared().await.entry(id);
                if let Err(e) = entry.kick(true, true, true).await {
                    tracing::debug!(error = %e, "kicking an MQTT session");
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), kick)
            .await
            .is_err()
        {
            tracing::warn!("embedded MQTT broker: sessions still open after 5s");
        }
        metrics::gauge!("ota_mqtt_connections").set(0.0);
    }
}

struct Acl {
    superuser_name: String,
    /// Compared by digest, in constant time: the answer time says nothing
    /// about how much of a guessed password was right, nor its length.
    superuser_digest: [u8; 32],
    /// The adapter's loopback listener, where only the superuser gets in.
    internal_listener: rmqtt::types::ListenerId,
    credentials: VehicleCredentials,
    topics: Topics,
    /// Records status and inventory before the broker acknowledges them, so
    /// a crash of this process cannot lose an acknowledged report. Its
    /// `ensure` channel also takes vehicles that just connected: their
    /// document is published if it was not yet (the embedded broker starts
    /// without retained messages).
    recorder: Arc<Recorder>,
}

struct AclHandler(Arc<Acl>);

/// What a vehicle may say on its presence topic.
const PRESENCE: [&[u8]; 2] = [b"online", b"offline"];
/// What its will may say there.
const PRESENCE_WILL: &[u8] = b"offline";
const MQTT_LEVEL_5: u8 = 5;

/// Why a vehicle's publish is refused before anything is recorded.
enum Refusal {
    /// Not one of its own report topics.
    Acl,
    /// A retained status or inventory report.
    Retain,
    /// A presence other than `online` or `offline`.
    Presence,
}

impl Refusal {
    /// The `reason` label of `ota_mqtt_rejected_total`, and the MQTT 5
    /// reason code.
    fn reason(&self) -> (&'static str, PublishAckReason) {
        match self {
            Self::Acl => ("acl", PublishAckReason::NotAuthorized),
            Self::Retain => ("retain", PublishAckReason::NotAuthorized),
            Self::Presence => ("presence", PublishAckReason::PayloadFormatInvalid),
        }
    }
}

/// A refusal acknowledged without closing the connection: MQTT 5 clients
/// get the reason code and string, MQTT 3.1.1 a plain PUBACK (it has no
/// other), for publishes that sending again cannot help.
fn refuse(code: PublishAckReason, reason: &str) -> PublishAclResult {
    // A reason string in every refusal, kept short.
    let end = reason
        .char_indices()
        .nth(200)
        .map_or(reason.len(), |(i, _)| i);
    PublishAclResult(PublishResult::reason_code(
        code,
        Some(reason[..end].into()),
        false,
    ))
}

impl Acl {
    fn is_superuser_password(&self, password: &[u8]) -> bool {
        let Ok(password) = std::str::from_utf8(password) else {
            return false;
        };
        ota_common::secret::digests_eq(&ota_auth::secret_digest(password), &self.superuser_digest)
    }

    async fn authenticate(&self, c: &ConnectInfo) -> AuthResult {
        let user = c.username().map(|u| u.as_ref()).unwrap_or_default();
        let password = c.password().map(|p| p.as_ref()).unwrap_or_default();
        if user == self.superuser_name {
            return if self.is_superuser_password(password) {
                AuthResult::Allow(true, None)
            } else {
                AuthResult::BadUsernameOrPassword
            };
        }
        if c.id().lid == self.internal_listener {
            return AuthResult::NotAuthorized;
        }
        let client_id: &str = c.client_id().as_ref();
        if user.is_empty() || client_id != user {
            return AuthResult::NotAuthorized;
        }
        // A Last Will is published without the publish ACL, so it is
        // checked here: a vehicle may only leave `offline` on its own
        // presence behind.
        if let Some(will) = c.last_will() {
            let (topic, message): (&str, &[u8]) = match will {
                rmqtt::types::LastWill::V3(w) => (w.topic.as_ref(), w.message.as_ref()),
                rmqtt::types::LastWill::V5(w) => (w.topic.as_ref(), w.message.as_ref()),
            };
            if topic != self.topics.topic(user, Kind::Presence) || message != PRESENCE_WILL {
                metrics::counter!("ota_mqtt_rejected_total", "reason" => "will").increment(1);
                return AuthResult::NotAuthorized;
            }
        }
        let Ok(password) = std::str::from_utf8(password) else {
            return AuthResult::BadUsernameOrPassword;
        };
        match self.credentials.authenticate(password).await {
            Ok(identity) if identity.vin == user => {
                self.recorder.saw(user);
                AuthResult::Allow(false, None)
            }
            Ok(_) => AuthResult::NotAuthorized,
            Err(ota_auth::AuthError::BadToken) => AuthResult::BadUsernameOrPassword,
            Err(e) => {
                // The database is down: refuse, the vehicle retries later.
                tracing::warn!(vin = user, error = %e, "checking an MQTT vehicle token");
                AuthResult::NotAuthorized
            }
        }
    }

    /// What a vehicle may publish: only on its own report topics, and
    /// only what the contract says there. `None`: go on and record it.
    fn check_publish(&self, client_id: &str, p: &rmqtt::types::Publish) -> Option<Refusal> {
        let kind = match self.topics.parse(p.topic.as_ref()) {
            Some((vin, k @ (Kind::Status | Kind::Inventory | Kind::Presence)))
                if vin == client_id =>
            {
                k
            }
            _ => return Some(Refusal::Acl),
        };
        match kind {
            // A retained report would be kept by the broker for good and
            // replayed to every later subscriber.
            Kind::Status | Kind::Inventory if p.retain => Some(Refusal::Retain),
            Kind::Presence if !PRESENCE.contains(&p.payload.as_ref()) => Some(Refusal::Presence),
            _ => None,
        }
    }

    /// Status and inventory are recorded here, and the broker sends PUBACK
    /// only after this returns. A platform that stays unavailable gets the
    /// vehicle disconnected without an ack, so it sends the report again.
    /// Presence goes on to the adapter's subscription (it is recorded
    /// there, whether the vehicle or the broker, for a will, sent it).
    async fn record(&self, p: &rmqtt::types::Publish, mqtt5: bool) -> PublishAclResult {
        if !matches!(
            self.topics.parse(p.topic.as_ref()),
            Some((_, Kind::Status | Kind::Inventory))
        ) {
            return PublishAclResult::allow();
        }
        // An MQTT 5 vehicle's trace context; 3.1.1 has no properties.
        let traceparent = p.properties.as_ref().and_then(|props| {
            crate::ingest::traceparent(
                props
                    .user_properties
                    .iter()
                    .map(|(k, v)| (k.as_ref(), v.as_ref())),
            )
        });
        let outcome = self
            .recorder
            .record(
                p.topic.as_ref(),
                &p.payload,
                p.retain,
                Some(RECORD_PATIENCE),
                traceparent,
            )
            .await;
        match outcome {
            // Recorded reports go nowhere else: nobody subscribes to them.
            Outcome::Recorded => PublishAclResult::allow(),
            Outcome::Rejected(reason, detail) => {
                let code = match reason {
                    "payload" | "too_large" | "vin" | "invalid" => {
                        PublishAckReason::PayloadFormatInvalid
                    }
                    // Well formed, but refused (an unknown action, another
                    // vehicle's action, ...).
                    _ => PublishAckReason::ImplementationSpecificError,
                };
                refuse(code, &detail)
            }
            Outcome::Limited(wait) if mqtt5 => refuse(
                PublishAckReason::QuotaExceeded,
                &format!(
                    "over the report rate; not recorded, send it again in {} s",
                    ota_common::rate::retry_after_s(wait)
                ),
            ),
            // MQTT 3.1.1 has no negative PUBACK: any PUBACK tells the
            // vehicle its report is delivered, and it would never send it
            // again. So no PUBACK: the connection closes, and the vehicle
            // sends the report again once it reconnected (a 3.1.1 client
            // with a persistent session must), by which time its budget
            // has refilled.
            Outcome::Limited(_) | Outcome::Unavailable => PublishAclResult::rejected(true, None),
        }
    }

    /// A vehicle may subscribe only to its own actions, unshared.
    fn may_subscribe(&self, client_id: &str, s: &rmqtt::types::Subscribe) -> bool {
        !s.opts.has_shared_group()
            && s.topic_filter.as_ref() as &str == self.topics.topic(client_id, Kind::Actions)
    }
}

#[async_trait]
impl Handler for AclHandler {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let acl = &self.0;
        match param {
            Parameter::ClientAuthenticate(c) => {
                let r = acl.authenticate(c).await;
                if !matches!(r, AuthResult::Allow(..)) {
                    metrics::counter!("ota_mqtt_auth_refused_total").increment(1);
                    tracing::info!(client_id = %c.client_id(), "MQTT connection refused");
                }
                (false, Some(HookResult::AuthResult(r)))
            }
            // The superuser never gets here: rmqtt allows it before the hook.
            Parameter::ClientSubscribeCheckAcl(s, sub) => {
                let r = if acl.may_subscribe(s.id.client_id.as_ref(), sub) {
                    SubscribeAclResult::new_success(sub.opts.qos(), None)
                } else {
                    tracing::info!(client_id = %s.id.client_id, topic = %sub.topic_filter, "MQTT subscribe denied");
                    SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
                };
                (false, Some(HookResult::SubscribeAclResult(r)))
            }
            Parameter::MessagePublishCheckAcl(s, p) => {
                let client_id: &str = s.id.client_id.as_ref();
                let r = match acl.check_publish(client_id, p) {
                    None => {
                        let mqtt5 = match s.connect_info().await {
                            Ok(c) => c.proto_ver() == MQTT_LEVEL_5,
                            Err(_) => false,
                        };
                        acl.record(p, mqtt5).await
                    }
                    Some(refusal) => {
                        let (reason, code) = refusal.reason();
                        metrics::counter!("ota_mqtt_rejected_total", "reason" => reason)
                            .increment(1);
                        tracing::info!(client_id = %s.id.client_id, topic = %p.topic, reason, "MQTT publish refused");
                        // Acknowledged (with a reason code over MQTT 5):
                        // sending it again cannot help.
                        refuse(code, reason)
                    }
                };
                (false, Some(HookResult::PublishAclResult(r)))
            }
            Parameter::ClientConnected(s) => {
                metrics::gauge!("ota_mqtt_connections").increment(1.0);
                if !s.superuser().await.unwrap_or_default() {
                    let _ = acl
                        .recorder
                        .ensure
                        .try_send((s.id.client_id.to_string(), None));
                }
                (true, acc)
            }
            Parameter::ClientDisconnected(..) => {
                metrics::gauge!("ota_mqtt_connections").decrement(1.0);
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}
