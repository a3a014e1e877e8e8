//! Staged documents to vehicles: every vehicle named by a `staged` event
//! (or that just came online) gets its current document, retained, on its
//! actions topic, once per etag.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use ota_bus::{topics, SharedBus, StagedEvent, Subscription};

use ota_proto::v1 as pb;
use ota_staging::document::Document;
use ota_staging::StoredDoc;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

use crate::topics::{Kind, Topics};
use crate::{stopping, Documents, Stopped, GROUP};

/// Most VINs whose etag is remembered before the memory is dropped whole
/// (each is republished once more at worst).
const REMEMBER_MAX: usize = 5_000_000;

pub(crate) struct Publisher {
    client: AsyncClient,
    topics: Topics,
    documents: Documents,
    /// The etag last published per VIN.
    published: HashMap<String, String>,
}

impl Publisher {
    pub fn new(client: AsyncClient, topics: Topics, documents: Documents) -> Self {
        Self {
            client,
            topics,
            documents,
            published: HashMap::new(),
        }
    }

    pub async fn run(
        mut self,
        bus: SharedBus,
        consumer: String,
        mut ensure: mpsc::Receiver<String>,
        mut stopped: Stopped,
    ) {
        let mut sub: Option<Box<dyn Subscription>> = None;
        let mut backoff = Duration::from_millis(100);
        while !*stopped.borrow() {
            while let Ok(vin) = ensure.try_recv() {
                if let Err(e) = self.publish(&vin).await {
                    tracing::warn!(%vin, error = %e, "publishing a staged document");
                }
            }
            let s = match &mut sub {
                Some(s) => s,
                None => match bus.subscribe(topics::STAGED, GROUP, &consumer).await {
                    Ok(s) => sub.insert(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "MQTT adapter cannot subscribe to the bus");
                        tokio::select! {
                            _ = stopping(&mut stopped) => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            // Short waits so VINs coming online are served promptly.
            let msgs = match s.next(100, Duration::from_millis(200)).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "reading staged events");
                    sub = None;
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let mut done = Vec::with_capacity(msgs.len());
            for m in msgs {
                let vins = match serde_json::from_str::<StagedEvent>(&m.payload) {
                    Ok(StagedEvent::Changed { vins, .. }) => vins,
                    Err(e) => {
                        tracing::warn!(id = m.id, error = %e, "unreadable staged event, dropped");
                        done.push(m.id);
                        continue;
                    }
                };
                let mut failed = false;
                for vin in &vins {
                    if let Err(e) = self.publish(vin).await {
                        tracing::warn!(%vin, error = %e, "publishing a staged document");
                        failed = true;
                    }
                }
                // Left unacknowledged, the event comes back after the claim
                // timeout and the VINs are tried again.
                if !failed {
                    done.push(m.id);
                }
            }
            if !done.is_empty() {
                if let Err(e) = s.ack(&done).await {
                    tracing::warn!(error = %e, "acknowledging staged events");
                }
            }
        }
    }

    /// Publishes the vehicle's current document unless this etag was
    /// already published.
    async fn publish(&mut self, vin: &str) -> Result<(), String> {
        let doc = match &self.documents {
            Documents::Local(s) => s.lookup(vin).await.map_err(|e| e.to_string())?,
            Documents::Remote(c) => {
                let d = c
                    .clone()
                    .get_actions(pb::GetActionsRequest {
                        vin: vin.to_owned(),
                    })
                    .await
                    .map_err(|e| e.message().to_owned())?
                    .into_inner();
                from_proto(d)?
            }
        };
        if self.published.get(vin) == Some(&doc.etag) {
            return Ok(());
        }
        self.client
            .publish(
                self.topics.topic(vin, Kind::Actions),
                QoS::AtLeastOnce,
                true,
                doc.json.to_vec(),
            )
            .await
            .map_err(|e| e.to_string())?;
        metrics::counter!("ota_mqtt_documents_published_total").increment(1);
        if self.published.len() >= REMEMBER_MAX {
            self.published.clear();
        }
        self.published.insert(vin.to_owned(), doc.etag);
        Ok(())
    }
}

/// A remote GetActions answer back in the stored JSON shape (the same field
/// order and deadline format as staging writes).
fn from_proto(d: pb::StagedDocument) -> Result<StoredDoc, String> {
    let doc = Document::from_proto(d);
    let json = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
    Ok(StoredDoc {
        etag: doc.etag,
        json: Bytes::from(json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_documents_keep_the_stored_bytes() {
        let action = pb::OpenAction {
            action_id: "a1".into(),
            campaign_id: "c1".into(),
            ecu: "BMS".into(),
            priority: 1,
            package: Some(pb::StagedPackage {
                name: "bms-fw".into(),
                version: "2.3.1".into(),
                artifacts: vec![pb::Artifact {
                    url: "https://cdn.example/x.bin".into(),
                    sha256: "ab".repeat(32),
                    size: 7,
                }],
            }),
            deadline: Some(prost_types::Timestamp {
                seconds: 1_796_083_200,
                nanos: 0,
            }),
            state: "pending".into(),
        };
        let vin = "WVWZZZE1ZMP000001";
        let stored = ota_staging::document::build(vin, &[action], 300)
            .unwrap()
            .unwrap();
        let back = from_proto(stored.to_proto(vin).unwrap()).unwrap();
        assert_eq!(back, stored);
        let empty = ota_staging::document::empty(vin, 300);
        assert_eq!(from_proto(empty.to_proto(vin).unwrap()).unwrap(), empty);
    }
}
