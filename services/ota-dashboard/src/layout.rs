//! The page shell (navigation, VIN search, who is signed in) and the small
//! pieces pages share: state badges, progress bars, times.

use axum::response::Html;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use ota_proto::v1::ActionState;

use crate::session::User;

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Campaigns,
    Vehicles,
    Health,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · ota" }
            link rel="stylesheet" href=(crate::assets::CSS_PATH);
            script src=(crate::assets::JS_PATH) defer {}
        }
    }
}

/// A page without navigation: sign-in and errors.
pub fn bare(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body.bare {
                    header.top { a.brand href="/ui/" { "ota" } }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A dashboard page. `live` makes the page refresh its `[data-live]`
/// regions every few seconds (while a campaign runs, on the health page).
pub fn page(user: &User, title: &str, nav: Nav, live: bool, body: Markup) -> Html<String> {
    let t = &user.0.token;
    let link = |n: Nav, href: &str, text: &str| {
        html! { a href=(href) class=[(n == nav).then_some("active")] { (text) } }
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body data-refresh=[live.then_some("5")] {
                    header.top {
                        a.brand href="/ui/" { "ota" }
                        nav {
                            (link(Nav::Campaigns, "/ui/campaigns", "Campaigns"))
                            (link(Nav::Vehicles, "/ui/vehicles", "Vehicles"))
                            (link(Nav::Health, "/ui/health", "Health"))
                        }
                        form.search method="get" action="/ui/vehicles" role="search" {
                            input type="search" name="vin" placeholder="Find a VIN" aria-label="VIN"
                                maxlength="64" autocomplete="off";
                        }
                        div.who {
                            span title=(format!("token {}", t.name)) { (t.principal) }
                            span.role { (t.role.as_str()) }
                            form method="post" action="/ui/logout" {
                                (csrf(user))
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf(user: &User) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.0.csrf); }
}

pub fn badge(state: &str) -> Markup {
    html! { span class=(format!("badge s-{}", state.replace(|c: char| !c.is_ascii_alphanumeric(), "-"))) { (state) } }
}

/// Counts of a campaign's (or a wave's) actions, in the buckets bars show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub succeeded: u64,
    pub failed: u64,
    pub running: u64,
    pub waiting: u64,
    pub cancelled: u64,
}

impl Progress {
    pub fn add(&mut self, state: ActionState, n: u64) {
        use ActionState as S;
        let slot = match state {
            S::Succeeded => &mut self.succeeded,
            S::Failed | S::Rejected | S::TimedOut => &mut self.failed,
            S::Cancelled => &mut self.cancelled,
            S::Pending | S::Waiting | S::Unspecified => &mut self.waiting,
            S::Staged | S::Delivered | S::Accepted | S::Downloading | S::Installing => {
                &mut self.running
            }
        };
        *slot += n;
    }

    pub fn from_counts(counts: &[ota_proto::v1::StateCount]) -> Self {
        let mut p = Self::default();
        for c in counts {
            p.add(c.state(), c.count);
        }
        p
    }

    pub fn total(&self) -> u64 {
        self.succeeded + self.failed + self.running + self.waiting + self.cancelled
    }

    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed
    }
}

fn pct(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        n as f64 * 100.0 / total as f64
    }
}

/// A stacked bar: succeeded, failed, in progress, waiting.
pub fn progress_bar(p: &Progress) -> Markup {
    let total = p.total();
    let seg = |class: &str, n: u64, what: &str| {
        html! {
            @if n > 0 {
                span class=(class) style=(format!("width:{:.3}%", pct(n, total)))
                    title=(format!("{n} {what}")) {}
            }
        }
    };
    html! {
        div.progress role="img" aria-label=(format!("{} of {} finished", p.finished(), total)) {
            (seg("ok", p.succeeded, "succeeded"))
            (seg("bad", p.failed, "failed, rejected or timed out"))
            (seg("run", p.running, "in progress"))
            (seg("wait", p.waiting, "pending or waiting"))
            (seg("off", p.cancelled, "cancelled"))
        }
        span.progress-label { (format!("{:.1}%", pct(p.finished(), total))) " done" }
    }
}

pub fn time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => html! {
            time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) }
        },
        None => html! { span.muted { "never" } },
    }
}

pub fn ts(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref().map(ota_common::vehicle::from_timestamp)
}

/// "3 min ago" for the last-seen column.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    match s {
        i64::MIN..=4 => "just now".into(),
        5..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// A number with thin spaces between thousands.
pub fn count(n: u64) -> Markup {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    html! { (out) }
}
