//! The CLI's side of the management REST API: where the server is, which
//! token to send, and turning error bodies into readable messages.

use std::path::PathBuf;

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

impl Connection {
    pub fn api(&self) -> anyhow::Result<Api> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let dir = std::env::var_os("OTA_DATA_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("./ota-data"));
                let path = dir.join("admin.token");
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
