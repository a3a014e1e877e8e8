//! Layered configuration: defaults < `ota.toml` (or `--config FILE`) <
//! `OTA_*` environment variables < command-line flags. Nested keys use `__` in
//! the environment (`OTA_PEERS__VEHICLE_STORE`). Every error names the key
//! and where its value came from.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ota_vehicle_store::Precedence;
use serde::{Deserialize, Serialize};

/// The roles one process can take; `ota serve --services` picks any subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    VehicleStore,
    RuleEngine,
    Staging,
    CampaignManager,
    HttpAdapter,
    MqttAdapter,
    Rest,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::VehicleStore,
        Service::RuleEngine,
        Service::Staging,
        Service::CampaignManager,
        Service::HttpAdapter,
        Service::MqttAdapter,
        Service::Rest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::VehicleStore => "vehicle-store",
            Service::RuleEngine => "rule-engine",
            Service::Staging => "staging",
            Service::CampaignManager => "campaign-manager",
            Service::HttpAdapter => "http-adapter",
            Service::MqttAdapter => "mqtt-adapter",
            Service::Rest => "rest",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Service::ALL.iter().map(|r| r.name()).collect();
                format!(
                    "unknown service {s:?}, expected \"all\" or some of {}",
                    names.join(", ")
                )
            })
    }
}

/// The roles of a process, read from `all` or a comma-separated list of
/// names when the configuration loads (and written back the same way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Services(pub BTreeSet<Service>);

impl TryFrom<String> for Services {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        parse_services(&s).map(Services)
    }
}

impl From<Services> for String {
    fn from(s: Services) -> String {
        if s.0.len() == Service::ALL.len() {
            return "all".into();
        }
        let names: Vec<&str> = s.0.iter().map(|s| s.name()).collect();
        names.join(",")
    }
}

/// A socket address, checked when the configuration loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Addr(pub SocketAddr);

impl TryFrom<String> for Addr {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        v.parse()
            .map(Addr)
            .map_err(|_| format!("{v:?} is not an address like 127.0.0.1:8080"))
    }
}

