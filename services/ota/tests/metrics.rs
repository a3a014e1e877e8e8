//! The metrics contract, end to end. `ota describe` lists every metric
//! (services/ota/src/metric_catalog.rs); the services' `counter!`,
//! `gauge!` and `histogram!` calls emit exactly those, with those labels;
//! docs/metrics.md documents exactly those, with the Grafana panels and
//! alert rules that use each; the dashboards, `dashboards/alerts.yml` and
//! infra's PrometheusRule query nothing else; Grafana's provisioning files
//! point at the dashboards and their datasource. And a campaign run by
//! `ota simulate` against `ota serve` shows it on `/metrics`, scraped over
//! its socket: every family there is in the list with its type, labels and
//! help, everything the dashboards and alerts query is there (but for the
//! few metrics only an error path emits, named below), and the health page
//! shows the same numbers.

mod common;
mod metrics_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use metrics_support::*;
use serde_json::Value;

/// Metrics that a healthy campaign does not make: each needs an error,
/// a refusal or a limit. They are in the catalog (and emitted by the code,
/// which `the_catalog_is_every_metric_the_code_emits` checks), but a scrape
/// cannot show them here.
const RARE: &[(&str, &str)] = &[
    (
        "ota_http_connections_refused_total",
        "only past http.max_connections",
    ),
    (
        "ota_http_connections_idle_closed_total",
        "only after http.idle_timeout_s (120 s) idle",
    ),
    (
        "ota_vehicle_rate_limited_total",
        "only over a vehicle's budget",
    ),
    (
        "ota_last_seen_dropped_total",
        "only with 1,000,000 vehicles waiting",
    ),
    (
        "ota_mqtt_auth_refused_total",
        "only for refused MQTT logins",
    ),
    ("ota_mqtt_rejected_total", "only for refused MQTT messages"),
    ("ota_staging_bad_events_total", "only for unreadable events"),
    (
        "ota_trace_context_invalid_total",
        "only for a malformed traceparent",
    ),
    (
        "ota_staging_build_errors_total",
        "only when a document cannot be built",
    ),
    (
        "ota_staging_corrupt_total",
        "only for a corrupt staged document",
    ),
    (
        "ota_targeting_incompatible_total",
        "only for incompatible ECU hardware",
    ),
    (
        "ota_rollout_tick_failures_total",
        "only when a rollout tick fails",
    ),
    (
        "process_virtual_memory_max_bytes",
        "only with an address-space limit",
    ),
];

fn describe() -> Value {
    let out = Command::new(OTA).arg("describe").output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kinds(cat: &BTreeMap<String, Described>) -> BTreeMap<String, String> {
    cat.iter()
        .map(|(n, d)| (n.clone(), d.kind.clone()))
        .collect()
}

/// Every query of the dashboards, of dashboards/alerts.yml and of infra's
/// alert rules.
fn all_queries() -> Vec<Query> {
    let mut q = dashboard_queries();
    q.extend(rule_queries(&read("dashboards/alerts.yml")));
    q.extend(infra_alert_queries(&read("infra/src/observability.ts")));
    q
}

/// Each catalog metric with the queries that read it; the problems of
/// names that are none.
fn users(kinds: &BTreeMap<String, String>) -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
    let mut by_metric: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for q in all_queries() {
        let names = promql_metrics(&q.expr);
        if names.is_empty() {
            problems.push(format!("{}: no metric in {:?}", q.user, q.expr));
        }
        for n in names {
            match resolve(&n, kinds) {
                Ok(base) => {
                    by_metric.entry(base).or_default().insert(q.user.clone());
                }
                Err(e) => problems.push(format!("{}: {e} ({:?})", q.user, q.expr)),
            }
        }
    }
    (by_metric, problems)
}

