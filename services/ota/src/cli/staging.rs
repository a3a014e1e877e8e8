use comfy_table::Table;
use ota_rest::staging::{Restaged, StagingStats};
use reqwest::Method;

use crate::client::{print_json, Connection, Output};

#[derive(clap::Subcommand, Debug)]
pub enum StagingCmd {
    /// Staged vehicles, staging lag, queue depth and the last reconcile.
    Stats {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Recompute the staged documents of a campaign's vehicles, or of
    /// listed vehicles.
    Restage {
        #[arg(long, conflicts_with = "vin", required_unless_present = "vin")]
        campaign: Option<String>,
        /// May be given several times.
        #[arg(long)]
        vin: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

pub async fn run(cmd: StagingCmd, conn: &Connection) -> anyhow::Result<()> {
    let api = conn.api()?;
    match cmd {
        StagingCmd::Stats { output } => {
            let s: StagingStats = api
                .send(api.request(Method::GET, "/api/v1/staging/stats"))
                .await?;
            match output {
                Output::Json => print_json(&s)?,
                Output::Table => {
                    let mut t = Table::new();
                    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
                    t.add_row(["store", &s.store]);
                    t.add_row(["staged vehicles", &s.staged_vehicles.to_string()]);
                    t.add_row([
                        "lag p50 / p99",
                        &format!("{:.3} s / {:.3} s", s.lag_p50_seconds, s.lag_p99_seconds),
                    ]);
                    t.add_row(["queue depth", &s.queue_depth.to_string()]);
                    t.add_row(["events processed", &s.events_processed.to_string()]);
                    t.add_row([
                        "last reconcile",
                        &match s.last_reconcile {
                            Some(at) => format!(
                                "{} ({} repaired)",
                                at.format("%Y-%m-%d %H:%M:%S"),
                                s.last_reconcile_repaired
                            ),
                            None => "never".into(),
                        },
                    ]);
                    println!("{t}");
                }
            }
        }
        StagingCmd::Restage {
            campaign,
            vin,
            output,
        } => {
            let body = match campaign {
                Some(id) => serde_json::json!({ "campaign_id": id }),
                None => serde_json::json!({ "vins": vin }),
            };
            let r: Restaged = api
                .send(
                    api.request(Method::POST, "/api/v1/staging:restage")
                        .json(&body),
                )
                .await?;
            match output {
                Output::Json => print_json(&r)?,
                Output::Table => println!(
                    "recomputed {} vehicles' documents, {} changed",
                    r.vehicles, r.changed
                ),
            }
        }
    }
    Ok(())
}
