/**
 * Metrics and dashboards for one region:
 *  - kube-prometheus-stack (Prometheus operator, Prometheus, Alertmanager, Grafana) as a Helm
 *    release, unless the cluster already runs one (`observability.installPrometheusStack: false`);
 *  - a ServiceMonitor selecting every OTA role Service (port `http`, path `/metrics`), plus the
 *    `prometheus.io/*` pod annotations set by ota-services.ts for annotation-based Prometheus;
 *  - alert rules over the platform's metric names;
 *  - the Grafana dashboards of `dashboards/*.json`, read at synth time and shipped as ConfigMaps
 *    labelled `grafana_dashboard: "1"` for Grafana's dashboard sidecar.
 */
import * as fs from "fs";
import * as path from "path";
import { ITerraformDependable } from "cdktf";
import { Construct } from "constructs";
import { Release } from "@cdktf/provider-helm/lib/release";
import { ConfigMapV1 } from "@cdktf/provider-kubernetes/lib/config-map-v1";
import { Manifest } from "@cdktf/provider-kubernetes/lib/manifest";
import { NamespaceV1 } from "@cdktf/provider-kubernetes/lib/namespace-v1";
import { PlatformConfig, RegionConfig, ROLES, deepMerge, infraRoot } from "./config";
import { commonLabels, helmValues, k8sName, PART_OF, terraformLiteral } from "./helpers";

export interface ObservabilityProps {
  readonly config: PlatformConfig;
  readonly region: RegionConfig;
  readonly dependsOn: ITerraformDependable[];
}

export interface Dashboard {
  /** File name, e.g. ota-platform.json. */
  readonly file: string;
  readonly uid: string;
  readonly title: string;
  /** The file's text, unchanged. */
  readonly json: string;
}

