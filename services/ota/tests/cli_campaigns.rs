//! The package, campaign and audit commands of the `ota` CLI against a real
//! `ota serve` process (embedded SQLite, in a temporary directory).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const OTA: &str = env!("CARGO_BIN_EXE_ota");

struct Server {
    child: Child,
    http: String,
    data_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let port = || {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (hp, gp, mp) = (port(), port(), port());
        let data_dir = tmp.path().join("ota-data");
        let child = Command::new(OTA)
            .arg("serve")
            .current_dir(tmp.path())
            .env("OTA_HTTP_ADDR", format!("127.0.0.1:{hp}"))
            .env("OTA_GRPC_ADDR", format!("127.0.0.1:{gp}"))
            .env("OTA_MQTT_LISTEN", format!("127.0.0.1:{mp}"))
            .env("OTA_DATA_DIR", &data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ota serve");
        let mut s = Server {
            child,
            http: format!("http://127.0.0.1:{hp}"),
            data_dir,
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthz_ok(&format!("127.0.0.1:{hp}")) {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("ota serve exited with {status} before it was healthy");
            }
            assert!(
                Instant::now() < deadline,
                "ota serve was not healthy within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn cli(&self, token: &str, args: &[&str]) -> Output {
        Command::new(OTA)
            .args(args)
            .env("OTA_SERVER", &self.http)
            .env("OTA_TOKEN", token)
            .output()
            .expect("run ota cli")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn healthz_ok(addr: &str) -> bool {
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

#[test]
fn cli_packages_campaign_files_and_audit() {
    let s = Server::start();
    let token = s.admin_token();
    let dir = tempfile::tempdir().unwrap();
    let sha = "ab".repeat(32);
    let out = s.cli(
        &token,
        &[
            "packages",
            "add",
            "--name",
            "bms-fw",
            "--version",
            "2.3.1",
            "--ecu",
            "BMS",
            "--hw",
            "H1",
            "--artifact",
            "https://cdn.example.com/bms.bin",
            "--sha256",
            &sha,
            "--size",
            "1024",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("added package bms-fw@2.3.1"));
    let out = s.cli(
        &token,
        &["packages", "get", "bms-fw@2.3.1", "--output", "json"],
    );
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["artifacts"][0]["sha256"], sha.as_str());
    let out = s.cli(
        &token,
        &["packages", "add", "--name", "x", "--version", "1"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a ecu"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: ok\ntarget: ''\nrules:\n  - install: {package: p, version: '1'}\nrollout:\n  waves: [10, 50, 40, 100]\n",
    )
    .unwrap();
    let out = s.cli(
        &token,
        &["campaigns", "create", "-f", bad.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for line in [
        "target: must not be empty",
        "rules[0].install.ecu: missing required field",
        "rollout.waves[2]: 40 is not above the previous wave 50",
    ] {
        assert!(stderr.contains(line), "{line:?} not in {stderr}");
    }
    // A structural problem does not hide a CEL one; both are placed in the file.
    let mixed = dir.path().join("mixed.yaml");
    std::fs::write(
        &mixed,
        "name: mixed\ntarget: 'vehicle.region =='\nrules:\n  - install: {package: bms-fw, version: '2.3.1', ecu: BMS}\nrollout:\n  waves: [50, 10]\n",
    )
    .unwrap();
    let out = s.cli(
        &token,
        &["campaigns", "create", "-f", mixed.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "target: syntax error: unexpected end of expression (line 2, column 27)",
            "rollout.waves[1]: 10 is not above the previous wave 50 (line 6, column 15)",
            &format!("{}: 2 problems", mixed.display()),
        ],
        "{stderr}"
    );

    let good = dir.path().join("campaign.yaml");
    std::fs::write(
        &good,
        "name: bms-eu\ntarget: 'vehicle.region == \"EU\"'\nrules:\n  - install: {package: bms-fw, version: '2.3.1', ecu: BMS}\n",
    )
    .unwrap();
    let out = s.cli(
        &token,
        &["campaigns", "validate", "-f", good.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.cli(
        &token,
        &[
            "campaigns",
            "create",
            "-f",
            good.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["state"], "draft");
    let id = c["id"].as_str().unwrap();
    // The creator cannot approve their own campaign.
    let out = s.cli(&token, &["campaigns", "approve", id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(HTTP 403)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.cli(&token, &["campaigns", "list", "--state", "draft"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("bms-eu"));

    let out = s.cli(&token, &["audit", "--entity", id, "--output", "json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["entries"][0]["action"], "create");
    assert_eq!(page["entries"][0]["actor"], "admin");

    // Another token of the creator, whatever its name, is still the creator.
    let out = s.cli(
        &token,
        &["tokens", "create", "--role", "approver", "--name", "ann"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = s.cli(&token, &["campaigns", "approve", id, "--token", &second]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin created campaign") && stderr.contains("(HTTP 403)"),
        "{stderr}"
    );
    // The quickstart's second person, word for word.
    let out = s.cli(
        &token,
        &[
            "tokens",
            "create",
            "--role",
            "approver",
            "--principal",
            "ann",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("created person \"ann\""), "{stderr}");
    let ann = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = s.cli(&token, &["campaigns", "approve", id, "--token", &ann]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.cli(&token, &["audit", "--entity", id, "--output", "json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["entries"][0]["action"], "approve");
    assert_eq!(page["entries"][0]["actor"], "ann");
}
