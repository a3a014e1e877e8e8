//! `ota campaigns status` (a live view: one progress bar per wave and the
//! campaign's state) and the table form of `ota campaigns report`.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use comfy_table::Table;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use ota_proto::v1::{ActionState, CampaignState};
use ota_rest::model::{count_of, CampaignReport, GroupReport, WaveReport};
use reqwest::Method;

use crate::client::{print_json, Api, Output};

/// Exit code of `status --watch` interrupted by ctrl-c.
const EXIT_INTERRUPTED: i32 = 130;
/// Exit code of `status --watch` for a campaign that ended aborted.
const EXIT_ABORTED: i32 = 1;

pub async fn run(api: &Api, id: &str, watch: bool, output: Output) -> anyhow::Result<i32> {
    let fetch = || async {
        api.send::<CampaignReport>(
            api.request(Method::GET, &format!("/api/v1/campaigns/{id}/report"))
                .query(&[("top_failures", "0")]),
        )
        .await
        .with_context(|| format!("reading the status of campaign {id}"))
    };
    let mut report = fetch().await?;
    let mut view = match output {
        Output::Json => View::Json,
        Output::Table if std::io::stderr().is_terminal() => View::bars(&report),
        Output::Table => View::Text(String::new()),
    };
    view.show(&report, watch, None)?;
    if !watch {
        view.finish();
        return Ok(0);
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if report.state.is_final() {
            view.finish();
            return Ok(if report.state == CampaignState::Aborted {
                EXIT_ABORTED
            } else {
                0
            });
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                view.abandon();
                return Ok(EXIT_INTERRUPTED);
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // A failed refresh (the server restarting) is shown, not fatal.
        match fetch().await {
            Ok(r) => {
                report = r;
                view.show(&report, watch, None)?;
            }
            Err(e) => view.show(&report, watch, Some(format!("{e:#}")))?,
        }
    }
}

enum View {
    /// One JSON report per refresh (one line each when watching).
    Json,
    /// Plain lines when stderr is no terminal; holds the last one printed.
    Text(String),
    Bars {
        multi: MultiProgress,
        state: ProgressBar,
        waves: Vec<ProgressBar>,
    },
}

/// Totals of one wave: (finished, in progress, failed).
fn wave_counts(w: &WaveReport) -> (u64, u64, u64) {
    (
        count_of(&w.by_state, ActionState::is_final),
        count_of(&w.by_state, ActionState::is_open),
        count_of(&w.by_state, ActionState::is_failure),
    )
}

fn wave_label(w: &WaveReport) -> String {
    format!("wave {} {:>5}%", w.wave, w.percent)
}

fn wave_message(w: &WaveReport) -> String {
    let (_, in_progress, failed) = wave_counts(w);
    let open = if w.open { "" } else { ", not open" };
    format!("{in_progress} in progress, {failed} failed{open}")
}

fn state_line(r: &CampaignReport, problem: Option<&str>) -> String {
    let finished = count_of(&r.by_state, ActionState::is_final);
    let reason = if r.state_reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.state_reason)
    };
    let mut line = format!(
        "campaign {} is {}{reason}: {finished}/{} finished, failure rate {:.1}%",
        r.name, r.state, r.total, r.failure_rate
    );
    if let Some(e) = &r.last_error {
        line.push_str(&format!("; rollout failing: {e}"));
    }
    if let Some(p) = problem {
        line.push_str(&format!("; refresh failed: {p}"));
    }
    line
}

impl View {
    fn bars(r: &CampaignReport) -> Self {
        let multi = MultiProgress::new();
        let state = multi.add(ProgressBar::new_spinner());
        state.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
        let style = ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> ");
        let waves = r
            .waves
            .iter()
            .map(|w| {
                let bar = multi.add(ProgressBar::new(w.total));
                bar.set_style(style.clone());
                bar.set_prefix(wave_label(w));
                bar
            })
            .collect();
        View::Bars {
            multi,
            state,
            waves,
        }
    }

    fn show(
        &mut self,
        r: &CampaignReport,
        watch: bool,
        problem: Option<String>,
    ) -> anyhow::Result<()> {
        match self {
            View::Json if watch => println!("{}", serde_json::to_string(r)?),
            View::Json => print_json(r)?,
            View::Text(last) => {
                let mut text = state_line(r, problem.as_deref());
                for w in &r.waves {
                    let (finished, ..) = wave_counts(w);
                    text.push_str(&format!(
                        "\n  {}: {finished}/{} finished, {}",
                        wave_label(w),
                        w.total,
                        wave_message(w)
                    ));
                }
                if *last != text {
                    println!("{text}");
                    *last = text;
                }
            }
            View::Bars { state, waves, .. } => {
                state.set_message(state_line(r, problem.as_deref()));
                state.tick();
                for (bar, w) in waves.iter().zip(&r.waves) {
                    let (finished, ..) = wave_counts(w);
                    bar.set_length(w.total);
                    bar.set_position(finished);
                    bar.set_message(wave_message(w));
                }
            }
        }
        Ok(())
    }

    /// Leaves the last state on screen.
    fn finish(&self) {
        if let View::Bars { state, waves, .. } = self {
            state.finish();
            waves.iter().for_each(ProgressBar::finish);
        }
    }

    fn abandon(&self) {
        if let View::Bars {
            multi,
            state,
            waves,
        } = self
        {
            state.abandon();
            waves.iter().for_each(ProgressBar::abandon);
            let _ = multi.clear();
        }
    }
}

fn add_groups(t: &mut Table, name: &str, groups: &[GroupReport]) {
    for g in groups {
        t.add_row([
            name.to_owned(),
            g.key.clone(),
            g.total.to_string(),
            g.succeeded.to_string(),
            g.failed.to_string(),
            g.in_progress.to_string(),
        ]);
    }
}

/// The report as tables, for a person.
pub fn print_report(r: &CampaignReport) {
    println!("{}", state_line(r, None));
    println!(
        "campaign {}: {} vehicles, {} retries",
        r.campaign_id, r.total, r.retries
    );
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(["state", "vehicles"]);
    for s in r.by_state.iter().filter(|s| s.count > 0) {
        t.add_row([s.state.to_string(), s.count.to_string()]);
    }
    println!("{t}");

    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header([
        "wave",
        "percent",
        "open",
        "opened",
        "vehicles",
        "finished",
        "in progress",
        "failed",
    ]);
    for w in &r.waves {
        let (finished, in_progress, failed) = wave_counts(w);
        t.add_row([
            w.wave.to_string(),
            format!("{}%", w.percent),
            if w.open { "yes" } else { "no" }.to_owned(),
            w.opened_at
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
            w.total.to_string(),
            finished.to_string(),
            in_progress.to_string(),
            failed.to_string(),
        ]);
    }
    println!("{t}");

    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header([
        "breakdown",
        "value",
        "vehicles",
        "succeeded",
        "failed",
        "in progress",
    ]);
    add_groups(&mut t, "model", &r.by_model);
    add_groups(&mut t, "platform", &r.by_platform);
    add_groups(&mut t, "gateway", &r.by_gateway);
    add_groups(&mut t, "region", &r.by_region);
    println!("{t}");

    if !r.top_failures.is_empty() {
        let mut t = Table::new();
        t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
        t.set_header(["failure", "vehicles"]);
        for f in &r.top_failures {
            t.add_row([f.reason.clone(), f.count.to_string()]);
        }
        println!("{t}");
    }
}