/** Reads and checks every `*.json` dashboard in `dir` (relative paths are relative to the infra dir). */
export function loadDashboards(dir: string): Dashboard[] {
  const abs = path.isAbsolute(dir) ? dir : path.resolve(infraRoot(), dir);
  if (!fs.existsSync(abs)) throw new Error(`dashboards directory not found: ${abs}`);
  const files = fs
    .readdirSync(abs)
    .filter((f) => f.endsWith(".json"))
    .sort();
  if (files.length === 0) throw new Error(`no dashboard JSON files in ${abs}`);
  return files.map((file) => {
    const json = fs.readFileSync(path.join(abs, file), "utf8");
    let parsed: { uid?: unknown; title?: unknown };
    try {
      parsed = JSON.parse(json);
    } catch (e) {
      throw new Error(`dashboard ${file} is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof parsed.uid !== "string" || typeof parsed.title !== "string") {
      throw new Error(`dashboard ${file} must have a string "uid" and "title"`);
    }
    return { file, uid: parsed.uid, title: parsed.title, json };
  });
}

/** The ServiceMonitor spec selecting the OTA role Services. */
export function otaServiceMonitorSpec(namespace: string) {
  return {
    selector: { matchLabels: { "app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/name": "ota" } },
    namespaceSelector: { matchNames: [namespace] },
    // job label = role name (vehicle-store, http-adapter, ...)
    jobLabel: "app.kubernetes.io/component",
    endpoints: [{ port: "http", path: "/metrics", interval: "15s", scrapeTimeout: "10s" }],
  };
}

/**
 * Alert rules over the platform's metrics. Thresholds are starting points to tune per fleet;
 * annotations avoid Go templates so the rules pass through Helm unchanged.
 */
export function otaAlertRules(namespace: string) {
  const sel = `namespace="${namespace}"`;
  const jobs = ROLES.join("|");
  return {
    groups: [
      {
        name: "ota.platform",
        rules: [
          {
            alert: "OtaTargetDown",
            expr: `up{${sel}, job=~"${jobs}"} == 0`,
            for: "5m",
            labels: { severity: "warning" },
            annotations: { summary: "An OTA pod has not been scraped for 5 minutes." },
          },
          {
            alert: "OtaRoleUnavailable",
            expr: `count by (job) (up{${sel}, job=~"${jobs}"} == 1) == 0`,
            for: "2m",
            labels: { severity: "critical" },
            annotations: { summary: "No pod of an OTA role is up." },
          },
          {
            alert: "OtaHttpServerErrors",
            expr:
              `sum by (route) (rate(ota_http_requests_total{${sel}, status=~"5.."}[5m]))` +
              ` / sum by (route) (rate(ota_http_requests_total{${sel}}[5m])) > 0.05`,
            for: "10m",
            labels: { severity: "warning" },
            annotations: { summary: "More than 5% of requests on an HTTP route fail with 5xx." },
          },
          {
            alert: "OtaHttpLatencyHigh",
            expr: `histogram_quantile(0.99, sum by (le, route) (rate(ota_http_request_duration_seconds_bucket{${sel}}[5m]))) > 1`,
            for: "10m",
            labels: { severity: "warning" },
            annotations: { summary: "p99 latency of an HTTP route is above 1s." },
          },
          {
            alert: "OtaGrpcErrors",
            expr:
              `sum by (service, method) (rate(ota_grpc_requests_total{${sel}, code!="Ok"}[5m]))` +
              ` / sum by (service, method) (rate(ota_grpc_requests_total{${sel}}[5m])) > 0.05`,
            for: "10m",
            labels: { severity: "warning" },
            annotations: { summary: "More than 5% of calls to a gRPC method fail." },
          },
          {
            alert: "OtaDbPoolExhausted",
            expr: `sum by (pod) (ota_db_pool_connections{${sel}, state="idle"}) == 0 and sum by (pod) (ota_db_pool_connections{${sel}, state="active"}) > 0`,
            for: "10m",
            labels: { severity: "warning" },
            annotations: { summary: "A pod has had no idle database connection for 10 minutes." },
          },
          {
            alert: "OtaAuthFailuresSpike",
            expr: `sum(rate(ota_auth_failures_total{${sel}}[5m])) > 5 * sum(rate(ota_auth_failures_total{${sel}}[1h] offset 1d))`,
            for: "15m",
            labels: { severity: "info" },
            annotations: { summary: "Authentication failures are five times yesterday's rate (credential problem or attack)." },
          },
        ],
      },
    ],
  };
}

export class Observability extends Construct {
  /** True when Prometheus operator CRDs are available (bundled stack or an existing one). */
  readonly monitoringCrds: boolean = true;
  /** Resources the rest of the region should wait for (CRDs installed). */
  readonly ready: ITerraformDependable[] = [];
  readonly dashboards: Dashboard[];

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const { config, region } = props;
    const ob = region.observability;
    const labels = commonLabels(region.name);

    const dashboardDeps: ITerraformDependable[] = [...props.dependsOn];
    if (ob.installPrometheusStack) {
      const ns = new NamespaceV1(this, "namespace", {
        metadata: { name: ob.namespace, labels },
      });
      // Stable address for targeted applies (docs/deploy.md: namespaces first, then Secrets).
      ns.overrideLogicalId("monitoring_namespace");
      const values = {
        fullnameOverride: "kps",
        grafana: {
          admin: { existingSecret: config.secrets.grafanaAdmin, userKey: "admin-user", passwordKey: "admin-password" },
          sidecar: {
            dashboards: {
              enabled: true,
              label: "grafana_dashboard",
              labelValue: "1",
              searchNamespace: "ALL",
              folderAnnotation: "grafana_folder",
              provider: { foldersFromFilesStructure: true },
            },
          },
        },
        prometheus: {
          prometheusSpec: {
            retention: ob.retention,
            // Select ServiceMonitors/PodMonitors/rules of every release, not only this one.
            serviceMonitorSelectorNilUsesHelmValues: false,
            podMonitorSelectorNilUsesHelmValues: false,
            ruleSelectorNilUsesHelmValues: false,
            externalLabels: { region: region.name },
          },
          additionalServiceMonitors: [{ name: "ota", ...otaServiceMonitorSpec(region.namespace) }],
        },
        additionalPrometheusRulesMap: { "ota-platform": otaAlertRules(region.namespace) },
      };
      const stack = new Release(this, "kube-prometheus-stack", {
        name: "kube-prometheus-stack",
        namespace: ob.namespace,
        repository: config.charts.kubePrometheusStack.repository,
        chart: config.charts.kubePrometheusStack.chart,
        version: config.charts.kubePrometheusStack.version,
        wait: true,
        timeout: 900,
        maxHistory: 10,
        values: [helmValues(deepMerge(values, ob.extraValues))],
        dependsOn: [ns, ...props.dependsOn],
      });
      this.ready.push(stack);
      dashboardDeps.push(ns);
    } else {
      // An existing Prometheus operator is expected in the cluster: register with it directly.
      new Manifest(this, "service-monitor", {
        manifest: {
          apiVersion: "monitoring.coreos.com/v1",
          kind: "ServiceMonitor",
          metadata: { name: "ota", namespace: region.namespace, labels },
          spec: otaServiceMonitorSpec(region.namespace),
        },
        dependsOn: props.dependsOn,
      });
      new Manifest(this, "prometheus-rule", {
        manifest: {
          apiVersion: "monitoring.coreos.com/v1",
          kind: "PrometheusRule",
          metadata: { name: "ota-platform", namespace: region.namespace, labels },
          spec: otaAlertRules(region.namespace),
        },
        dependsOn: props.dependsOn,
      });
    }

    this.dashboards = loadDashboards(ob.dashboardsDir);
    for (const d of this.dashboards) {
      new ConfigMapV1(this, `dashboard-${d.uid}`, {
        metadata: {
          name: k8sName("ota-dashboard", d.file.replace(/\.json$/, "")),
          namespace: ob.namespace,
          labels: { ...labels, grafana_dashboard: "1" },
          annotations: { grafana_folder: "OTA" },
        },
        // Dashboards use ${DS_PROMETHEUS}: escaped so Terraform keeps it literal.
        data: { [d.file]: terraformLiteral(d.json) },
        dependsOn: dashboardDeps,
      });
    }
  }
}
