//! Load generator for bench/mqtt_reports.sh: vehicles that publish reports
//! over MQTT QoS 1 as fast as their in-flight window allows, counting
//! PUBACKs. Prints one JSON line: acknowledged reports and the rate.
//!
//!   report_load --url mqtt://127.0.0.1:1883 --vehicles 100 --seconds 20 \
//!       [--kind inventory|status]  (status: each vehicle first reads its
//!                                   action from its retained document)
//!       [--credentials FILE]   (lines "VIN TOKEN"; without it, VINs
//!                               WVWZZZE1Z00000000.. connect anonymously)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

struct Args {
    host: String,
    port: u16,
    vehicles: usize,
    seconds: u64,
    inflight: u16,
    credentials: Option<String>,
    status: bool,
}

fn args() -> Args {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 1883,
        vehicles: 100,
        seconds: 20,
        inflight: 10,
        credentials: None,
        status: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => {
                let rest = value
                    .strip_prefix("mqtt://")
                    .unwrap_or_else(|| panic!("--url {value:?} must start with mqtt://"));
                let (h, p) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
                a.host = h.to_owned();
                a.port = p
                    .parse()
                    .unwrap_or_else(|_| panic!("bad port in {value:?}"));
            }
            "--vehicles" => a.vehicles = value.parse().expect("--vehicles N"),
            "--seconds" => a.seconds = value.parse().expect("--seconds N"),
            "--inflight" => a.inflight = value.parse().expect("--inflight N"),
            "--credentials" => a.credentials = Some(value),
            "--kind" => {
                a.status = match value.as_str() {
                    "status" => true,
                    "inventory" => false,
                    other => panic!("--kind {other}: inventory or status"),
                }
            }
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

#[tokio::main]
async fn main() {
    let a = args();
    let fleet: Vec<(String, Option<String>)> = match &a.credentials {
        Some(file) => std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {file}: {e}"))
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(v, t)| (v.to_owned(), Some(t.trim().to_owned())))
            .take(a.vehicles)
            .collect(),
        None => (0..a.vehicles)
            .map(|i| (format!("WVWZZZE1Z{i:08}"), None))
            .collect(),
    };
    let acked = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_secs(2);
    let stop = start + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for (vin, token) in fleet {
        let (acked, connected) = (acked.clone(), connected.clone());
        let mut o = MqttOptions::new(&vin, &a.host, a.port);
        if let Some(t) = &token {
            o.set_credentials(&vin, t);
        }
        o.set_keep_alive(Duration::from_secs(30))
            .set_inflight(a.inflight);
        let (client, mut events) = AsyncClient::new(o, a.inflight as usize);
        let status = a.status;
        tasks.push(tokio::spawn(async move {
            // A status report needs the vehicle's action: the first one of
            // its retained document.
            let (action_tx, action_rx) = tokio::sync::oneshot::channel::<String>();
            let mut action_tx = Some(action_tx);
            if status {
                client
                    .subscribe(format!("ota/v1/vehicles/{vin}/actions"), QoS::AtLeastOnce)
                    .await
                    .expect("subscribe");
            } else {
                let _ = action_tx.take().map(|tx| tx.send(String::new()));
            }
            let topic = if status {
                format!("ota/v1/vehicles/{vin}/status")
            } else {
                format!("ota/v1/vehicles/{vin}/inventory")
            };
            let publisher = {
                let client = client.clone();
                tokio::spawn(async move {
                    let Ok(action) = action_rx.await else { return };
                    tokio::time::sleep_until(start.into()).await;
                    let mut n = 0u64;
                    while Instant::now() < stop {
                        n += 1;
                        let body = if status {
                            format!(
                                r#"{{"action_id":"{action}","state":"downloading","progress":{},"seq":{n}}}"#,
                                n % 100
                            )
                        } else {
                            format!(r#"{{"attributes":{{"bench_seq":"{n}"}}}}"#)
                        };
                        if client
                            .publish(&topic, QoS::AtLeastOnce, false, body)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                })
            };
            while Instant::now() < stop + Duration::from_secs(1) {
                let next = tokio::time::timeout(Duration::from_millis(500), events.poll()).await;
                match next {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        connected.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        let doc: serde_json::Value =
                            serde_json::from_slice(&p.payload).unwrap_or_default();
                        if let Some(id) = doc["actions"][0]["action_id"].as_str() {
                            if let Some(tx) = action_tx.take() {
                                let _ = tx.send(id.to_owned());
                            }
                        }
                    }
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                        if Instant::now() >= start && Instant::now() < stop {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(e)) => {
                        eprintln!("{vin}: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            publisher.abort();
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = acked.load(Ordering::Relaxed);
    println!(
        r#"{{"vehicles":{},"connected":{},"seconds":{},"acked":{},"per_second":{:.0}}}"#,
        a.vehicles,
        connected.load(Ordering::Relaxed),
        a.seconds,
        n,
        n as f64 / a.seconds as f64
    );
}
