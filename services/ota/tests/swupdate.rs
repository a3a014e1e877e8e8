//! A real device client: Debian's SWUpdate, whose suricatta mode is the
//! most widely deployed hawkBit DDI client, installs a signed `.swu` that
//! `ota packages add --file` hosts. The test builds the update itself
//! (a CMS-signed sw-description with hardware compatibility, a newc cpio
//! archive with checksums), runs suricatta in dry-run mode against
//! `ota serve` through poll, deploymentBase, download with hash check,
//! install and feedback, then the confirmation SWUpdate sends after the
//! "reboot", and asserts the action succeeded and the inventory moved.
//!
//! `scripts/test.sh` installs `swupdate` and `openssl` when they are
//! missing; without them this test fails, naming what to install.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{create_approve_launch, credential, get_json, http, import, post, Server};
use serde_json::json;
use sha2::{Digest, Sha256};

const VIN: &str = "WVWZZZE1ZMP000777";
const HARDWARE: &str = "board:1.0";

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test runs Debian's {tool}, which is not installed: `apt-get install {tool}` \
         (scripts/test.sh does it)"
    );
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One entry of a cpio archive in the "new ASCII with checksum" format
/// (magic 070702) SWUpdate reads: the checksum is the sum of the bytes.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, data: &[u8]) {
    let check = data.iter().fold(0u32, |s, b| s.wrapping_add(u32::from(*b)));
    let mode = if name == "TRAILER!!!" { 0 } else { 0o100644 };
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        check,
    ];
    out.extend_from_slice(b"070702");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A signed update: sw-description first, its CMS signature second, then
/// the image, as SWUpdate requires.
fn build_swu(dir: &Path, image: &[u8]) -> Vec<u8> {
    run(Command::new("openssl").current_dir(dir).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ota-test-signer",
        "-addext",
        "extendedKeyUsage=emailProtection",
    ]));
    let description = format!(
        r#"software =
{{
    version = "2.3.1";
    description = "ota end-to-end test";
    hardware-compatibility: [ "1.0" ];
    images: (
        {{
            filename = "rootfs.img";
            type = "rawfile";
            path = "{}";
            sha256 = "{}";
        }}
    );
}}
"#,
        dir.join("installed.img").display(),
        hex::encode(Sha256::digest(image))
    );
    std::fs::write(dir.join("sw-description"), &description).unwrap();
    run(Command::new("openssl").current_dir(dir).args([
        "cms",
        "-sign",
        "-in",
        "sw-description",
        "-out",
        "sw-description.sig",
        "-signer",
        "cert.pem",
        "-inkey",
        "key.pem",
        "-outform",
        "DER",
        "-nosmimecap",
        "-binary",
    ]));
    let sig = std::fs::read(dir.join("sw-description.sig")).unwrap();
    let mut swu = Vec::new();
    cpio_entry(&mut swu, 1, "sw-description", description.as_bytes());
    cpio_entry(&mut swu, 2, "sw-description.sig", &sig);
    cpio_entry(&mut swu, 3, "rootfs.img", image);
    cpio_entry(&mut swu, 0, "TRAILER!!!", &[]);
    swu
}

