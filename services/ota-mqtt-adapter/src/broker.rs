//! The embedded broker: rmqtt with the retainer and shared-subscription
//! plugins, and hooks that authenticate vehicles by their token and confine
//! each to its own topics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ota_auth::vehicles::VehicleCredentials;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::types::{AuthResult, ConnectInfo, PublishAclResult, SubscribeAclResult};
use tokio::task::JoinHandle;

use crate::ingest::{Outcome, Recorder};
use crate::topics::{Kind, Topics};
use crate::MqttError;

/// How long a vehicle's report waits for the platform before the vehicle is
/// disconnected (and sends it again after reconnecting).
const RECORD_PATIENCE: Duration = Duration::from_secs(20);

/// Vehicle handshakes in progress at once (rmqtt's default is 1,000). A
/// handshake is a token check, cached after a vehicle's first connect.
const MAX_HANDSHAKES: usize = 128;

/// The adapter's own account: the only one allowed everywhere.
#[derive(Clone)]
pub(crate) struct Superuser {
    pub username: String,
    pub password: String,
}

#[derive(Clone)]
pub(crate) struct Broker {
    pub addr: SocketAddr,
    scx: ServerContext,
    run: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Broker {
    pub async fn start(
        addr: SocketAddr,
        superuser: Superuser,
        credentials: VehicleCredentials,
        recorder: Arc<Recorder>,
        max_sessions: usize,
    ) -> Result<Self, MqttError> {
        let max_payload = recorder.max_payload;
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
            .build()
            .await;
        rmqtt_retainer::register(&scx, true, false)
            .await
            .map_err(|e| MqttError::Internal(format!("retainer plugin: {e}")))?;
        rmqtt_shared_subscription::register(&scx, true, false)
            .await
            .map_err(|e| MqttError::Internal(format!("shared subscription plugin: {e}")))?;

        let register = scx.extends.hook_mgr().register();
        let acl = Arc::new(Acl {
            superuser,
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

        let listen_err = |e: rmqtt::Error| MqttError::Listen {
            addr,
            reason: e.to_string(),
        };
        let listener = Builder::new()
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
            // Well above the adapter's own payload limit, so an oversized
            // report still reaches it and is counted instead of vanishing.
            .max_packet_size((max_payload * 64).max(1024 * 1024) as u32)
            .bind()
            .map_err(listen_err)?
            .tcp()
            .map_err(listen_err)?;
        let bound = listener.local_addr().map_err(|e| MqttError::Listen {
            addr,
            reason: e.to_string(),
        })?;
        let server = MqttServer::new(scx.clone())
            .listener_by_id(listener, bound.port())
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
    superuser: Superuser,
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

impl Acl {
    async fn authenticate(&self, c: &ConnectInfo) -> AuthResult {
        let user = c.username().map(|u| u.as_ref()).unwrap_or_default();
        let password = c.password().map(|p| p.as_ref()).unwrap_or_default();
        if user == self.superuser.username {
            return if password == self.superuser.password.as_bytes() {
                AuthResult::Allow(true, None)
            } else {
                AuthResult::BadUsernameOrPassword
            };
        }
        let client_id: &str = c.client_id().as_ref();
        if user.is_empty() || client_id != user {
            return AuthResult::NotAuthorized;
        }
        // A Last Will is published without the publish ACL, so its topic is
        // checked here: a vehicle may only leave its own presence behind.
        if let Some(will) = c.last_will() {
            let topic: &str = match will {
                rmqtt::types::LastWill::V3(w) => w.topic.as_ref(),
                rmqtt::types::LastWill::V5(w) => w.topic.as_ref(),
            };
            if topic != self.topics.topic(user, Kind::Presence) {
                return AuthResult::NotAuthorized;
            }
        }
        let Ok(password) = std::str::from_utf8(password) else {
            return AuthResult::BadUsernameOrPassword;
        };
        match self.credentials.authenticate(password).await {
            Ok(identity) if identity.vin == user => AuthResult::Allow(false, None),
            Ok(_) => AuthResult::NotAuthorized,
            Err(ota_auth::AuthError::BadToken) => AuthResult::BadUsernameOrPassword,
            Err(e) => {
                // The database is down: refuse, the vehicle retries later.
                tracing::warn!(vin = user, error = %e, "checking an MQTT vehicle token");
                AuthResult::NotAuthorized
            }
        }
    }

    /// A vehicle may publish only its own reports.
    fn may_publish(&self, client_id: &str, topic: &str) -> bool {
        matches!(
            self.topics.parse(topic),
            Some((vin, Kind::Status | Kind::Inventory | Kind::Presence)) if vin == client_id
        )
    }

    /// Status and inventory are recorded here, and the broker sends PUBACK
    /// only after this returns. A platform that stays unavailable gets the
    /// vehicle disconnected without an ack, so it sends the report again.
    async fn record(&self, p: &rmqtt::types::Publish) -> PublishAclResult {
        if !matches!(
            self.topics.parse(p.topic.as_ref()),
            Some((_, Kind::Status | Kind::Inventory))
        ) {
            return PublishAclResult::allow();
        }
        let outcome = self
            .recorder
            .record(
                p.topic.as_ref(),
                &p.payload,
                p.retain,
                Some(RECORD_PATIENCE),
            )
            .await;
        match outcome {
            // Recorded reports go nowhere else: nobody subscribes to them.
            Outcome::Recorded => PublishAclResult::allow(),
            Outcome::Rejected => PublishAclResult::rejected(false, None),
            Outcome::Unavailable => PublishAclResult::rejected(true, None),
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
                let r = if acl.may_publish(client_id, p.topic.as_ref()) {
                    acl.record(p).await
                } else {
                    metrics::counter!("ota_mqtt_rejected_total", "reason" => "acl").increment(1);
                    tracing::info!(client_id = %s.id.client_id, topic = %p.topic, "MQTT publish denied");
                    PublishAclResult::rejected(false, None)
                };
                (false, Some(HookResult::PublishAclResult(r)))
            }
            Parameter::ClientConnected(s) => {
                metrics::gauge!("ota_mqtt_connections").increment(1.0);
                if !s.superuser().await.unwrap_or_default() {
                    let _ = acl.recorder.ensure.try_send(s.id.client_id.to_string());
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
