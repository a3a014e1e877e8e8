//! `ota_bus_pending_events{topic,group}`: the events each consumer group of
//! this process has not acknowledged yet (waiting, or taken and not yet
//! done), which is [`Bus::depth`]: the in-process queue's length, or the
//! Redis Streams group's lag plus its pending entries.
//!
//! [`Metered`] wraps a bus and remembers the groups subscribed through it,
//! so the gauge covers exactly the consumers this process runs, whichever
//! role they belong to, without each consumer loop sampling on its own.
//! With Redis, every process of a group reports the same shared number.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::{Bus, BusError, SharedBus, Subscription};

/// How often [`Metered::run`] samples the depths.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

pub struct Metered {
    inner: SharedBus,
    /// (topic, group) pairs subscribed through this bus.
    groups: Mutex<BTreeSet<(String, String)>>,
}

impl Metered {
    pub fn new(inner: SharedBus) -> Arc<Self> {
        Arc::new(Self {
            inner,
            groups: Mutex::default(),
        })
    }

    /// Sets the gauge of every group subscribed so far. A group whose
    /// depth cannot be read keeps its last value.
    pub async fn sample(&self) {
        let groups: Vec<(String, String)> = self
            .groups
            .lock()
            .expect("metered groups")
            .iter()
            .cloned()
            .collect();
        for (topic, group) in groups {
            match self.inner.depth(&topic, &group).await {
                Ok(n) => {
                    metrics::gauge!("ota_bus_pending_events", "topic" => topic, "group" => group)
                        .set(n as f64)
                }
                Err(e) => {
                    tracing::debug!(%topic, %group, error = %e, "cannot read the pending events")
                }
            }
        }
    }

    /// Samples every [`SAMPLE_EVERY`] until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sample().await,
                _ = async { let _ = shutdown.wait_for(|v| *v).await; } => return,
            }
        }
    }
}

#[async_trait::async_trait]
impl Bus for Metered {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn publish(&self, topic: &str, payloads: &[String]) -> Result<(), BusError> {
        self.inner.publish(topic, payloads).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let sub = self.inner.subscribe(topic, group, consumer).await?;
        self.groups
            .lock()
            .expect("metered groups")
            .insert((topic.to_owned(), group.to_owned()));
        Ok(sub)
    }

    async fn depth(&self, topic: &str, group: &str) -> Result<u64, BusError> {
        self.inner.depth(topic, group).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBus;

    #[tokio::test]
    async fn the_gauge_counts_what_each_subscribed_group_has_not_acknowledged() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        let bus = Metered::new(Arc::new(MemoryBus::new()));
        let mut sub = bus.subscribe("staging", "staging", "c1").await.unwrap();
        let events: Vec<String> = (0..3).map(|i| format!("{{\"n\":{i}}}")).collect();
        bus.publish("staging", &events).await.unwrap();
        // Published to a topic nobody here consumes: not this process's.
        bus.publish("installed", &events).await.unwrap();
        bus.sample().await;
        let line =
            |n: u32| format!(r#"ota_bus_pending_events{{topic="staging",group="staging"}} {n}"#);
        let text = handle.render();
        assert!(text.lines().any(|l| l == line(3)), "{text}");
        assert!(!text.contains("installed"), "{text}");

        // Taken but not acknowledged still counts; acknowledged does not.
        let got = sub.next(2, Duration::from_millis(10)).await.unwrap();
        bus.sample().await;
        assert!(handle.render().lines().any(|l| l == line(3)));
        let ids: Vec<String> = got.into_iter().map(|m| m.id).collect();
        sub.ack(&ids).await.unwrap();
        bus.sample().await;
        assert!(handle.render().lines().any(|l| l == line(1)));
    }
}
