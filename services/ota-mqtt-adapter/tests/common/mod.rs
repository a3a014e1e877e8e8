//! The platform in-process (`ota_tests::platform`, on a fresh PostgreSQL
//! database) and helpers to drive the adapter with real MQTT clients.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use std::ops::Deref;

use ota_bus::{topics, StagedEvent};
use ota_campaign_manager::model::ActionState;
use ota_mqtt_adapter::{Backends, MqttAdapterConfig, MqttAdapterHandle};
use ota_proto::v1 as pb;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::watch;

/// The Mosquitto of the external-broker tests: `OTA_TEST_MQTT_URL`
/// (`mqtt://host:port`), by default 127.0.0.1:1883.
pub fn mosquitto() -> SocketAddr {
    let url = std::env::var("OTA_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let hostport = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(&url)
        .trim_end_matches('/');
    hostport
        .parse()
        .unwrap_or_else(|e| panic!("OTA_TEST_MQTT_URL {url:?} is not mqtt://IP:PORT: {e}"))
}

pub struct Platform {
    core: ota_tests::platform::Platform,
    /// VINs unique to this test, so tests sharing Mosquitto never collide.
    pub vin_base: u32,
}

impl Deref for Platform {
    type Target = ota_tests::platform::Platform;
    fn deref(&self) -> &Self::Target {
        &self.core
    }
}

impl Platform {
    pub async fn new() -> Self {
        let db = ota_tests::db::postgres().await;
        Self {
            core: ota_tests::platform::Platform::new(db).await,
            vin_base: rand::random::<u32>() % 900_000,
        }
    }

    pub fn vin(&self, i: u32) -> String {
        ota_tests::platform::vin(self.vin_base + i)
    }

    pub fn backends(&self) -> Backends {
        Backends {
            campaigns: pb::campaign_manager_client::CampaignManagerClient::new(
                self.campaign_peer.clone(),
            ),
            vehicles: pb::vehicle_store_client::VehicleStoreClient::new(self.vehicle_peer.clone()),
            documents: self.staging_peer(false),
            credentials: Some(self.credentials.clone()),
        }
    }

    /// Vehicles 0..n with BMS 2.2.0, a package and a running campaign that
    /// gives each of them one action; returns the campaign id.
    pub async fn campaign(&self, n: u32) -> String {
        self.fleet_from(self.vin_base, n).await;
        self.package(
            "bms-fw",
            "2.3.1",
            vec![pb::Artifact {
                url: "https://cdn.example/bms-2.3.1.bin".into(),
                sha256: "a".repeat(64),
                size: 1024,
            }],
        )
        .await;
        // A fresh database per test: every vehicle in it is one of ours.
        let id = self.launch("name: mqtt-test\ntarget: 'vehicle.region == \"EU\" && version_cmp(vehicle.ecus.BMS.sw, \"2.3.1\") < 0'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\nrollout:\n  waves: [100]\n  wave_soak: 0s\n  max_per_minute: 600000\n").await;
        assert_eq!(
            self.count(&id, ActionState::Staged).await,
            u64::from(n),
            "every vehicle has an open action: {:?}",
            self.manager.store().state_counts(&id).await.unwrap()
        );
        id
    }

    /// Tells the adapter these vehicles' documents changed, as staging does.
    pub async fn staged(&self, vins: &[String]) {
        let ev = StagedEvent::Changed {
            vins: vins.to_vec(),
            at_ms: 0,
        };
        self.bus
            .publish(topics::STAGED, &[serde_json::to_string(&ev).unwrap()])
            .await
            .unwrap();
    }

    /// The vehicle's open action id in the campaign.
    pub async fn action_of(&self, campaign: &str, vin: &str) -> String {
        self.core.action_of(campaign, vin).await.0
    }

    pub async fn count(&self, campaign: &str, s: ActionState) -> u64 {
        let counts = self.manager.store().state_counts(campaign).await.unwrap();
        counts.get(&s).copied().unwrap_or(0)
    }

    pub async fn start(
        &self,
        config: MqttAdapterConfig,
    ) -> (MqttAdapterHandle, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let h = ota_mqtt_adapter::start(config, self.backends(), self.bus.clone(), rx)
            .await
            .expect("adapter starts");
        (h, tx)
    }
}

/// A port nothing listens on right now.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Fails the test loudly when Mosquitto is not running.
pub fn require_mosquitto() {
    let addr = mosquitto();
    if let Err(e) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        panic!("Mosquitto is required at {addr} (OTA_TEST_MQTT_URL) but is not reachable: {e} (run scripts/test.sh, which starts it)");
    }
}

