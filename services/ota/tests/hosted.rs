//! Hosted artifacts are kept by reference: a package added while the
//! server had one public URL is still hosted, with its hashes, after the
//! server restarts under another one.

mod common;

use common::{
    create_approve_launch, credential, free_port, get_json, http, import, staged_action, vehicle,
    Server,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

async fn get(url: &str, auth: &str) -> reqwest::Response {
    http()
        .get(url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn hosted_artifacts_survive_a_new_public_url() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ota-data");
    let start = |public: &str, port: u16| {
        Server::start_in(
            tmp.path(),
            data.clone(),
            &[
                ("OTA_LOG", "warn"),
                ("OTA_HTTP_ADDR", &format!("127.0.0.1:{port}")),
                ("OTA_PUBLIC_URL", public),
            ],
            &[],
            None,
        )
    };
    let first_port = free_port();
    let s = start("https://old.example:8443/", first_port);
    let admin = s.admin_token();
    let firmware: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&firmware));
    let file = tmp.path().join("bms.bin");
    std::fs::write(&file, &firmware).unwrap();
    s.add_hosted_package(&admin, "bms-fw", "2.3.1", "BMS", &file);
    let car = vehicle(0);
    let vin = car["vin"].as_str().unwrap().to_owned();
    import(&s.http, &admin, &[car]).await;
    let token = credential(&s.http, &admin, &vin).await;
    create_approve_launch(
        &s.http,
        &admin,
        "name: hosted\ntarget: 'vehicle.region == \"EU\"'\n\
         rules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\n\
         rollout:\n  waves: [100]\n  advance: auto\n",
    )
    .await;
    let action = staged_action(&s.http, &vin, &token).await;
    let url = action["package"]["artifacts"][0]["url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("https://old.example:8443/artifacts/{sha}/bms.bin")
    );
    drop(s);

    // The same data under the address the server really has now.
    let port = free_port();
    let now = format!("http://127.0.0.1:{port}");
    let s = start(&now, port);
    let action = staged_action(&s.http, &vin, &token).await;
    let art = &action["package"]["artifacts"][0];
    let url = art["url"].as_str().unwrap();
    assert_eq!(url, format!("{now}/artifacts/{sha}/bms.bin"));
    assert_eq!(art["sha256"], sha.as_str());
    let res = get(url, &format!("Bearer {token}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), firmware.as_slice());

    // DDI still knows it as hosted: its SHA-1 and MD5 are given.
    let poll = get_json(
        &format!("{now}/default/controller/v1/{vin}"),
        &format!("TargetToken {token}"),
    )
    .await;
    let href = poll["_links"]["deploymentBase"]["href"].as_str().unwrap();
    let d = get_json(href, &format!("TargetToken {token}")).await;
    let a = &d["deployment"]["chunks"][0]["artifacts"][0];
    assert_eq!(a["hashes"]["sha1"].as_str().unwrap().len(), 40, "{d}");
    assert!(a["_links"]["download-http"]["href"]
        .as_str()
        .unwrap()
        .starts_with(&now));

    // People see where it is fetched from today.
    let p: Value = get_json(
        &format!("{now}/api/v1/packages/bms-fw@2.3.1"),
        &format!("Bearer {admin}"),
    )
    .await;
    assert_eq!(
        p["artifacts"][0]["url"],
        format!("{now}/artifacts/{sha}/bms.bin").as_str()
    );
}
