use comfy_table::Table;
use ota_rest::model::AuditPage;
use reqwest::Method;

use crate::client::{print_json, Connection, Output};

/// The audit log of packages and campaigns, newest first.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Only entries about this campaign or package id.
    #[arg(long)]
    entity: Option<String>,
    /// Entries to show (1..=1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Only entries older than this entry id (the next page).
    #[arg(long)]
    before: Option<u64>,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub async fn run(args: AuditArgs, conn: &Connection) -> anyhow::Result<i32> {
    let api = conn.api()?;
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(e) = &args.entity {
        query.push(("entity_id", e.clone()));
    }
    if let Some(b) = args.before {
        query.push(("before", b.to_string()));
    }
    let page: AuditPage = api
        .send(api.request(Method::GET, "/api/v1/audit").query(&query))
        .await?;
    match args.output {
        Output::Json => print_json(&page)?,
        Output::Table => {
            let mut t = Table::new();
            t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
            t.set_header([
                "id",
                "at",
                "actor",
                "entity",
                "entity id",
                "action",
                "reason",
            ]);
            for e in &page.entries {
                t.add_row([
                    e.id.to_string(),
                    e.at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default(),
                    e.actor.clone(),
                    e.entity.clone(),
                    e.entity_id.clone(),
                    e.action.clone(),
                    e.reason.clone(),
                ]);
            }
            println!("{t}");
            match page.next_before {
                Some(b) => println!("{} entries; older with --before {b}", page.entries.len()),
                None => println!("{} entries", page.entries.len()),
            }
        }
    }
    Ok(0)
}
