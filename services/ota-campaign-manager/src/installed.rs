//! Finished installs reach the inventory: when a vehicle reports an install
//! action succeeded, on any protocol, its ECU's software version becomes the
//! package's version (source `install`). Without this a device that cannot
//! report its inventory (a hawkBit DDI client) would keep its old version,
//! the campaign's target would keep matching it, and an identical campaign
//! would offer the update again.
//!
//! The status write puts an [`InstalledEvent`] in the outbox in the same
//! transaction, so an acknowledged success is recorded even if the process
//! dies right after; this consumer writes the versions through the vehicle
//! store (in this process or remote) and acknowledges only once they are
//! written. Writing the same version twice changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use ota_bus::{topics, InstalledEvent, SharedBus};
use ota_common::peer::Peer;
use ota_common::vehicle::INSTALL_SOURCE;
use ota_proto::v1 as pb;
use pb::vehicle_store_client::VehicleStoreClient;
use tracing::Instrument;

use crate::manager::CampaignManager;
use crate::CampaignError;

impl CampaignManager {
    pub(crate) async fn consume_installed_events(
        &self,
        bus: SharedBus,
        inventory: VehicleStoreClient<Peer>,
    ) {
        let consumer = format!("cm-{}", uuid::Uuid::new_v4().simple());
        let mut sub = loop {
            match bus
                .subscribe(topics::INSTALLED, "campaign-manager", &consumer)
                .await
            {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to installed events; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        loop {
            let messages = match sub.next(200, Duration::from_secs(1)).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "reading installed events failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            let mut installs = Vec::new();
            let mut traces = Vec::new();
            for m in &messages {
                match ota_bus::events::decode::<InstalledEvent>(&m.payload) {
                    Ok((InstalledEvent::Succeeded { installs: i, .. }, trace)) => {
                        installs.extend(i);
                        traces.extend(trace);
                    }
                    Err(e) => {
                        tracing::warn!(id = %m.id, error = %e, "dropping an unreadable installed event")
                    }
                }
            }
            // Continues the trace of the report that finished the install.
            let span = tracing::info_span!("installs.record", installs = installs.len());
            ota_common::trace::follow(&span, traces);
            match self
                .record_installs(&inventory, &installs)
                .instrument(span)
                .await
            {
                Ok(n) => {
                    metrics::counter!("ota_installs_recorded_total").increment(n as u64);
                    let ids: Vec<String> = messages.into_iter().map(|m| m.id).collect();
                    if let Err(e) = sub.ack(&ids).await {
                        tracing::warn!(error = %e, "acknowledging installed events failed");
                    }
                }
                // Unacknowledged: the bus hands the events out again.
                Err(e) => {
                    tracing::warn!(error = %e, installs = installs.len(), "recording finished installs in the inventory failed; will retry");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Writes each vehicle's new ECU versions, one upsert per vehicle.
    async fn record_installs(
        &self,
        inventory: &VehicleStoreClient<Peer>,
        installs: &[ota_bus::Install],
    ) -> Result<usize, CampaignError> {
        let mut per_vin: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
        for i in installs {
            let package = match self.package(&i.package_id).await {
                Ok(p) => p,
                // A package is never deleted while an action uses it; one
                // that is gone leaves nothing to record.
                Err(CampaignError::NotFound { .. }) => {
                    tracing::warn!(package = %i.package_id, vin = %i.vin, "the installed package is gone; not recorded");
                    continue;
                }
                Err(e) => return Err(e),
            };
            per_vin
                .entry(&i.vin)
                .or_default()
                .insert(i.ecu.clone(), package.version);
        }
        let n = per_vin.len();
        for (vin, ecus) in per_vin {
            let vehicle = pb::Vehicle {
                vin: vin.to_owned(),
                ecus: ecus
                    .into_iter()
                    .map(|(ecu, sw)| {
                        (
                            ecu,
                            pb::Ecu {
                                sw,
                                ..Default::default()
                            },
                        )
                    })
                    .collect(),
                ..Default::default()
            };
            let r = inventory
                .clone()
                .upsert(pb::UpsertVehicleRequest {
                    source: INSTALL_SOURCE.to_owned(),
                    vehicle: Some(vehicle),
                })
                .await;
            match r {
                Ok(_) => {}
                // A write the vehicle's bounds refuse will never succeed:
                // say so and go on rather than retry it for ever.
                Err(s) if s.code() == tonic::Code::InvalidArgument => {
                    tracing::warn!(vin, error = %s.message(), "a finished install could not be recorded in the inventory");
                }
                Err(s) => return Err(CampaignError::upstream("vehicle store")(s)),
            }
        }
        Ok(n)
    }
}
