//! Runs the real `ota` binary on free ports for end-to-end tests.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const OTA: &str = env!("CARGO_BIN_EXE_ota");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    pub child: Child,
    pub http: String,
    pub grpc: String,
    /// The embedded broker, when the process runs the MQTT adapter.
    pub mqtt: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = tmp.path().to_owned();
        let data_dir = cwd.join("ota-data");
        Self::start_in(&cwd, data_dir, env, args, Some(tmp))
    }

    pub fn start_in(
        cwd: &Path,
        data_dir: PathBuf,
        env: &[(&str, &str)],
        args: &[&str],
        tmp: Option<tempfile::TempDir>,
    ) -> Server {
        let (hp, gp, mp) = (free_port(), free_port(), free_port());
        let mut cmd = Command::new(OTA);
        // The embedded broker gets a port of its own: 1883 is usually a local
        // Mosquitto's.
        cmd.arg("serve")
            .args(args)
            .current_dir(cwd)
            .env("OTA_HTTP_ADDR", format!("127.0.0.1:{hp}"))
            .env("OTA_GRPC_ADDR", format!("127.0.0.1:{gp}"))
            .env("OTA_MQTT_LISTEN", format!("127.0.0.1:{mp}"))
            .env("OTA_DATA_DIR", &data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn ota serve");
        // A test may choose the HTTP address (to know it before the start).
        let http = env
            .iter()
            .find(|(k, _)| *k == "OTA_HTTP_ADDR")
            .map(|(_, v)| format!("http://{v}"))
            .unwrap_or_else(|| format!("http://127.0.0.1:{hp}"));
        let mut s = Server {
            child,
            http,
            grpc: format!("http://127.0.0.1:{gp}"),
            mqtt: format!("mqtt://127.0.0.1:{mp}"),
            data_dir,
            _tmp: tmp,
        };
        s.wait_healthy();
        s
    }

    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.http.trim_start_matches("http://").to_owned();
        while Instant::now() < deadline {
            if healthz_ok(&addr) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("ota serve exited with {status} before it was healthy: {err}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("ota serve did not answer http://{addr}/healthz within 30 s");
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        Command::new(OTA)
            .args(args)
            .env("OTA_SERVER", &self.http)
            .env("OTA_TOKEN", token)
            .output()
            .expect("run ota cli")
    }

    /// `ota packages add --file`: the server hosts the file. Fails the
    /// test with the CLI's error when it does not succeed.
    pub fn add_hosted_package(
        &self,
        token: &str,
        name: &str,
        version: &str,
        ecu: &str,
        file: &Path,
    ) {
        let out = self.cli(
            token,
            &[
                "packages",
                "add",
                "--name",
                name,
                "--version",
                version,
                "--ecu",
                ecu,
                "--file",
                file.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "packages add --file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        // The server logs to a pipe; it is read after exit (logs are small).
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                use std::io::Read;
                self.child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                return (status, out);
            }
            assert!(
                Instant::now() < deadline,
                "ota serve did not stop within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking probe (usable from sync and async tests alike).
pub fn healthz_ok(addr: &str) -> bool {
    use std::io::Read;
    let Ok(mut c) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    if c.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    c.read_exact(&mut buf).is_ok() && buf.ends_with(b" 200")
}

/// Redis database `index` for one test, emptied first, so that keys and
/// streams of other runs stay out of the way: its URL and a connection.
/// Fails loudly when Redis is not there.
pub async fn redis_db(index: u8) -> (String, redis::aio::MultiplexedConnection) {
    let base =
        std::env::var("OTA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let url = format!("{}/{index}", base.trim_end_matches('/'));
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("Redis is required for this test but {url} is not reachable: {e}")
        });
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    (url, conn)
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

pub fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| l.to_string() + "\n").collect()
}

pub fn vehicle(n: u32) -> Value {
    json!({"vin": format!("WVWZZZE1ZMP{n:06}"), "model": "ID.4", "model_year": 2023, "platform": "MEB",
           "gateway": "hcp3", "region": if n.is_multiple_of(2) { "EU" } else { "NA" }, "country": "DE",
           "ecus": {"BMS": {"hw": "H2", "sw": "2.2.0"}, "HU": {"hw": "MIB3", "sw": "5.1.0"}}})
}

pub async fn post(url: String, token: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(url.clone())
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url}: {status} {v}");
    v
}

/// Creates a campaign from its file, has a second person approve it, and
/// launches it; returns its id.
pub async fn create_approve_launch(http: &str, admin: &str, spec: &str) -> String {
    let api = |p: &str| format!("{http}/api/v1{p}");
    let r = reqwest::Client::new()
        .post(api("/campaigns"))
        .bearer_auth(admin)
        .header("content-type", "application/yaml")
        .body(spec.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let approver = post(
        api("/tokens"),
        admin,
        json!({"principal": "ann", "role": "approver"}),
    )
    .await;
    post(
        api(&format!("/campaigns/{id}:approve")),
        approver["token"].as_str().unwrap(),
        json!({}),
    )
    .await;
    post(api(&format!("/campaigns/{id}:launch")), admin, json!({})).await;
    id
}

/// Imports `fleet` (NDJSON records) through the REST API.
pub async fn import(http: &str, admin: &str, fleet: &[Value]) {
    let r = reqwest::Client::new()
        .post(format!("{http}/api/v1/vehicles:import"))
        .bearer_auth(admin)
        .header("content-type", "application/x-ndjson")
        .body(ndjson(fleet))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "import: {status} {}",
        r.text().await.unwrap()
    );
}

/// Issues a credential for the vehicle; returns its token.
pub async fn credential(http: &str, admin: &str, vin: &str) -> String {
    let issued = post(
        format!("{http}/api/v1/vehicles/{vin}/credentials"),
        admin,
        json!({}),
    )
    .await;
    issued["token"].as_str().unwrap().to_owned()
}

/// GET with a whole `Authorization` value (`Bearer x`, `TargetToken x`),
/// the body as JSON.
pub async fn get_json(url: &str, authorization: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .header("authorization", authorization)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The vehicle's first staged action (over the HTTP vehicle API), once
/// staging has it.
pub async fn staged_action(http: &str, vin: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let doc = get_json(
            &format!("{http}/v1/vehicles/{vin}/actions"),
            &format!("Bearer {token}"),
        )
        .await;
        if let Some(a) = doc["actions"].get(0) {
            return a.clone();
        }
        assert!(Instant::now() < deadline, "nothing staged for {vin}: {doc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