impl From<Addr> for String {
    fn from(a: Addr) -> String {
        a.0.to_string()
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq<&str> for Addr {
    fn eq(&self, other: &&str) -> bool {
        self.0.to_string() == *other
    }
}

/// Parses `all` or a comma-separated list of service names.
pub fn parse_services(s: &str) -> Result<BTreeSet<Service>, String> {
    let s = s.trim();
    if s.is_empty() || s == "all" {
        return Ok(Service::ALL.into_iter().collect());
    }
    s.split(',').map(|p| p.trim().parse()).collect()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peers {
    pub vehicle_store: Option<String>,
    pub rule_engine: Option<String>,
    pub staging: Option<String>,
    pub campaign_manager: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_import_bytes: usize,
}

/// Bounds of the HTTP listener (see `listener`), and who may read `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// A request head must arrive within this (HTTP/1).
    pub header_read_timeout_ms: u64,
    /// A connection on which nothing moved for this long is closed.
    pub idle_timeout_s: u64,
    /// Connections open at once; more get 503 and are closed.
    pub max_connections: usize,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 30_000,
            idle_timeout_s: 120,
            max_connections: 1024,
            metrics_token: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleStoreSettings {
    #[serde(default)]
    pub precedence: Precedence,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSettings {
    /// How often the rollout re-decides running campaigns.
    pub tick_ms: u64,
    /// Vehicle status reports written per database transaction, at most.
    pub status_batch: usize,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        Self {
            tick_ms: 1000,
            status_batch: 2000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagingSettings {
    /// What staged documents tell vehicles about when to poll again.
    pub poll_after_s: u32,
    /// How often staged documents are compared with the campaigns' actions
    /// and repaired.
    pub reconcile_interval_s: u64,
}

impl Default for StagingSettings {
    fn default() -> Self {
        Self {
            poll_after_s: 300,
            reconcile_interval_s: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    /// How long a message a consumer took stays with it unacknowledged
    /// before another consumer of the group gets it: how soon the batch of
    /// a staging process that died is taken over. Keep it above the slowest
    /// batch, or a live consumer's batch is handed out twice (harmless, as
    /// staging is idempotent, but wasted).
    pub claim_timeout_ms: u64,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            claim_timeout_ms: ota_bus::DEFAULT_CLAIM_TIMEOUT.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSettings {
    /// Requests per second each vehicle may make, sustained.
    pub vehicle_rate_per_s: f64,
    /// Requests a vehicle may make in a burst.
    pub vehicle_burst: u32,
    /// Reports (status, inventory, DDI feedback and configData, MQTT
    /// status, inventory and presence) per second each vehicle may make,
    /// sustained: a budget of their own, apart from the polls.
    pub report_rate_per_s: f64,
    /// Reports a vehicle may make in a burst.
    pub report_burst: u32,
    /// Largest MQTT packet a vehicle may send the embedded broker.
    pub mqtt_max_packet_bytes: usize,
    /// Retained messages the embedded broker keeps (two per vehicle: its
    /// document and its presence); 0: no limit.
    pub mqtt_max_retained: usize,
    /// hawkBit gateway token: may act for any controller. Unset: only the
    /// vehicles' own tokens.
    pub ddi_gateway_token: Option<String>,
    /// Vehicles the embedded MQTT broker holds at most (sessions). Unset:
    /// as many as the process may open files, less a reserve for the rest
    /// of the server (see `files::broker_sessions`); 0: no limit.
    pub mqtt_max_sessions: Option<usize>,
}

impl Default for AdapterSettings {
    fn default() -> Self {
        Self {
            vehicle_rate_per_s: ota_common::rate::RateLimit::POLLS.per_second,
            vehicle_burst: ota_common::rate::RateLimit::POLLS.burst,
            report_rate_per_s: ota_common::rate::RateLimit::REPORTS.per_second,
            report_burst: ota_common::rate::RateLimit::REPORTS.burst,
            mqtt_max_packet_bytes: ota_mqtt_adapter::MAX_PACKET_BYTES,
            mqtt_max_retained: ota_mqtt_adapter::MAX_RETAINED,
            ddi_gateway_token: None,
            mqtt_max_sessions: None,
        }
    }
}

impl AdapterSettings {
    fn validate(&self) -> anyhow::Result<()> {
        for (key, rate, burst) in [
            ("vehicle", self.vehicle_rate_per_s, self.vehicle_burst),
            ("report", self.report_rate_per_s, self.report_burst),
        ] {
            if !(rate.is_finite() && rate > 0.0) || burst == 0 {
                bail!(
                    "invalid configuration: adapters.{key}_rate_per_s and adapters.{key}_burst must be above 0 (got {rate} and {burst})"
                );
            }
        }
        // MQTT's own ceiling is 256 MiB; below 1 KiB no report fits.
        if !(1024..=268_435_455).contains(&self.mqtt_max_packet_bytes) {
            bail!(
                "invalid configuration: adapters.mqtt_max_packet_bytes: {} is outside 1024..=268435455",
                self.mqtt_max_packet_bytes
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub services: Services,
    pub data_dir: PathBuf,
    /// Unset: the SQLite file `<data_dir>/ota.db`.
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub mqtt_url: Option<String>,
    pub mqtt_listen: Addr,
    /// The adapter's own broker login: required with an external broker that
    /// authenticates; generated for the embedded one when unset.
    pub mqtt_username: Option<String>,
    pub mqtt_password: Option<String>,
    /// How vehicles reach this server (links in DDI answers, URLs of hosted
    /// artifacts). Unset: `http://<http_addr>`.
    pub public_url: Option<String>,
    pub http_addr: Addr,
    pub grpc_addr: Addr,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log: String,
    /// `auto` (readable on a terminal, JSON lines otherwise), `json` or `text`.
    #[serde(default)]
    pub log_format: crate::telemetry::LogFormat,
    pub peers: Peers,
    pub limits: Limits,
    #[serde(default)]
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub vehicle_store: VehicleStoreSettings,
    #[serde(default)]
    pub campaigns: CampaignSettings,
    #[serde(default)]
    pub staging: StagingSettings,
    #[serde(default)]
    pub bus: BusSettings,
    #[serde(default)]
    pub adapters: AdapterSettings,
}

impl Default for Config {
    fn default() -> Self {
        let rest = ota_rest::Limits::default();
        Self {
            services: Services(Service::ALL.into_iter().collect()),
            data_dir: PathBuf::from("./ota-data"),
            database_url: None,
            redis_url: None,
            mqtt_url: None,
            mqtt_listen: Addr(([127, 0, 0, 1], 1883).into()),
            mqtt_username: None,
            mqtt_password: None,
            public_url: None,
            http_addr: Addr(([127, 0, 0, 1], 8080).into()),
            grpc_addr: Addr(([127, 0, 0, 1], 50051).into()),
            // The embedded broker's plugins announce their start-up and
            // defaults at info and warn: noise to an operator.
            log: "info,sqlx=warn,h2=warn,tower=warn,hyper=warn,rmqtt=error,rmqtt_retainer=warn,rmqtt_shared_subscription=warn,rmqtt_net=warn".into(),
            log_format: Default::default(),
            peers: Peers::default(),
            limits: Limits {
                max_body_bytes: rest.max_body_bytes,
                max_import_bytes: rest.max_import_bytes,
            },
            http: HttpSettings::default(),
            database: DatabaseSettings {
                max_connections: 16,
                acquire_timeout_ms: 3000,
            },
            vehicle_store: VehicleStoreSettings::default(),
            campaigns: CampaignSettings::default(),
            staging: StagingSettings::default(),
            bus: BusSettings::default(),
            adapters: AdapterSettings::default(),
        }
    }
}

/// Top-level keys read from `OTA_*` variables. Others (OTA_SERVER, OTA_TOKEN
/// of the CLI, variables of future versions) are left alone.
const ENV_KEYS: [&str; 13] = [
    "services",
    "data_dir",
    "database_url",
    "redis_url",
    "mqtt_url",
    "mqtt_listen",
    "mqtt_username",
    "mqtt_password",
    "public_url",
    "http_addr",
    "grpc_addr",
    "log",
    "log_format",
];
const ENV_SECTIONS: [&str; 9] = [
    "adapters__",
    "http__",
    "bus__",
    "peers__",
    "limits__",
    "database__",
    "vehicle_store__",
    "campaigns__",
    "staging__",
];

/// What deployment tooling must agree with (`ota describe`): the roles,
/// the variable that gives each gRPC peer's address, and every `OTA_*`
/// variable `ota serve` reads. Derived from the types above, so `infra/`
/// compares its role list and variables with this instead of a copy.
pub fn contract() -> serde_json::Value {
    fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    keys(&format!("{prefix}{}__", k.to_ascii_uppercase()), v, out);
                }
            }
            _ => out.push(prefix.trim_end_matches("__").to_owned()),
        }
    }
    let config = serde_json::to_value(Config::default()).expect("the config serializes");
    let mut env = Vec::new();
    if let serde_json::Value::Object(top) = &config {
        for (k, v) in top {
            let section = format!("{k}__");
            if ENV_KEYS.contains(&k.as_str()) || ENV_SECTIONS.contains(&section.as_str()) {
                keys(&format!("OTA_{}__", k.to_ascii_uppercase()), v, &mut env);
            }
        }
    }
    env.sort();
    let peers = serde_json::to_value(Peers::default()).expect("peers serialize");
    let peers: serde_json::Map<String, serde_json::Value> = peers
        .as_object()
        .expect("an object")
        .keys()
        .map(|k| {
            let role = k.replace('_', "-");
            debug_assert!(role.parse::<Service>().is_ok(), "peer {role} is a role");
            (
                role,
                format!("OTA_PEERS__{}", k.to_ascii_uppercase()).into(),
            )
        })
        .collect();
    serde_json::json!({
        "roles": Service::ALL.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "peers": peers,
        "env": env,
        "metrics": crate::metric_catalog::contract(),
    })
}

/// Loads the layers. `file` is `--config`; without it `./ota.toml` is read
/// when present. `flags` are the command-line overrides.
pub fn load(file: Option<&Path>, flags: Figment) -> anyhow::Result<Config> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    match file {
        Some(f) => {
            if !f.exists() {
                bail!("config file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        None => fig = fig.merge(Toml::file("ota.toml")),
    }
    let env = Env::prefixed("OTA_")
        .filter(|k| {
            // figment hands over the key as written in the environment.
            let k = k.as_str().to_ascii_lowercase();
            ENV_KEYS.contains(&k.as_str()) || ENV_SECTIONS.iter().any(|s| k.starts_with(s))
        })
        .split("__");
    let cfg: Config = fig
        .merge(env)
        .merge(flags)
        .extract()
        .map_err(|e| anyhow::anyhow!(describe(e)))?;
    cfg.validate()?;
    Ok(cfg)
}

/// One line per problem: the key, what is wrong, and where the value came
/// from (the environment variable's own name, or the file).
fn describe(e: figment::Error) -> String {
    let all: Vec<String> = e
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_ascii_lowercase();
            let from = match &e.metadata {
                Some(m) if m.name.contains("environment") => {
                    format!(
                        " (from {})",
                        format!("OTA_{}", e.path.join("__")).to_ascii_uppercase()
                    )
                }
                Some(m) => match &m.source {
                    Some(src) => format!(" (from {src})"),
                    None => format!(" (from {})", m.name),
                },
                None => String::new(),
            };
            if key.is_empty() {
                format!("invalid configuration: {}{from}", e.kind)
            } else {
                format!("invalid configuration: {key}: {}{from}", e.kind)
            }
        })
        .collect();
    all.join("\n")
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.database_url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres:")
                || url.starts_with("postgresql:"))
            {
                bail!(
                    "invalid configuration: database_url: {:?} must start with sqlite:, postgres: or postgresql:",
                    ota_db::redact(url)
                );
            }
        }
        self.vehicle_store
            .precedence
            .validate("vehicle_store.precedence")
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if self.campaigns.tick_ms == 0 || self.campaigns.status_batch == 0 {
            bail!("invalid configuration: campaigns: tick_ms and status_batch must be above 0");
        }
        if self.bus.claim_timeout_ms < 100 {
            bail!(
                "invalid configuration: bus.claim_timeout_ms: {} is below 100 (every message would be handed out again at once)",
                self.bus.claim_timeout_ms
            );
        }
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                bail!(
                    "invalid configuration: redis_url: {:?} must start with redis:// or rediss://",
                    ota_db::redact(url)
                );
            }
        }
        if self.limits.max_body_bytes == 0 || self.limits.max_import_bytes == 0 {
            bail!("invalid configuration: limits: body limits must be above 0");
        }
        let h = &self.http;
        if h.header_read_timeout_ms == 0 || h.idle_timeout_s == 0 || h.max_connections == 0 {
            bail!("invalid configuration: http: header_read_timeout_ms, idle_timeout_s and max_connections must be above 0");
        }
        if h.metrics_token
            .as_deref()
            .is_some_and(|t| t.trim().len() < 16)
        {
            bail!("invalid configuration: http.metrics_token: must be at least 16 characters (a guessable token protects nothing)");
        }
        self.adapters.validate()?;
        Ok(())
    }

    pub fn services(&self) -> BTreeSet<Service> {
        self.services.0.clone()
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("ota.db").display()))
    }

    /// How vehicles reach this server.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_addr))
            .trim_end_matches('/')
            .to_string()
    }

