use std::path::PathBuf;

use anyhow::{bail, Context};
use comfy_table::Table;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use ota_auth::vehicles::VehicleCredential;
use ota_common::vehicle::Vehicle;
use ota_rest::model::ImportSummary;
use ota_vehicle_store::parse::Format;
use reqwest::Method;
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use crate::client::{print_json, Connection, Output};

#[derive(clap::Subcommand, Debug)]
pub enum VehiclesCmd {
    /// Import vehicles from an NDJSON or CSV file.
    Import {
        file: PathBuf,
        /// Who the data comes from (manufacturing, dealer, ...); decides
        /// precedence per field.
        #[arg(long, default_value = "api")]
        source: String,
        /// File format; guessed from the extension when left out.
        #[arg(long, value_parser = ["csv", "ndjson"])]
        format: Option<String>,
        /// Import nothing if any line is rejected.
        #[arg(long)]
        strict: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one vehicle.
    Get {
        vin: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List vehicles, optionally filtered: --filter model=ID.4 --filter region=EU
    List {
        /// FIELD=VALUE on model, model_year, platform, gateway, protocol,
        /// region, country or tag; repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        filter: Vec<String>,
        /// Vehicles per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this cursor (from a previous page).
        #[arg(long)]
        cursor: Option<String>,
        /// Follow cursors to the end instead of printing one page.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Issue a vehicle's credential (printed once), or --list or --revoke them.
    Credentials {
        vin: String,
        /// Revoke the vehicle's earlier credentials when issuing this one.
        #[arg(long, conflicts_with_all = ["list", "revoke"])]
        rotate: bool,
        /// List the credentials (never their secrets) instead of issuing one.
        #[arg(long, conflicts_with = "revoke")]
        list: bool,
        /// Revoke every credential of the vehicle, or the one --id names.
        #[arg(long)]
        revoke: bool,
        /// The credential to revoke.
        #[arg(long, requires = "revoke")]
        id: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

const FILTER_FIELDS: [&str; 8] = [
    "model",
    "model_year",
    "platform",
    "gateway",
    "protocol",
    "region",
    "country",
    "tag",
];

/// Exit code of an import that finished but rejected some lines.
pub const EXIT_PARTIAL: i32 = 3;

pub async fn run(cmd: VehiclesCmd, conn: &Connection) -> anyhow::Result<i32> {
    let api = conn.api()?;
    match cmd {
        VehiclesCmd::Import {
            file,
            source,
            format,
            strict,
            output,
        } => {
            let format = match format {
                Some(f) => f.parse::<Format>().map_err(anyhow::Error::msg)?,
                None => Format::detect(&file.to_string_lossy()).with_context(|| {
                    format!("cannot tell the format of {} from its name: pass --format csv or --format ndjson", file.display())
                })?,
            };
            let f = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("cannot open {}", file.display()))?;
            let size = f.metadata().await?.len();
            let bar = if output == Output::Table {
                ProgressBar::new(size)
            } else {
                ProgressBar::hidden()
            };
            bar.set_style(
                ProgressStyle::with_template("{spinner} uploading {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}, eta {eta}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            let counted = {
                let bar = bar.clone();
                ReaderStream::with_capacity(f, 256 * 1024).inspect(move |chunk| {
                    if let Ok(c) = chunk {
                        bar.inc(c.len() as u64);
                    }
                })
            };
            let fmt = match format {
                Format::Csv => "csv",
                Format::Ndjson => "ndjson",
            };
            let req = api
                .request(Method::POST, "/api/v1/vehicles:import")
                .query(&[
                    ("source", source.as_str()),
                    ("format", fmt),
                    ("strict", if strict { "true" } else { "false" }),
                ])
                .header(reqwest::header::CONTENT_LENGTH, size)
                .body(reqwest::Body::wrap_stream(counted));
            let res = req
                .send()
                .await
                .with_context(|| format!("cannot reach the server at {}", api.base))?;
            bar.finish_and_clear();
            let status = res.status();
            let body = res.text().await?;
            let summary: ImportSummary = match serde_json::from_str(&body) {
                Ok(s) if status.is_success() || status.as_u16() == 422 => s,
                _ => {
                    let msg = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                        .unwrap_or(body);
                    bail!("import failed: {msg} (HTTP {})", status.as_u16());
                }
            };
            match output {
                Output::Json => print_json(&summary)?,
                Output::Table => {
                    for e in &summary.errors {
                        let vin = if e.vin.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", e.vin)
                        };
                        eprintln!("line {}{vin}: {}", e.line, e.reason);
                    }
                    if summary.rejected as usize > summary.errors.len() {
                        eprintln!(
                            "... and {} more rejected lines",
                            summary.rejected as usize - summary.errors.len()
                        );
                    }
                    if summary.aborted {
                        println!(
                            "strict import rejected: {} bad lines, nothing imported",
                            summary.rejected
                        );
                    } else {
                        println!(
                            "imported {}, updated {}, unchanged {}, rejected {}",
                            summary.imported, summary.updated, summary.unchanged, summary.rejected
                        );
                    }
                }
            }
            Ok(if summary.aborted || summary.rejected > 0 {
                EXIT_PARTIAL
            } else {
                0
            })
        }
        VehiclesCmd::Get { vin, output } => {
            let v: Vehicle = api
                .send(api.request(Method::GET, &format!("/api/v1/vehicles/{vin}")))
                .await?;
            match output {
                Output::Json => print_json(&v)?,
                Output::Table => print_vehicle(&v),
            }
            Ok(0)
        }
        VehiclesCmd::List {
            filter,
            limit,
            cursor,
            all,
            output,
        } => {
            let mut query: Vec<(String, String)> = Vec::new();
            for f in filter {
                let (k, v) = f
                    .split_once('=')
                    .with_context(|| format!("filter {f:?} is not FIELD=VALUE"))?;
                if !FILTER_FIELDS.contains(&k) {
                    bail!(
                        "unknown filter field {k:?}: expected one of {}",
                        FILTER_FIELDS.join(", ")
                    );
                }
                query.push((k.to_owned(), v.to_owned()));
            }
            query.push(("limit".into(), limit.to_string()));
            let mut cursor = cursor;
            let mut vehicles = Vec::new();
            let mut next;
            loop {
                let mut q = query.clone();
                if let Some(c) = &cursor {
                    q.push(("cursor".into(), c.clone()));
                }
                let page: ListPage = api
                    .send(api.request(Method::GET, "/api/v1/vehicles").query(&q))
                    .await?;
                vehicles.extend(page.vehicles);
                next = page.next_cursor;
                if !all || next.is_none() {
                    break;
                }
                cursor = next.clone();
            }
            match output {
                Output::Json => {
                    print_json(&serde_json::json!({"vehicles": vehicles, "next_cursor": next}))?
                }
                Output::Table => {
                    let mut t = Table::new();
                    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
                    t.set_header([
                        "vin", "model", "year", "platform", "gateway", "region", "country", "ecus",
                    ]);
                    for v in &vehicles {
                        t.add_row([
                            v.vin.clone(),
                            v.model.clone().unwrap_or_default(),
                            v.model_year.map(|y| y.to_string()).unwrap_or_default(),
                            v.platform.clone().unwrap_or_default(),
                            v.gateway.clone().unwrap_or_default(),
                            v.region.clone().unwrap_or_default(),
                            v.country.clone().unwrap_or_default(),
                            v.ecus.keys().cloned().collect::<Vec<_>>().join(" "),
                        ]);
                    }
                    println!("{t}");
                    match next {
                        Some(c) => println!("{} vehicles; more with --cursor {c}", vehicles.len()),
                        None => println!("{} vehicles", vehicles.len()),
                    }
                }
            }
            Ok(0)
        }
        VehiclesCmd::Credentials {
            vin,
            rotate,
            list,
            revoke,
            id,
            output,
        } => {
            let path = format!("/api/v1/vehicles/{vin}/credentials");
            if list {
                let creds: Vec<VehicleCredential> =
                    api.send(api.request(Method::GET, &path)).await?;
                match output {
                    Output::Json => print_json(&creds)?,
                    Output::Table => {
                        let mut t = Table::new();
                        t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
                        t.set_header(["id", "created", "revoked"]);
                        for c in &creds {
                            t.add_row([
                                c.id.clone(),
                                c.created_at.format("%Y-%m-%d %H:%M").to_string(),
                                c.revoked_at
                                    .map(|r| r.format("%Y-%m-%d %H:%M").to_string())
                                    .unwrap_or_default(),
                            ]);
                        }
                        println!("{t}");
                    }
                }
            } else if revoke {
                let path = match &id {
                    Some(id) => format!("{path}/{id}"),
                    None => path,
                };
                let r: serde_json::Value = api
                    .send(api.request(Method::DELETE, &path))
                    .await
                    .with_context(|| format!("revoking credentials of vehicle {vin}"))?;
                match output {
                    Output::Json => print_json(&r)?,
                    Output::Table => {
                        let n = r["revoked"].as_u64().unwrap_or(0);
                        match id {
                            Some(id) if n == 0 => {
                                println!("credential {id} of {vin} was already revoked")
                            }
                            Some(id) => println!("revoked credential {id} of {vin}"),
                            None => println!(
                                "revoked {n} credential{} of {vin}",
                                if n == 1 { "" } else { "s" }
                            ),
                        }
                    }
                }
            } else {
                let issued: serde_json::Value = api
                    .send(
                        api.request(Method::POST, &path)
                            .json(&serde_json::json!({"rotate": rotate})),
                    )
                    .await
                    .with_context(|| format!("issuing a credential for vehicle {vin}"))?;
                match output {
                    Output::Json => print_json(&issued)?,
                    Output::Table => {
                        eprintln!(
                            "issued credential {} for {vin}{}; store the secret now, it is not shown again:",
                            issued["id"].as_str().unwrap_or_default(),
                            if rotate { " (earlier ones revoked)" } else { "" }
                        );
                        println!("{}", issued["token"].as_str().unwrap_or_default());
                    }
                }
            }
            Ok(0)
        }
    }
}

#[derive(Deserialize)]
struct ListPage {
    vehicles: Vec<Vehicle>,
    next_cursor: Option<String>,
}

fn print_vehicle(v: &Vehicle) {
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    println!("vin        {}", v.vin);
    println!(
        "model      {} ({})",
        opt(&v.model),
        v.model_year
            .map(|y| y.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "platform   {}   gateway {}   protocol {}",
        opt(&v.platform),
        opt(&v.gateway),
        opt(&v.protocol)
    );
    println!("market     {} / {}", opt(&v.region), opt(&v.country));
    println!(
        "tags       {}",
        if v.tags.is_empty() {
            "-".into()
        } else {
            v.tags.join(", ")
        }
    );
    println!(
        "last seen  {}",
        v.last_seen
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "never".into())
    );
    println!("updated    {}", v.updated_at.to_rfc3339());
    if !v.attributes.is_empty() {
        println!("attributes");
        for (k, val) in &v.attributes {
            println!("  {k} = {val}");
        }
    }
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(["ecu", "hw", "sw", "sw source"]);
    for (name, e) in &v.ecus {
        let src = v
            .provenance
            .get(&format!("ecus.{name}.sw"))
            .cloned()
            .unwrap_or_default();
        t.add_row([name.clone(), e.hw.clone(), e.sw.clone(), src]);
    }
    println!("{t}");
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::VehiclesCmd;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: VehiclesCmd,
    }

    fn parse(args: &[&str]) -> Result<VehiclesCmd, clap::Error> {
        let mut all = vec!["vehicles"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.cmd)
    }

    #[test]
    fn credentials_flags_combine_only_sensibly() {
        const VIN: &str = "WVWZZZE1ZMP000001";
        assert!(matches!(
            parse(&["credentials", VIN, "--rotate", "--output", "json"]).unwrap(),
            VehiclesCmd::Credentials {
                rotate: true,
                list: false,
                revoke: false,
                id: None,
                ..
            }
        ));
        assert!(matches!(
            parse(&["credentials", VIN, "--revoke", "--id", "abc"]).unwrap(),
            VehiclesCmd::Credentials { revoke: true, id: Some(ref id), .. } if id == "abc"
        ));
        assert!(matches!(
            parse(&["credentials", VIN, "--list"]).unwrap(),
            VehiclesCmd::Credentials { list: true, .. }
        ));
        for bad in [
            &["credentials", VIN, "--id", "abc"][..],
            &["credentials", VIN, "--list", "--revoke"],
            &["credentials", VIN, "--rotate", "--list"],
            &["credentials", VIN, "--rotate", "--revoke"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