/// A vehicle-side MQTT client, polled in the background; what it receives
/// arrives on the returned channel.
pub struct Vehicle {
    pub client: AsyncClient,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Vehicle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn options(addr: SocketAddr, client_id: &str, user: &str, password: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    o.set_credentials(user, password)
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(1024 * 1024, 1024 * 1024);
    o
}

pub fn connect(o: MqttOptions) -> Vehicle {
    let (client, eventloop) = AsyncClient::new(o, 100);
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(pump(eventloop, tx));
    Vehicle {
        client,
        events,
        task,
    }
}

async fn pump(mut el: EventLoop, tx: tokio::sync::mpsc::UnboundedSender<Result<Packet, String>>) {
    loop {
        match el.poll().await {
            Ok(Event::Incoming(p)) => {
                if tx.send(Ok(p)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if tx.send(Err(e.to_string())).is_err() {
                    return;
                }
                // Do not hammer the broker with reconnects.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl Vehicle {
    /// The next event that `pick` selects, within `wait`.
    pub async fn expect<T>(
        &mut self,
        wait: Duration,
        mut pick: impl FnMut(&Result<Packet, String>) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(t) = pick(&ev) {
                        return Some(t);
                    }
                }
                _ => return None,
            }
        }
    }

    pub async fn connack(&mut self) -> Result<(), String> {
        self.expect(Duration::from_secs(10), |ev| match ev {
            Ok(Packet::ConnAck(_)) => Some(Ok(())),
            Err(e) => Some(Err(e.clone())),
            _ => None,
        })
        .await
        .unwrap_or_else(|| Err("no CONNACK".into()))
    }

    pub async fn publish_json(&self, topic: &str, v: serde_json::Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, v.to_string())
            .await
            .unwrap();
    }
}

/// An MQTT 5 client, polled in the background until its connection ends.
pub struct Vehicle5 {
    pub client: rumqttc::v5::AsyncClient,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Result<Packet5, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Vehicle5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects an MQTT 5 client and waits for its CONNACK.
pub async fn connect5(o: rumqttc::v5::MqttOptions) -> Result<Vehicle5, String> {
    let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 100);
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let ev = match el.poll().await {
                Ok(rumqttc::v5::Event::Incoming(p)) => Ok(p),
                Ok(_) => continue,
                Err(e) => Err(e.to_string()),
            };
            let failed = ev.is_err();
            if tx.send(ev).is_err() || failed {
                return;
            }
        }
    });
    let mut v = Vehicle5 {
        client,
        events,
        task,
    };
    match v.next(|p| matches!(p, Packet5::ConnAck(_))).await {
        Some(Ok(_)) => Ok(v),
        Some(Err(e)) => Err(e),
        None => Err("no CONNACK".into()),
    }
}

impl Vehicle5 {
    /// The next packet `pick` selects (or the connection's end), within 10 s.
    pub async fn next(
        &mut self,
        pick: impl Fn(&Packet5) -> bool,
    ) -> Option<Result<Packet5, String>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(p))) if pick(&p) => return Some(Ok(p)),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Some(Err(e)),
                _ => return None,
            }
        }
    }

    /// Publishes at QoS 1 and returns the PUBACK's reason code.
    pub async fn publish(&mut self, topic: &str, retain: bool, payload: Vec<u8>) -> PubAckReason {
        self.publish_with(topic, retain, payload, PublishProperties::default())
            .await
    }

    /// Publishes at QoS 1 with these properties and returns the PUBACK's
    /// reason code.
    pub async fn publish_with(
        &mut self,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
        properties: PublishProperties,
    ) -> PubAckReason {
        self.client
            .publish_with_properties(topic, QoS5::AtLeastOnce, retain, payload, properties)
            .await
            .unwrap();
        match self.next(|p| matches!(p, Packet5::PubAck(_))).await {
            Some(Ok(Packet5::PubAck(ack))) => ack.reason,
            other => panic!("no PUBACK: {other:?}"),
        }
    }
}

/// Polls `check` until it holds, at most `wait`.
pub async fn eventually<F, Fut>(wait: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