#[test]
fn the_catalog_is_every_metric_the_code_emits() {
    let cat = catalog(&describe());
    let mut problems = Vec::new();
    let mut emitted_names = BTreeSet::new();
    let calls = emitted();
    for e in &calls {
        let name = match &e.name {
            Ok(n) => n,
            Err(expr) => {
                problems.push(format!(
                    "{}: the metric name is not a literal: {expr}",
                    e.at
                ));
                continue;
            }
        };
        emitted_names.insert(name.clone());
        match cat.get(name) {
            None => problems.push(format!(
                "{}: {name} is not in services/ota/src/metric_catalog.rs",
                e.at
            )),
            Some(d) if d.kind != e.kind => problems.push(format!(
                "{}: {name} is a {} here, a {} in the catalog",
                e.at, e.kind, d.kind
            )),
            Some(d) if d.labels != e.labels => problems.push(format!(
                "{}: {name} has labels {:?} here, {:?} in the catalog",
                e.at, e.labels, d.labels
            )),
            Some(_) => {}
        }
    }
    for name in cat.keys().filter(|n| n.starts_with("ota_")) {
        if !emitted_names.contains(name) {
            problems.push(format!("{name} is in the catalog but no code emits it"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(calls.len() >= 60, "found only {} metric calls", calls.len());
}

#[test]
fn docs_metrics_md_documents_every_metric_with_the_panels_and_alerts_using_it() {
    let cat = catalog(&describe());
    let (by_metric, _) = users(&kinds(&cat));
    let rows = doc_rows(&read("docs/metrics.md"));
    let mut problems = Vec::new();
    let mut documented = BTreeSet::new();
    for r in &rows {
        if !documented.insert(r.name.clone()) {
            problems.push(format!("{} is documented twice", r.name));
        }
        let Some(d) = cat.get(&r.name) else {
            problems.push(format!("{} is documented but not exported", r.name));
            continue;
        };
        if r.kind != d.kind {
            problems.push(format!(
                "{}: documented as a {}, exported as a {}",
                r.name, r.kind, d.kind
            ));
        }
        if r.labels != d.labels {
            problems.push(format!(
                "{}: documented labels {:?}, exported {:?}",
                r.name, r.labels, d.labels
            ));
        }
        let used = by_metric.get(&r.name).cloned().unwrap_or_default();
        if r.used_by != used {
            problems.push(format!(
                "{}: the document says it is used by {:?}, but these use it: {:?}",
                r.name, r.used_by, used
            ));
        }
    }
    for name in cat.keys() {
        if !documented.contains(name) {
            problems.push(format!("{name} is exported but not in docs/metrics.md"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_dashboard_and_alert_query_reads_exported_metrics() {
    let cat = catalog(&describe());
    let (by_metric, problems) = users(&kinds(&cat));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The metrics all have a panel, and the alerts theirs.
    for (metric, user) in [
        ("ota_poll_requests_total", "alert: OtaNoPolls"),
        (
            "ota_campaign_actions",
            "alert: OtaCampaignFailureRatioOverThreshold",
        ),
        (
            "ota_campaign_failure_threshold",
            "alert: OtaCampaignFailureRatioOverThreshold",
        ),
        ("ota_staging_lag_seconds", "alert: OtaStagingLagHigh"),
        ("ota_outbox_pending", "alert: OtaOutboxBacklog"),
        ("ota_bus_pending_events", "alert: OtaBusConsumerBehind"),
        ("up", "alert: OtaRoleDown"),
        (
            "ota_status_reports_total",
            "rollout: Status reports by protocol and state",
        ),
        ("ota_mqtt_connections", "rollout: MQTT connections by pod"),
        (
            "ota_last_seen_batches_total",
            "rollout: Last-seen batches by outcome",
        ),
        (
            "ota_staging_reconcile_repaired_total",
            "rollout: Reconcile: documents repaired",
        ),
    ] {
        assert!(
            by_metric.get(metric).is_some_and(|u| u.contains(user)),
            "{user} reads {metric}: {:?}",
            by_metric.get(metric)
        );
    }
    // Panels: unique ids, the datasource variable, at least one target.
    for (file, d) in dashboards() {
        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{file}: panel id {} twice",
                p["id"]
            );
            if p["type"] == "row" {
                continue;
            }
            let ds = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
            assert_eq!(p["datasource"], ds, "{file}: {}", p["title"]);
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: {} has no query", p["title"]);
            for t in targets {
                assert_eq!(t["datasource"], ds, "{file}: {}", p["title"]);
            }
        }
    }
}

#[test]
fn grafana_provisioning_points_at_the_dashboards_and_their_datasource() {
    let yaml = |rel: &str| -> serde_yaml_ng::Value { serde_yaml_ng::from_str(&read(rel)).unwrap() };
    let sources = yaml("dashboards/provisioning/datasources/prometheus.yml");
    let source = &sources["datasources"][0];
    assert_eq!(sources["apiVersion"].as_u64(), Some(1));
    assert_eq!(source["type"].as_str(), Some("prometheus"));
    let uid = source["uid"].as_str().expect("the datasource has a uid");
    let boards = dashboards();
    assert_eq!(boards.len(), 2, "ota-platform.json and ota-rollout.json");
    for (file, d) in &boards {
        let var = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "DS_PROMETHEUS")
            .unwrap_or_else(|| panic!("{file} has the DS_PROMETHEUS variable"));
        assert_eq!(var["type"], "datasource", "{file}");
        assert_eq!(var["query"], "prometheus", "{file}");
        assert_eq!(
            var["current"]["value"], uid,
            "{file}: defaults to the provisioned datasource"
        );
    }

    let providers = yaml("dashboards/provisioning/dashboards/ota.yml");
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    let path = provider["options"]["path"].as_str().unwrap();
    assert!(
        read("dashboards/provisioning/datasources/prometheus.yml")
            .contains(&format!("dashboards:{path}")),
        "the documented mount puts dashboards/ at the provider's path {path}"
    );

    let prom = yaml("dashboards/prometheus.yml");
    assert_eq!(prom["rule_files"][0].as_str(), Some("alerts.yml"));
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    let target = job["static_configs"][0]["targets"][0].as_str().unwrap();
    assert_eq!(target, "127.0.0.1:8080", "http_addr's default");
    let down = rule_queries(&read("dashboards/alerts.yml"))
        .into_iter()
        .find(|q| q.user == "alert: OtaRoleDown")
        .unwrap();
    let job_name = job["job_name"].as_str().unwrap();
    assert!(
        down.expr.contains(&format!("job=\"{job_name}\"")),
        "{}",
        down.expr
    );
}

// ---- the platform, end to end ----

async fn scrape(http: &str) -> String {
    let r = reqwest::get(format!("{http}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The number in the health page's row `label` (`<th>label</th><td>n</td>`).
fn health_number(html: &str, label: &str) -> f64 {
    let cell = html
        .split(&format!("<th>{label}</th><td>"))
        .nth(1)
        .and_then(|r| r.split("</td>").next())
        .unwrap_or_else(|| panic!("the health page shows {label}: {html}"));
    cell.replace('\u{202f}', "")
        .parse()
        .unwrap_or_else(|e| panic!("{label}: {cell:?}: {e}"))
}

async fn health_page(http: &str, token: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{http}/ui/login"))
        .form(&[("token", token), ("next", "/ui/health")])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = client
        .get(format!("{http}/ui/health"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

async fn campaign_state(http: &str, admin: &str, id: &str) -> String {
    let c = get_json(
        &format!("{http}/api/v1/campaigns/{id}"),
        &format!("Bearer {admin}"),
    )
    .await;
    c["state"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_simulated_campaign_exports_every_metric_the_dashboards_and_alerts_query() {
    let s = Server::start(
        &[
            ("OTA_CAMPAIGNS__TICK_MS", "200"),
            ("OTA_STAGING__RECONCILE_INTERVAL_S", "2"),
        ],
        &[],
    );
    let admin = s.admin_token();
    let dir = tempfile::tempdir().unwrap();
    let firmware = dir.path().join("bms-2.3.1.bin");
    std::fs::write(&firmware, vec![7u8; 20_000]).unwrap();
    s.add_hosted_package(&admin, "bms-fw", "2.3.1", "BMS", &firmware);
    let sim = |extra: &[&str]| {
        let mut args = vec!["simulate", "--vehicles", "9", "--protocol", "mixed"];
        args.extend_from_slice(extra);
        let mut cmd = Command::new(OTA);
        cmd.args(&args)
            .env("OTA_SERVER", &s.http)
            .env("OTA_TOKEN", &admin);
        cmd
    };
    let out = sim(&["--duration", "1s"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = "name: metrics\ntarget: '\"simulated\" in vehicle.tags'\nrules:\n  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}\nrollout:\n  max_per_minute: 60000\n  failure_threshold: {percent: 50, min_finished: 1, action: pause}\n";
    let id = create_approve_launch(&s.http, &admin, spec).await;
    // A refused token: ota_auth_failures_total.
    let refused = reqwest::Client::new()
        .get(format!("{}/api/v1/whoami", s.http))
        .bearer_auth("ota_not_a_token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let fleet = sim(&[
        "--install-time",
        "300ms",
        "--poll-every",
        "300ms",
        "--duration",
        "90s",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();

    // While it runs, the campaign's gauges count its actions.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let m = parse_scrape(&scrape(&s.http).await);
        let finished = m.sum(
            "ota_campaign_actions",
            &[("campaign", &id), ("state", "succeeded")],
        ) + m.sum(
            "ota_campaign_actions",
            &[("campaign", &id), ("state", "failed")],
        );
        if finished > 0.0 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no finished action in ota_campaign_actions within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let all_states: f64 = running.sum("ota_campaign_actions", &[("campaign", &id)]);
    assert_eq!(
        all_states, 9.0,
        "the 9 vehicles' actions, each in one state"
    );
    assert_eq!(
        running.sum("ota_campaign_failure_threshold", &[("campaign", &id)]),
        0.5
    );

    let status = tokio::task::spawn_blocking(move || fleet.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while campaign_state(&s.http, &admin, &id).await != "completed" {
        assert!(Instant::now() < deadline, "the campaign did not complete");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Wait for the samplers (bus pending events and last seen every 5 s,
    // reconcile every 2 s) to have reported.
    let cat = catalog(&describe());
    let expected: BTreeSet<&str> = cat
        .keys()
        .map(String::as_str)
        .filter(|n| !RARE.iter().any(|(r, _)| r == n))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (text, m) = loop {
        let text = scrape(&s.http).await;
        let m = parse_scrape(&text);
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|n| !m.types.contains_key(**n))
            .collect();
        if missing.is_empty() {
            break (text, m);
        }
        assert!(
            Instant::now() < deadline,
            "not exported after a campaign (and not named in RARE): {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Every family is in the catalog, with its type, its labels and (ours)
    // its help text.
    let mut problems = Vec::new();
    for (name, kind) in &m.types {
        let Some(d) = cat.get(name) else {
            problems.push(format!("{name} is exported but not in the catalog"));
            continue;
        };
        if &d.kind != kind {
            problems.push(format!(
                "{name} is a {kind} on /metrics, a {} in the catalog",
                d.kind
            ));
        }
        if name.starts_with("ota_") && !m.helps.contains(name) {
            problems.push(format!("{name} has no # HELP"));
        }
    }
    for (sample, labels) in &m.samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                sample
                    .strip_suffix(s)
                    .filter(|b| cat.get(*b).is_some_and(|d| d.kind == "histogram"))
            })
            .unwrap_or(sample);
        let Some(d) = cat.get(family) else {
            problems.push(format!("sample {sample} is of no cataloged family"));
            continue;
        };
        let extra: Vec<&String> = labels
            .iter()
            .filter(|l| !(d.labels.contains(*l) || sample.ends_with("_bucket") && *l == "le"))
            .collect();
        if !extra.is_empty() {
            problems.push(format!(
                "{sample} has labels {extra:?} beyond {:?}",
                d.labels
            ));
        }
    }
    for (rare, why) in RARE {
        if !cat.contains_key(*rare) {
            problems.push(format!(
                "RARE names {rare} ({why}), which is not in the catalog"
            ));
        }
    }

    // Every metric a panel, a variable or an alert reads was exported by
    // this campaign, or is one of the RARE ones.
    let kinds = kinds(&cat);
    for q in all_queries() {
        for n in promql_metrics(&q.expr) {
            let seen = n == "up" || m.samples.contains_key(&n) || m.types.contains_key(&n);
            let rare = resolve(&n, &kinds)
                .ok()
                .is_some_and(|base| RARE.iter().any(|(r, _)| *r == base));
            if !seen && !rare {
                problems.push(format!(
                    "{}: {n} was not on /metrics ({:?})",
                    q.user, q.expr
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}\n\n{text}", problems.join("\n"));

    // The numbers the issue asks for moved.
    for protocol in ["http", "ddi"] {
        assert!(
            m.sum(
                "ota_poll_requests_total",
                &[("protocol", protocol), ("outcome", "200")]
            ) > 0.0,
            "{protocol} polls"
        );
    }
    for protocol in ["http", "ddi", "mqtt"] {
        assert!(
            m.sum(
                "ota_status_reports_total",
                &[("protocol", protocol), ("outcome", "applied")]
            ) > 0.0,
            "{protocol} reports"
        );
    }
    assert_eq!(
        m.sum(
            "ota_status_reports_total",
            &[("state", "succeeded"), ("outcome", "applied")]
        ),
        9.0,
        "one success reported per vehicle"
    );
    assert!(m.sum("ota_staging_lag_seconds_count", &[]) > 0.0);
    assert!(m.sum("ota_last_seen_batches_total", &[("outcome", "ok")]) > 0.0);
    assert!(m.sum("ota_outbox_relayed_total", &[]) > 0.0);
    assert_eq!(
        m.sum("ota_auth_failures_total", &[("reason", "invalid")]),
        1.0
    );
    // Finished: its gauges are zero, its threshold 1 (matching no alert).
    assert_eq!(m.sum("ota_campaign_actions", &[("campaign", &id)]), 0.0);
    assert_eq!(
        m.sum("ota_campaign_failure_threshold", &[("campaign", &id)]),
        1.0
    );

    // The health page reads the same series (the platform is idle now, so
    // the two looks agree).
    let page = health_page(&s.http, &admin).await;
    let now = parse_scrape(&scrape(&s.http).await);
    for (label, metric) in [
        ("Outbox backlog", "ota_outbox_pending"),
        ("Bus pending events", "ota_bus_pending_events"),
        ("MQTT connections", "ota_mqtt_connections"),
        ("Staged vehicles", "ota_staged_vehicles"),
        ("Events processed", "ota_staging_events_total"),
        (
            "Repaired by reconciles",
            "ota_staging_reconcile_repaired_total",
        ),
    ] {
        assert_eq!(
            health_number(&page, label),
            now.sum(metric, &[]),
            "{label} is {metric}"
        );
    }
    // The documents came and went with the actions.
    assert!(now.sum("ota_staging_documents_total", &[("outcome", "changed")]) >= 18.0);
}
