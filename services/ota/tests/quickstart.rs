//! The README's quickstart, word for word: the shell block under
//! "## Quickstart" runs in a fresh directory holding the repository's
//! `examples/`, with this build's `ota` on the PATH in place of the first
//! line's `cargo build --release`, and must end with the campaign
//! completed. Only the addresses are moved (through the environment, which
//! the commands leave alone) so the test needs no free well-known port.

mod common;

use std::path::Path;
use std::process::Command;

use common::free_port;

const README: &str = include_str!("../../../README.md");
const BUILD_LINE: &str = "cargo build --release -p ota && export PATH=$PWD/target/release:$PATH";

/// The lines of the first `sh` block after the "## Quickstart" heading.
fn quickstart() -> Vec<&'static str> {
    let section = README
        .split("\n## Quickstart\n")
        .nth(1)
        .expect("the README has a Quickstart section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the Quickstart section has a sh block");
    block.lines().collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn the_readme_quickstart_completes_a_campaign() {
    let lines = quickstart();
    assert_eq!(
        lines.first().copied(),
        Some(BUILD_LINE),
        "the quickstart starts by building ota: keep this test's stand-in in step"
    );
    let bin_dir = Path::new(common::OTA).parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    copy_dir(&repo.join("examples"), &tmp.path().join("examples"));

    let mut script =
        String::from("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
    script.push_str(&format!("export PATH={}:$PATH\n", bin_dir.display()));
    for line in &lines[1..] {
        script.push_str(line);
        script.push('\n');
    }
    let (http, grpc, mqtt) = (free_port(), free_port(), free_port());
    // Well inside nextest's limit (4 min), so a hang fails with the
    // script's output rather than being killed silently.
    let out = Command::new("timeout")
        .arg("150")
        .args(["bash", "-c", &script])
        .current_dir(tmp.path())
        .env("OTA_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("OTA_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("OTA_MQTT_LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("OTA_SERVER", format!("http://127.0.0.1:{http}"))
        .env("OTA_LOG", "warn")
        .env_remove("OTA_TOKEN")
        .env_remove("OTA_DATA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the quickstart failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("is completed"),
        "the campaign completed:\n{stdout}\n{stderr}"
    );
    // The report's counts: every vehicle finished, almost all succeeded.
    assert!(stdout.contains("succeeded"), "{stdout}");
}
