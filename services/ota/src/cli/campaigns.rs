use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use comfy_table::Table;
use futures::StreamExt;
use ota_rest::model::{Campaign, CampaignReport, CampaignValidation, SpecProblem};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::status;
use crate::client::{print_json, Api, Connection, Output};

#[derive(clap::Subcommand, Debug)]
pub enum CampaignsCmd {
    /// Create a campaign (state draft) from a campaign file, YAML or JSON.
    /// Prints every problem of the file (as `path: message`) and exits 1 when
    /// there are any.
    Create {
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        /// Print only the new campaign's id (for scripts: `ID=$(ota campaigns create -q -f F)`).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Check a campaign file without creating anything; exits 1 when it has
    /// problems.
    Validate {
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List campaigns.
    List {
        /// Only campaigns in this state (draft, approved, running, paused,
        /// completed, aborted, cancelled).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one campaign.
    Get {
        id: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Approve a draft (approver role; not the campaign's creator).
    Approve(ActionArgs),
    /// Launch an approved campaign: its first wave opens (or at its schedule start).
    Launch(ActionArgs),
    /// Pause a running campaign; vehicles mid-install finish.
    Pause(ActionArgs),
    /// Resume a paused campaign.
    Resume(ActionArgs),
    /// Abort a running or paused campaign for good.
    Abort(ActionArgs),
    /// Cancel a campaign that has not launched.
    Cancel(ActionArgs),
    /// Open the next wave now (manual advance, or ahead of the soak time).
    Advance(ActionArgs),
    /// Change a campaign's priority (-1000..=1000, higher wins conflicts).
    Priority {
        id: String,
        #[arg(allow_negative_numbers = true)]
        priority: i32,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// A campaign's report: counts by state, wave and fleet group, top
    /// failures; csv is the per-vehicle list.
    Report {
        id: String,
        #[arg(long, alias = "output", value_enum, default_value_t)]
        format: ReportFormat,
        /// How many failure reasons to list.
        #[arg(long)]
        top_failures: Option<u32>,
    },
    /// A campaign's progress: one bar per wave and the campaign's state.
    /// With --watch, refreshes every second until the campaign is completed,
    /// aborted or cancelled (exit 0, 1 when aborted) or ctrl-c (exit 130).
    Status {
        id: String,
        #[arg(long)]
        watch: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(clap::Args, Debug)]
pub struct ActionArgs {
    id: String,
    /// Why; recorded in the audit log (and as the campaign's state reason).
    #[arg(long)]
    reason: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReportFormat {
    #[default]
    Table,
    Json,
    Csv,
}

#[derive(Serialize, Deserialize)]
struct CampaignList {
    campaigns: Vec<Campaign>,
}

/// Exit code of a campaign file with problems.
pub const EXIT_INVALID: i32 = 1;

pub async fn run(cmd: CampaignsCmd, conn: &Connection) -> anyhow::Result<i32> {
    let api = conn.api()?;
    let (action, args) = match cmd {
        CampaignsCmd::Create {
            file,
            output,
            quiet,
        } => return create(&api, &file, output, quiet).await,
        CampaignsCmd::Validate { file, output } => return validate(&api, &file, output).await,
        CampaignsCmd::List { state, output } => {
            let mut req = api.request(Method::GET, "/api/v1/campaigns");
            if let Some(s) = &state {
                req = req.query(&[("state", s)]);
            }
            let list: CampaignList = api.send(req).await?;
            match output {
                Output::Json => print_json(&list)?,
                Output::Table => print_list(&list.campaigns),
            }
            return Ok(0);
        }
        CampaignsCmd::Get { id, output } => {
            let c: Campaign = api
                .send(api.request(Method::GET, &format!("/api/v1/campaigns/{id}")))
                .await?;
            match output {
                Output::Json => print_json(&c)?,
                Output::Table => print_campaign(&c),
            }
            return Ok(0);
        }
        CampaignsCmd::Priority {
            id,
            priority,
            reason,
            output,
        } => {
            let c: Campaign = api
                .send(
                    api.request(Method::PUT, &format!("/api/v1/campaigns/{id}/priority"))
                        .json(&json!({"priority": priority, "reason": reason.unwrap_or_default()})),
                )
                .await?;
            match output {
                Output::Json => print_json(&c)?,
                Output::Table => println!(
                    "campaign {} ({}) now has priority {}",
                    c.name, c.id, c.priority
                ),
            }
            return Ok(0);
        }
        CampaignsCmd::Report {
            id,
            format,
            top_failures,
        } => return report(&api, &id, format, top_failures).await,
        CampaignsCmd::Status { id, watch, output } => {
            return status::run(&api, &id, watch, output).await
        }
        CampaignsCmd::Approve(a) => ("approve", a),
        CampaignsCmd::Launch(a) => ("launch", a),
        CampaignsCmd::Pause(a) => ("pause", a),
        CampaignsCmd::Resume(a) => ("resume", a),
        CampaignsCmd::Abort(a) => ("abort", a),
        CampaignsCmd::Cancel(a) => ("cancel", a),
        CampaignsCmd::Advance(a) => ("advance", a),
    };
    let c: Campaign = api
        .send(
            api.request(
                Method::POST,
                &format!("/api/v1/campaigns/{}:{action}", args.id),
            )
            .json(&json!({"reason": args.reason.unwrap_or_default()})),
        )
        .await?;
    match args.output {
        Output::Json => print_json(&c)?,
        Output::Table => {
            let wave = if action == "advance" {
                format!(", wave {} open", c.current_wave)
            } else {
                String::new()
            };
            println!("campaign {} ({}) is {}{wave}", c.name, c.id, c.state);
        }
    }
    Ok(0)
}

/// Sends a campaign file; `Err(problems)` when the server lists problems.
async fn send_file(
    api: &Api,
    path: &str,
    file: &Path,
) -> anyhow::Result<Result<serde_json::Value, Vec<SpecProblem>>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        _ => "application/yaml",
    };
    let res = api
        .request(Method::POST, path)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(text)
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {}", api.base))?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if status.is_success() {
        return Ok(Ok(v));
    }
    if status == reqwest::StatusCode::BAD_REQUEST && v["errors"].is_array() {
        return Ok(Err(serde_json::from_value(v["errors"].clone())?));
    }
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or(body);
    bail!("{message} (HTTP {})", status.as_u16())
}

fn print_problems(file: &Path, problems: &[SpecProblem], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&CampaignValidation {
            valid: false,
            errors: problems.to_vec(),
        }),
        Output::Table => {
            for p in problems {
                eprintln!("{p}");
            }
            let n = SpecProblem::count(problems);
            eprintln!(
                "{}: {n} problem{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            Ok(())
        }
    }
}

async fn create(api: &Api, file: &Path, output: Output, quiet: bool) -> anyhow::Result<i32> {
    match send_file(api, "/api/v1/campaigns", file).await? {
        Ok(v) => {
            let c: Campaign = serde_json::from_value(v)?;
            match output {
                _ if quiet => println!("{}", c.id),
                Output::Json => print_json(&c)?,
                Output::Table => {
                    print_campaign(&c);
                    eprintln!(
                        "created campaign {}; it needs an approver other than {} next: ota campaigns approve {}",
                        c.id, c.created_by, c.id
                    );
                }
            }
            Ok(0)
        }
        Err(problems) => {
            print_problems(file, &problems, output)?;
            Ok(EXIT_INVALID)
        }
    }
}

async fn validate(api: &Api, file: &Path, output: Output) -> anyhow::Result<i32> {
    let v: CampaignValidation = match send_file(api, "/api/v1/campaigns:validate", file).await? {
        Ok(v) => serde_json::from_value(v)?,
        Err(errors) => CampaignValidation {
            valid: false,
            errors,
        },
    };
    if v.valid {
        match output {
            Output::Json => print_json(&v)?,
            Output::Table => println!("{}: valid", file.display()),
        }
        return Ok(0);
    }
    print_problems(file, &v.errors, output)?;
    Ok(EXIT_INVALID)
}

async fn report(
    api: &Api,
    id: &str,
    format: ReportFormat,
    top_failures: Option<u32>,
) -> anyhow::Result<i32> {
    let path = format!("/api/v1/campaigns/{id}/report");
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(n) = top_failures {
        query.push(("top_failures", n.to_string()));
    }
    if format == ReportFormat::Csv {
        query.push(("format", "csv".into()));
        let res = api
            .send_raw(api.request(Method::GET, &path).query(&query))
            .await?;
        let mut out = std::io::stdout().lock();
        let mut body = res.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| {
                format!("the report of campaign {id} was cut off; the CSV is incomplete")
            })?;
            out.write_all(&chunk)?;
        }
        out.flush()?;
        return Ok(0);
    }
    let r: CampaignReport = api
        .send(api.request(Method::GET, &path).query(&query))
        .await?;
    match format {
        ReportFormat::Json => print_json(&r)?,
        _ => status::print_report(&r),
    }
    Ok(0)
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `wave 2/4 (50%)`, or `not launched`.
pub fn wave_text(c: &Campaign) -> String {
    if c.current_wave == 0 {
        return "not launched".into();
    }
    let pct = c
        .waves
        .get(c.current_wave as usize - 1)
        .map(|p| format!(" ({p}%)"))
        .unwrap_or_default();
    format!("{}/{}{pct}", c.current_wave, c.waves.len())
}

fn print_list(list: &[Campaign]) {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header([
        "id",
        "name",
        "state",
        "priority",
        "wave",
        "created by",
        "approved by",
        "updated",
    ]);
    for c in list {
        t.add_row([
            c.id.clone(),
            c.name.clone(),
            c.state.to_string(),
            c.priority.to_string(),
            wave_text(c),
            c.created_by.clone(),
            c.approved_by.clone().unwrap_or_default(),
            when(c.updated_at),
        ]);
    }
    println!("{t}");
    println!("{} campaigns", list.len());
}

fn print_campaign(c: &Campaign) {
    println!("id         {}", c.id);
    println!("name       {}", c.name);
    if c.state_reason.is_empty() {
        println!("state      {}", c.state);
    } else {
        println!("state      {} ({})", c.state, c.state_reason);
    }
    println!("priority   {}", c.priority);
    println!("target     {}", c.target);
    let waves: Vec<String> = c.waves.iter().map(|w| format!("{w}%")).collect();
    println!("waves      {}   open: {}", waves.join(" "), wave_text(c));
    println!("created    {} by {}", when(c.created_at), c.created_by);
    println!(
        "approved   {}",
        c.approved_by
            .as_deref()
            .map(|a| format!("by {a}"))
            .unwrap_or_else(|| "no".into())
    );
    println!("launched   {}", when(c.launched_at));
    println!("updated    {}", when(c.updated_at));
    if let Some(e) = &c.last_error {
        println!(
            "rollout    failing since {} ({} ticks in a row): {e}",
            when(c.last_error_at),
            c.failed_ticks
        );
    }
}
