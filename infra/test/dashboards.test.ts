import * as fs from "fs";
import * as path from "path";
import { loadDashboards } from "../src/observability";

/**
 * The metrics the services export: `ota describe`'s list (checked in as ota-describe.json, kept
 * equal to the binary by services/ota/tests/describe.rs; docs/metrics.md documents it).
 */
const contract: { metrics: { name: string; type: string }[] } = JSON.parse(
  fs.readFileSync(path.join(__dirname, "..", "ota-describe.json"), "utf8"),
);
const KNOWN_METRICS = new Set(contract.metrics.map((m) => m.name));

const dashboards = loadDashboards("../dashboards");

function panelsOf(d: any): any[] {
  return d.panels.flatMap((p: any) => [p, ...(p.panels ?? [])]);
}

function metricsIn(expr: string): string[] {
  return (expr.match(/\b(ota|process)_[a-z_]+/g) ?? []).map((m) => m.replace(/_(bucket|sum|count)$/, ""));
}

test("both dashboards are present", () => {
  expect(dashboards.map((d) => d.file)).toEqual(["ota-platform.json", "ota-rollout.json"]);
  expect(dashboards.map((d) => d.uid)).toEqual(["ota-platform", "ota-rollout"]);
});

describe.each(dashboards.map((d) => [d.file, d] as const))("%s", (_file, d) => {
  const json = JSON.parse(d.json);

  test("has uid, title and a Prometheus datasource variable", () => {
    expect(json.title).toMatch(/^OTA /);
    const ds = json.templating.list.find((v: any) => v.name === "DS_PROMETHEUS");
    expect(ds).toMatchObject({ type: "datasource", query: "prometheus" });
  });

  test("every query uses the datasource variable and known metric names", () => {
    const queries = panelsOf(json).filter((p) => p.type !== "row");
    expect(queries.length).toBeGreaterThan(5);
    const ids = new Set<number>();
    for (const p of queries) {
      expect(p.datasource).toEqual({ type: "prometheus", uid: "${DS_PROMETHEUS}" });
      expect(ids.has(p.id)).toBe(false);
      ids.add(p.id);
      expect(p.gridPos).toEqual(expect.objectContaining({ w: expect.any(Number), h: expect.any(Number) }));
      for (const t of p.targets) {
        expect(t.datasource.uid).toBe("${DS_PROMETHEUS}");
        const names = metricsIn(t.expr);
        expect(names.length).toBeGreaterThan(0);
        for (const n of names) expect(KNOWN_METRICS).toContain(n);
      }
    }
  });
});

test("the platform dashboard covers the platform's metrics, the rollout dashboard the fleet's", () => {
  const used = (file: string) =>
    new Set(
      panelsOf(JSON.parse(dashboards.find((d) => d.file === file)!.json))
        .flatMap((p) => p.targets ?? [])
        .flatMap((t: any) => metricsIn(t.expr)),
    );
  const platform = used("ota-platform.json");
  for (const m of [
    "ota_http_requests_total",
    "ota_http_request_duration_seconds",
    "ota_grpc_requests_total",
    "ota_grpc_request_duration_seconds",
    "ota_vehicles_imported_total",
    "ota_vehicle_store_op_duration_seconds",
    "ota_db_pool_connections",
    "ota_auth_failures_total",
    "ota_outbox_pending",
    "ota_bus_pending_events",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
  ]) {
    expect(platform).toContain(m);
  }
  const rollout = used("ota-rollout.json");
  for (const m of [
    "ota_campaign_actions",
    "ota_campaign_failure_threshold",
    "ota_poll_requests_total",
    "ota_status_reports_total",
    "ota_staged_vehicles",
    "ota_staging_lag_seconds",
    "ota_staging_queue_depth",
    "ota_staging_reconcile_repaired_total",
    "ota_last_seen_batches_total",
    "ota_mqtt_connections",
  ]) {
    expect(rollout).toContain(m);
  }
});