    pub fn http_limits(&self) -> crate::listener::HttpLimits {
        crate::listener::HttpLimits {
            header_read_timeout: std::time::Duration::from_millis(self.http.header_read_timeout_ms),
            idle_timeout: std::time::Duration::from_secs(self.http.idle_timeout_s),
            max_connections: self.http.max_connections,
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr.0
    }

    pub fn mqtt_listen_addr(&self) -> SocketAddr {
        self.mqtt_listen.0
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr.0
    }

    /// The address of a peer that does not run in this process.
    pub fn peer_url(&self, service: Service) -> anyhow::Result<String> {
        let (key, v) = match service {
            Service::VehicleStore => ("vehicle_store", &self.peers.vehicle_store),
            Service::RuleEngine => ("rule_engine", &self.peers.rule_engine),
            Service::Staging => ("staging", &self.peers.staging),
            Service::CampaignManager => ("campaign_manager", &self.peers.campaign_manager),
            other => bail!("{other} is not reachable over gRPC"),
        };
        v.clone().with_context(|| {
            format!(
                "{service} does not run in this process (services = {:?}), so peers.{key} (OTA_PEERS__{}) must give its address, e.g. http://{service}:50051",
                String::from(self.services.clone()),
                key.to_uppercase()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API
    fn layers_apply_in_order_and_name_bad_keys() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "ota.toml",
                "http_addr = \"127.0.0.1:9000\"\ngrpc_addr = \"127.0.0.1:9001\"\n",
            )?;
            jail.set_env("OTA_GRPC_ADDR", "127.0.0.1:9002");
            jail.set_env("OTA_SERVER", "http://elsewhere"); // CLI variable, ignored
            jail.set_env("OTA_PEERS__VEHICLE_STORE", "http://vs:50051");
            let flags = Figment::from(Serialized::globals(serde_json::json!({"log": "debug"})));
            let cfg = load(None, flags).unwrap();
            assert_eq!(cfg.http_addr, "127.0.0.1:9000", "file over default");
            assert_eq!(cfg.grpc_addr, "127.0.0.1:9002", "env over file");
            assert_eq!(cfg.log, "debug", "flag over all");
            assert_eq!(cfg.peers.vehicle_store.as_deref(), Some("http://vs:50051"));

            jail.create_file("ota.toml", "htp_addr = \"x\"\n")?;
            let err = load(None, Figment::new()).unwrap_err().to_string();
            assert!(
                err.contains("unknown field") && err.contains("htp_addr"),
                "{err}"
            );

            jail.create_file("ota.toml", "")?;
            jail.set_env("OTA_HTTP_ADDR", "localhost");
            let err = load(None, Figment::new()).unwrap_err().to_string();
            assert!(
                err.contains("http_addr: \"localhost\" is not an address"),
                "{err}"
            );

            jail.set_env("OTA_HTTP_ADDR", "127.0.0.1:8080");
            jail.set_env("OTA_SERVICES", "rest,teleporter");
            let err = load(None, Figment::new()).unwrap_err().to_string();
            assert!(
                err.contains("services: unknown service \"teleporter\""),
                "{err}"
            );

            jail.set_env("OTA_SERVICES", "rest");
            jail.set_env("OTA_LIMITS__MAX_BODY_BYTES", "lots");
            let err = load(None, Figment::new()).unwrap_err().to_string();
            assert!(
                err.contains("limits.max_body_bytes: invalid type: found string \"lots\"")
                    && err.contains("(from OTA_LIMITS__MAX_BODY_BYTES)"),
                "{err}"
            );

            jail.set_env("OTA_LIMITS__MAX_BODY_BYTES", "1000");
            jail.set_env("OTA_BUS__CLAIM_TIMEOUT_MS", "2500");
            assert_eq!(
                load(None, Figment::new()).unwrap().bus.claim_timeout_ms,
                2500
            );
            jail.set_env("OTA_BUS__CLAIM_TIMEOUT_MS", "0");
            let err = load(None, Figment::new()).unwrap_err().to_string();
            assert!(
                err.contains("bus.claim_timeout_ms: 0 is below 100"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API
    fn vehicle_budgets_and_broker_bounds_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("OTA_ADAPTERS__REPORT_RATE_PER_S", "0.5");
            jail.set_env("OTA_ADAPTERS__REPORT_BURST", "7");
            jail.set_env("OTA_ADAPTERS__MQTT_MAX_PACKET_BYTES", "32768");
            jail.set_env("OTA_ADAPTERS__MQTT_MAX_RETAINED", "1000");
            let a = load(None, Figment::new()).unwrap().adapters;
            assert_eq!((a.report_rate_per_s, a.report_burst), (0.5, 7));
            assert_eq!(
                (a.mqtt_max_packet_bytes, a.mqtt_max_retained),
                (32768, 1000)
            );
            assert_eq!((a.vehicle_rate_per_s, a.vehicle_burst), (2.0, 10));

            jail.set_env("OTA_ADAPTERS__REPORT_BURST", "0");
            let err = load(None, Figment::new()).unwrap_err().to_string();
            assert!(
                err.contains("adapters.report_burst must be above 0"),
                "{err}"
            );
            jail.set_env("OTA_ADAPTERS__REPORT_BURST", "7");
            jail.set_env("OTA_ADAPTERS__MQTT_MAX_PACKET_BYTES", "10");
            let err = load(None, Figment::new()).unwrap_err().to_string();
            assert!(err.contains("adapters.mqtt_max_packet_bytes: 10"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_peer_address_names_the_setting() {
        let cfg = Config {
            services: Services([Service::Rest].into_iter().collect()),
            ..Config::default()
        };
        let err = cfg.peer_url(Service::VehicleStore).unwrap_err().to_string();
        assert!(
            err.contains("peers.vehicle_store (OTA_PEERS__VEHICLE_STORE)"),
            "{err}"
        );
    }

    #[test]
    fn default_database_is_sqlite_in_the_data_dir() {
        assert_eq!(
            Config::default().database_url(),
            "sqlite://./ota-data/ota.db"
        );
    }
}
