//! Staged documents to vehicles: every vehicle named by a `staged` event
//! (or that just came online) gets its current document, retained, on its
//! actions topic, once per etag. Documents are published in a span
//! (`mqtt.publish`) that continues the trace of the event that named the
//! vehicles, and carry that trace as the MQTT 5 user property
//! `traceparent`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ota_bus::{topics, SharedBus, StagedEvent, Subscription};
use ota_common::trace::{self, SpanContext};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::ingest::Ensure;
use crate::topics::{Kind, Topics};
use crate::{stopping, Stopped, GROUP};

/// Most VINs whose etag is remembered before the memory is dropped whole
/// (each is republished once more at worst).
const REMEMBER_MAX: usize = 5_000_000;

pub(crate) struct Publisher {
    client: AsyncClient,
    topics: Topics,
    documents: ota_staging::StagingPeer,
    /// The etag last published per VIN.
    published: HashMap<String, String>,
    /// Bumped by the report consumer whenever it connects to a broker that
    /// kept no session for it: a restarted broker may have lost the retained
    /// documents too, so everything is published again as vehicles return.
    fresh_sessions: Arc<AtomicU64>,
    seen_sessions: u64,
}

impl Publisher {
    pub fn new(
        client: AsyncClient,
        topics: Topics,
        documents: ota_staging::StagingPeer,
        fresh_sessions: Arc<AtomicU64>,
    ) -> Self {
        Self {
            client,
            topics,
            documents,
            published: HashMap::new(),
            seen_sessions: fresh_sessions.load(Ordering::SeqCst),
            fresh_sessions,
        }
    }

    pub async fn run(
        mut self,
        bus: SharedBus,
        consumer: String,
        mut ensure: mpsc::Receiver<Ensure>,
        mut stopped: Stopped,
    ) {
        let mut sub: Option<Box<dyn Subscription>> = None;
        let mut backoff = Duration::from_millis(100);
        while !*stopped.borrow() {
            let sessions = self.fresh_sessions.load(Ordering::SeqCst);
            if sessions != self.seen_sessions {
                self.seen_sessions = sessions;
                self.published.clear();
            }
            while let Ok((vin, cause)) = ensure.try_recv() {
                let vins = [vin];
                self.publish_all(&vins).instrument(span(cause, 1)).await;
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
                let (vins, cause) = match ota_bus::events::decode::<StagedEvent>(&m.payload) {
                    Ok((StagedEvent::Changed { vins, .. }, cause)) => (vins, cause),
                    Err(e) => {
                        tracing::warn!(id = m.id, error = %e, "unreadable staged event, dropped");
                        done.push(m.id);
                        continue;
                    }
                };
                let span = span(cause, vins.len());
                let failed = self.publish_all(&vins).instrument(span).await;
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

    /// Publishes each vehicle's document (see [`Self::publish`]); true when
    /// one failed.
    async fn publish_all(&mut self, vins: &[String]) -> bool {
        let mut failed = false;
        for vin in vins {
            if let Err(e) = self.publish(vin).await {
                tracing::warn!(%vin, error = %e, "publishing a staged document");
                failed = true;
            }
        }
        failed
    }

    /// Publishes the vehicle's current document unless this etag was
    /// already published, with the current trace (if any) as its
    /// `traceparent` user property.
    async fn publish(&mut self, vin: &str) -> Result<(), String> {
        let doc = self
            .documents
            .find(vin)
            .await
            .and_then(|found| found.into_stored(vin))
            .map_err(|e| e.to_string())?;
        if self.published.get(vin) == Some(&doc.etag) {
            return Ok(());
        }
        let topic = self.topics.topic(vin, Kind::Actions);
        match trace::current() {
            Some(traceparent) => {
                let properties = PublishProperties {
                    user_properties: vec![(trace::TRACEPARENT.to_owned(), traceparent)],
                    ..Default::default()
                };
                self.client
                    .publish_with_properties(
                        topic,
                        QoS::AtLeastOnce,
                        true,
                        doc.json.clone(),
                        properties,
                    )
                    .await
            }
            None => {
                self.client
                    .publish(topic, QoS::AtLeastOnce, true, doc.json.clone())
                    .await
            }
        }
        .map_err(|e| e.to_string())?;
        metrics::counter!("ota_mqtt_documents_published_total").increment(1);
        if self.published.len() >= REMEMBER_MAX {
            self.published.clear();
        }
        self.published.insert(vin.to_owned(), doc.etag);
        Ok(())
    }
}

/// A publishing span, a root of its own, continuing the trace of the
/// events (or of the report) that caused it.
fn span(causes: impl IntoIterator<Item = SpanContext>, vehicles: usize) -> tracing::Span {
    let span = tracing::info_span!(parent: None, "mqtt.publish", vehicles);
    trace::follow(&span, causes);
    span
}