/// suricatta against the server; `confirm` is SWUpdate's `-c 2` after a
/// reboot: it reports the installed action as succeeded.
fn suricatta(dir: &Path, server: &str, token: &str, confirm: bool) -> Child {
    let mut args = format!("-t default -u {server} -i {VIN} -k {token} -p 1");
    if confirm {
        args.push_str(" -c 2");
    }
    Command::new("swupdate")
        .current_dir(dir)
        .args(["-v", "-k", "cert.pem", "-H", HARDWARE, "-n", "-u", &args])
        .stdout(Stdio::from(
            std::fs::File::create(dir.join(if confirm {
                "confirm.log"
            } else {
                "install.log"
            }))
            .unwrap(),
        ))
        .stderr(Stdio::null())
        .spawn()
        .expect("start swupdate")
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn action_state(server: &str, admin: &str, campaign: &str) -> String {
    // The CSV report has a row per vehicle: vin, action_id, state, ...
    let csv = http()
        .get(format!(
            "{server}/api/v1/campaigns/{campaign}/report?format=csv"
        ))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    csv.lines()
        .find(|l| l.starts_with(VIN))
        .and_then(|l| l.split(',').nth(2))
        .unwrap_or("none")
        .to_owned()
}

/// Waits until the action is in one of `states`, failing with SWUpdate's
/// log when it is not within the time.
async fn wait_state(s: &Server, admin: &str, campaign: &str, states: &[&str], log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = action_state(&s.http, admin, campaign).await;
        if states.contains(&state.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the action is {state}, not {states:?}; swupdate said:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn swupdate_installs_a_signed_update_from_ota() {
    need("swupdate");
    need("openssl");
    let s = Server::start(&[("OTA_LOG", "warn")], &[]);
    let admin = s.admin_token();
    let api = |p: &str| format!("{}/api/v1{p}", s.http);
    let dir = tempfile::tempdir().unwrap();
    let image: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let swu = build_swu(dir.path(), &image);
    std::fs::write(dir.path().join("update.swu"), &swu).unwrap();

    // The device, its credential, and the update hosted by ota itself.
    let mut car = common::vehicle(777);
    car["ecus"] = json!({"main": {"hw": "board-1.0", "sw": "2.3.0"}});
    import(&s.http, &admin, &[car]).await;
    let token = credential(&s.http, &admin, VIN).await;
    s.add_hosted_package(
        &admin,
        "rootfs",
        "2.3.1",
        "main",
        &dir.path().join("update.swu"),
    );

    let spec = format!(
        "name: swupdate-e2e\n\
         target: 'vehicle.vin == \"{VIN}\" && version_cmp(vehicle.ecus.main.sw, \"2.3.1\") < 0'\n\
         rules:\n  - install: {{package: rootfs, version: 2.3.1, ecu: main}}\n\
         rollout:\n  waves: [100]\n  advance: auto\n  action_timeout: 10m\n"
    );
    let campaign = create_approve_launch(&s.http, &admin, &spec).await;
    wait_state(&s, &admin, &campaign, &["staged"], Path::new("/dev/null")).await;

    // First boot: suricatta polls, fetches the deployment, downloads and
    // checks the artifact, verifies the signature and "installs" (dry
    // run), then waits for the reboot.
    let install_log = dir.path().join("install.log");
    let first = Kill(suricatta(dir.path(), &s.http, &token, false));
    wait_state(
        &s,
        &admin,
        &campaign,
        &["installing", "installed", "succeeded"],
        &install_log,
    )
    .await;
    // The install is done once SWUpdate says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(&install_log).unwrap_or_default();
        if log.contains("SWUPDATE successful") || log.contains("Installation successful") {
            break;
        }
        assert!(
            !log.contains("FAILURE") && Instant::now() < deadline,
            "swupdate did not install the update:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(first);
    // It checked what it should have: the signature, the hardware, and the
    // artifact it downloaded from our link.
    let log = std::fs::read_to_string(&install_log).unwrap();
    for step in [
        "Verified OK",
        "Hardware compatibility verified",
        "softwaremodules/",
    ] {
        assert!(log.contains(step), "swupdate did not log {step:?}:\n{log}");
    }

    // After the "reboot": suricatta confirms the update it installed.
    let confirm_log = dir.path().join("confirm.log");
    let _second = Kill(suricatta(dir.path(), &s.http, &token, true));
    wait_state(&s, &admin, &campaign, &["succeeded"], &confirm_log).await;

    // Every id SWUpdate used fit its 32-bit integer, or the feedback would
    // have gone to another action. The inventory moved to the package's
    // version, recorded as the install's doing, and the target no longer
    // matches the vehicle.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get_json(
            &api(&format!("/vehicles/{VIN}")),
            &format!("Bearer {admin}"),
        )
        .await;
        if v["ecus"]["main"]["sw"] == "2.3.1" {
            assert_eq!(v["provenance"]["ecus.main.sw"], "install", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "inventory did not move: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let preview = post(
        api("/rules/preview"),
        &admin,
        json!({"expression": format!("vehicle.vin == \"{VIN}\" && version_cmp(vehicle.ecus.main.sw, \"2.3.1\") < 0")}),
    )
    .await;
    assert_eq!(preview["matched"], 0, "{preview}");
}
