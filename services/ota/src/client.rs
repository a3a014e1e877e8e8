//! The CLI's side of the management REST API: where the server is, which
//! token to send, and turning error bodies into readable messages.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;

pub struct Api {
    pub base: String,
    token: String,
    pub http: reqwest::Client,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// Server base URL.
    #[arg(
        long,
        env = "OTA_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// API token; defaults to the bootstrap admin token of the local data dir.
    #[arg(long, env = "OTA_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

/// How long the CLI waits for a server on this machine that is still
/// starting: a script's `ota serve &` followed at once by a command.
const LOCAL_START_WAIT: Duration = Duration::from_secs(10);

impl Connection {
    pub fn api(&self) -> anyhow::Result<Api> {
        let deadline = Instant::now() + LOCAL_START_WAIT;
        let local = wait_for_local_server(&self.server, deadline);
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let dir = std::env::var_os("OTA_DATA_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("./ota-data"));
                let path = dir.join("admin.token");
                // A first start writes the token just after it listens.
                while local && !path.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                std::fs::read_to_string(&path)
                    .map(|s| s.trim().to_owned())
                    .with_context(|| {
                        format!(
                            "no token: pass --token or set OTA_TOKEN (no bootstrap token at {})",
                            path.display()
                        )
                    })?
            }
        };
        Ok(Api {
            base: self.server.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::builder()
                .user_agent(concat!("ota-cli/", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }
}

/// For a server on a loopback address that refuses connections, waits
/// until it listens or the deadline passes, saying so once. Returns whether
/// the server is on this machine.
fn wait_for_local_server(server: &str, deadline: Instant) -> bool {
    let Ok(uri) = server.parse::<http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(80);
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        h => match h.parse() {
            Ok(ip) => ip,
            Err(_) => return false,
        },
    };
    if !ip.is_loopback() {
        return false;
    }
    let addr = std::net::SocketAddr::new(ip, port);
    let mut said = false;
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                if !said {
                    eprintln!(
                        "waiting up to {} s for the server at {server} to start",
                        LOCAL_START_WAIT.as_secs()
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => return true,
        }
    }
}

impl Api {
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends and decodes a JSON answer; error answers become their message.
    pub async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> anyhow::Result<T> {
        let res = self.send_raw(req).await?;
        Ok(res.json().await?)
    }

    pub async fn send_raw(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        bail!("{message} (HTTP {})", status.as_u16())
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Table,
    Json,
}

pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
