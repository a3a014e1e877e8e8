//! Telling the campaign manager which actions a vehicle was handed, off the
//! request path: the poll is answered first, and a campaign manager that is
//! slow or down must not fail or slow it.

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use ota_common::peer::Peer;
use ota_proto::v1 as pb;
use pb::campaign_manager_client::CampaignManagerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Deliveries waiting for the campaign manager; beyond this they are
/// dropped (counted). The next 200 for the vehicle reports them again, and a
/// status report moves the action on regardless.
const QUEUE: usize = 10_000;
/// MarkDelivered calls in flight at once.
const CONCURRENCY: usize = 16;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

type Delivery = (String, Vec<String>);

pub(crate) struct Delivered {
    client: CampaignManagerClient<Peer>,
    /// Started on first use, from a handler, so building the state does not
    /// need a runtime.
    tx: OnceLock<mpsc::Sender<Delivery>>,
}

impl Delivered {
    pub fn new(client: CampaignManagerClient<Peer>) -> Self {
        Self {
            client,
            tx: OnceLock::new(),
        }
    }

    pub fn send(&self, vin: &str, action_ids: Vec<String>) {
        if action_ids.is_empty() {
            return;
        }
        let tx = self.tx.get_or_init(|| start(self.client.clone()));
        if tx.try_send((vin.to_owned(), action_ids)).is_err() {
            metrics::counter!("ota_mark_delivered_total", "outcome" => "dropped").increment(1);
            tracing::warn!(%vin, "delivery queue full, not marking the actions delivered");
        }
    }
}

fn start(client: CampaignManagerClient<Peer>) -> mpsc::Sender<Delivery> {
    let (tx, rx) = mpsc::channel::<Delivery>(QUEUE);
    tokio::spawn(
        ReceiverStream::new(rx).for_each_concurrent(CONCURRENCY, move |(vin, action_ids)| {
            let mut client = client.clone();
            async move {
                let call = client.mark_delivered(pb::MarkDeliveredRequest {
                    vin: vin.clone(),
                    action_ids,
                });
                let outcome = match tokio::time::timeout(CALL_TIMEOUT, call).await {
                    Ok(Ok(_)) => "ok",
                    Ok(Err(status)) => {
                        tracing::warn!(%vin, error = %status.message(), "marking actions delivered failed");
                        "error"
                    }
                    Err(_) => {
                        tracing::warn!(%vin, "marking actions delivered timed out");
                        "error"
                    }
                };
                metrics::counter!("ota_mark_delivered_total", "outcome" => outcome).increment(1);
            }
        }),
    );
    tx
}
