import { Testing } from "cdktf";
import { DeploymentV1 } from "@cdktf/provider-kubernetes/lib/deployment-v1";
import { HorizontalPodAutoscalerV2 } from "@cdktf/provider-kubernetes/lib/horizontal-pod-autoscaler-v2";
import { IngressV1 } from "@cdktf/provider-kubernetes/lib/ingress-v1";
import { Manifest } from "@cdktf/provider-kubernetes/lib/manifest";
import { NamespaceV1 } from "@cdktf/provider-kubernetes/lib/namespace-v1";
import { PodDisruptionBudgetV1 } from "@cdktf/provider-kubernetes/lib/pod-disruption-budget-v1";
import { ServiceV1 } from "@cdktf/provider-kubernetes/lib/service-v1";
import { Release } from "@cdktf/provider-helm/lib/release";
import { PEER_ROLES, ROLES } from "../src/config";
import { OtaServices } from "../src/ota-services";
import { byName, config, containersOf, helmValues, resources, synthRegion } from "./support";

const cfg = config();
const synths = cfg.regions.map((r) => synthRegion(cfg, r.name));

describe.each(synths.map((s) => [s.region.name, s] as const))("region %s", (_name, s) => {
  const { region, text, json } = s;

  test.each([...ROLES])("deploys role %s: Deployment, Service, HPA, PDB", (role) => {
    expect(text).toHaveResourceWithProperties(DeploymentV1, {
      metadata: expect.objectContaining({ name: role, namespace: region.namespace }),
    });
    expect(text).toHaveResourceWithProperties(ServiceV1, {
      metadata: expect.objectContaining({ name: role }),
      spec: expect.objectContaining({
        port: [
          expect.objectContaining({ name: "http", port: 8080 }),
          expect.objectContaining({ name: "grpc", port: 50051 }),
        ],
      }),
    });
    expect(text).toHaveResourceWithProperties(HorizontalPodAutoscalerV2, {
      metadata: expect.objectContaining({ name: role }),
    });
    expect(text).toHaveResourceWithProperties(PodDisruptionBudgetV1, {
      metadata: expect.objectContaining({ name: role }),
      spec: expect.objectContaining({ max_unavailable: region.roles[role].pdbMaxUnavailable }),
    });

    const [container] = containersOf(byName(json, "kubernetes_deployment_v1", role));
    expect(container.args).toEqual(["serve", "--services", role]);
    expect(container.image).toBe(`${cfg.image.repository}:${region.imageTag}`);
  });

  test("has its namespace", () => {
    expect(text).toHaveResourceWithProperties(NamespaceV1, {
      metadata: expect.objectContaining({ name: region.namespace }),
    });
  });

  test("every Deployment container has readiness, liveness, requests and limits", () => {
    const deployments = resources(json, "kubernetes_deployment_v1");
    expect(deployments).toHaveLength(ROLES.length);
    for (const d of deployments) {
      for (const c of containersOf(d)) {
        expect(c.readiness_probe.http_get).toEqual({ path: "/readyz", port: "http" });
        expect(c.liveness_probe.http_get).toEqual({ path: "/healthz", port: "http" });
        expect(c.resources.requests).toEqual({ cpu: expect.any(String), memory: expect.any(String) });
        expect(c.resources.limits).toEqual({ cpu: expect.any(String), memory: expect.any(String) });
        expect(c.security_context).toMatchObject({ run_as_non_root: true, read_only_root_filesystem: true });
      }
    }
    for (const j of resources(json, "kubernetes_job_v1")) {
      for (const c of containersOf(j)) {
        expect(c.resources.limits).toEqual({ cpu: expect.any(String), memory: expect.any(String) });
      }
    }
  });

  test("replicas and HPA bounds follow the config", () => {
    for (const role of ROLES) {
      const s = region.roles[role];
      const d = byName(json, "kubernetes_deployment_v1", role);
      expect(d.spec.replicas).toBe(String(s.replicas));
      // The HPA owns the count after creation.
      expect(d.lifecycle.ignore_changes).toContain("spec[0].replicas");
      const hpa = byName(json, "kubernetes_horizontal_pod_autoscaler_v2", role);
      expect(hpa.spec.min_replicas).toBe(s.minReplicas);
      expect(hpa.spec.max_replicas).toBe(s.maxReplicas);
      expect(hpa.spec.scale_target_ref).toEqual({ api_version: "apps/v1", kind: "Deployment", name: role });
      expect(hpa.spec.metric[0].resource.target.average_utilization).toBe(s.targetCpuUtilization);
      const [c] = containersOf(d);
      expect(c.resources.requests).toEqual(s.requests);
      expect(c.resources.limits).toEqual(s.limits);
    }
  });

  test("rollouts never drop capacity and drain before SIGTERM", () => {
    for (const role of ROLES) {
      const d = byName(json, "kubernetes_deployment_v1", role);
      expect(d.spec.strategy).toEqual({ type: "RollingUpdate", rolling_update: { max_unavailable: "0", max_surge: "25%" } });
      const s = region.roles[role];
      expect(d.spec.template.spec.termination_grace_period_seconds).toBe(s.terminationGracePeriodSeconds);
      const [c] = containersOf(d);
      expect(c.lifecycle.pre_stop[0].exec.command).toEqual(["sleep", String(s.preStopSleepSeconds)]);
    }
  });

  test("the ConfigMap carries listen addresses, broker URL, peer addresses and the allocator setting", () => {
    const cm = byName(json, "kubernetes_config_map_v1", "ota-config");
    expect(cm.data).toMatchObject({
      OTA_HTTP_ADDR: "0.0.0.0:8080",
      OTA_GRPC_ADDR: "0.0.0.0:50051",
      OTA_DATA_DIR: "/var/lib/ota",
      OTA_MQTT_URL: `mqtt://ota-emqx.${region.namespace}.svc.cluster.local:1883`,
      _RJEM_MALLOC_CONF: "thp:default",
      OTA_PEERS__VEHICLE_STORE: `http://vehicle-store.${region.namespace}.svc.cluster.local:50051`,
      OTA_PEERS__RULE_ENGINE: `http://rule-engine.${region.namespace}.svc.cluster.local:50051`,
      OTA_PEERS__STAGING: `http://staging.${region.namespace}.svc.cluster.local:50051`,
      OTA_PEERS__CAMPAIGN_MANAGER: `http://campaign-manager.${region.namespace}.svc.cluster.local:50051`,
    });
    expect(Object.keys(cm.data).filter((k) => k.startsWith("OTA_PEERS__"))).toHaveLength(PEER_ROLES.length);
    for (const d of resources(json, "kubernetes_deployment_v1")) {
      expect(containersOf(d)[0].env_from).toEqual([{ config_map_ref: { name: "ota-config" } }]);
    }
  });

  test("secrets are referenced, never inlined", () => {
    for (const d of [...resources(json, "kubernetes_deployment_v1"), ...resources(json, "kubernetes_job_v1")]) {
      const env: any[] = containersOf(d)[0].env;
      const get = (name: string) => env.find((e) => e.name === name);
      expect(get("OTA_DATABASE_URL").value_from.secret_key_ref).toEqual({ name: "ota-pg-app", key: "uri" });
      expect(get("REDIS_PASSWORD").value_from.secret_key_ref).toEqual({ name: cfg.secrets.redis, key: "password" });
      expect(get("OTA_MQTT_USERNAME").value_from.secret_key_ref).toEqual({ name: cfg.secrets.mqtt, key: "username" });
      expect(get("OTA_MQTT_PASSWORD").value_from.secret_key_ref).toEqual({ name: cfg.secrets.mqtt, key: "password" });
      // The Redis URL is assembled by Kubernetes from the secret-backed variable.
      expect(get("OTA_REDIS_URL").value).toBe(
        `redis://:$(REDIS_PASSWORD)@ota-redis-master.${region.namespace}.svc.cluster.local:6379/0`,
      );
      for (const e of env) {
        if (/PASSWORD|SECRET|TOKEN|DATABASE_URL/.test(e.name)) {
          expect(e.value).toBeUndefined();
          expect(e.value_from.secret_key_ref).toBeDefined();
        }
      }
    }
  });

  test("stateful services come from pinned Helm charts", () => {
    const charts = resources(json, "helm_release").map((r) => `${r.chart}@${r.version}`);
    for (const ref of [cfg.charts.cnpgOperator, cfg.charts.cnpgCluster, cfg.charts.redis, cfg.charts.emqx]) {
      expect(charts).toContain(`${ref.chart}@${ref.version}`);
    }
    const pg = helmValues(byName(json, "helm_release", "ota-pg"));
    expect(pg.cluster.instances).toBe(region.postgres.instances);
    expect(pg.cluster.initdb).toEqual({ database: region.postgres.database, owner: region.postgres.owner });
    const redis = helmValues(byName(json, "helm_release", "ota-redis"));
    expect(redis.auth).toEqual({ enabled: true, existingSecret: cfg.secrets.redis, existingSecretPasswordKey: "password" });
    expect(redis.commonConfiguration).toContain("appendonly yes");
    expect(redis.commonConfiguration).toContain("maxmemory-policy noeviction");
  });

  test("EMQX authenticates and authorizes through the http-adapter, with shared subscriptions", () => {
    const release = byName(json, "helm_release", "ota-emqx");
    // Placeholders reach EMQX literally: escaped for Terraform in the synthesized JSON.
    expect(release.values[0]).toContain('"clientid": "$${clientid}"');
    expect(release.values[0]).not.toMatch(/[^$]\$\{clientid\}/);

    const v = helmValues(release);
    const base = `http://http-adapter.${region.namespace}.svc.cluster.local:8080`;
    const emqx = v.emqxConfig;
    const [superusers, http] = emqx.EMQX_AUTHENTICATION;
    expect(superusers).toMatchObject({ backend: "built_in_database", bootstrap_type: "plain" });
    expect(http).toMatchObject({
      mechanism: "password_based",
      backend: "http",
      method: "post",
      url: `${base}/v1/mqtt/auth`,
      body: { clientid: "${clientid}", username: "${username}", password: "${password}" },
    });
    expect(emqx.EMQX_AUTHORIZATION__SOURCES[0]).toMatchObject({
      type: "http",
      method: "post",
      url: `${base}/v1/mqtt/acl`,
      body: { clientid: "${clientid}", username: "${username}", topic: "${topic}", action: "${action}" },
    });
    expect(emqx.EMQX_AUTHORIZATION__NO_MATCH).toBe("deny");
    expect(emqx.EMQX_MQTT__SHARED_SUBSCRIPTION).toBe("true");
    // Room for the adapter's many reports in progress (EMQX's default is 32).
    expect(Number(emqx.EMQX_MQTT__MAX_INFLIGHT)).toBeGreaterThanOrEqual(1024);
    expect(emqx.EMQX_MQTT__SESSION_EXPIRY_INTERVAL).toBe(region.emqx.sessionExpiry);
    // The chart's well-known default password is removed; the value comes from a Secret.
    expect(emqx.EMQX_DASHBOARD__DEFAULT_PASSWORD).toBeNull();
    expect(v.envFromSecret).toBe(cfg.secrets.emqxDashboard);
    expect(v.replicaCount).toBe(region.emqx.replicas);
    // The adapter's superuser is written from the Secret by an init container.
    const init = v.initContainers[0];
    expect(init.env.map((e: any) => e.valueFrom.secretKeyRef)).toEqual([
      { name: cfg.secrets.mqtt, key: "username" },
      { name: cfg.secrets.mqtt, key: "password" },
    ]);
  });

  test("Prometheus scrapes every role and Grafana gets the dashboards", () => {
    const kps = byName(json, "helm_release", "kube-prometheus-stack");
    expect(kps.chart).toBe("kube-prometheus-stack");
    const v = helmValues(kps);
    expect(v.prometheus.additionalServiceMonitors[0]).toMatchObject({
      selector: { matchLabels: { "app.kubernetes.io/part-of": "ota", "app.kubernetes.io/name": "ota" } },
      namespaceSelector: { matchNames: [region.namespace] },
      endpoints: [expect.objectContaining({ port: "http", path: "/metrics" })],
    });
    expect(v.grafana.admin.existingSecret).toBe(cfg.secrets.grafanaAdmin);
    for (const d of resources(json, "kubernetes_deployment_v1")) {
      expect(d.spec.template.metadata.annotations).toMatchObject({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
      });
    }
    const dashboards = resources(json, "kubernetes_config_map_v1").filter((c) => c.metadata.labels?.grafana_dashboard === "1");
    expect(dashboards.map((c) => Object.keys(c.data)[0]).sort()).toEqual(["ota-platform.json", "ota-rollout.json"]);
    for (const c of dashboards) {
      expect(c.metadata.namespace).toBe(region.observability.namespace);
      const content: string = Object.values(c.data)[0] as string;
      expect(content).toContain("$${DS_PROMETHEUS}");
      expect(JSON.parse(content.replace(/\$\$\{/g, "${")).uid).toMatch(/^ota-/);
    }
  });

  test("vehicle API and DDI are behind the region's Ingress; broker callbacks are not", () => {
    const ing = byName(json, "kubernetes_ingress_v1", "ota-vehicle");
    const [rule] = ing.spec.rule;
    expect(rule.host).toBe(region.hosts.vehicle);
    const paths = rule.http.path.map((p: any) => [p.path, p.backend.service.name]);
    expect(paths).toEqual(
      expect.arrayContaining([
        ["/v1/vehicles", "http-adapter"],
        ["/default/controller/v1", "http-adapter"],
      ]),
    );
    expect(paths.map((p: string[]) => p[0])).not.toContain("/v1/mqtt");
    expect(paths.map((p: string[]) => p[0])).not.toContain("/");
    expect(ing.spec.tls[0].hosts).toEqual([region.hosts.vehicle]);
    expect(text).toHaveResourceWithProperties(IngressV1, {
      metadata: expect.objectContaining({ name: "ota-management" }),
    });
  });

  test("migrations run as a Job before the Deployments roll", () => {
    const jobs = resources(json, "kubernetes_job_v1");
    expect(jobs).toHaveLength(1);
    const job = jobs[0];
    expect(job.metadata.name).toBe(`ota-migrate-${region.imageTag.replace(/\./g, "-")}`);
    expect(job.wait_for_completion).toBe(true);
    expect(containersOf(job)[0].args).toEqual(region.migrations.args);
    const jobRef = Object.keys(json.resource.kubernetes_job_v1)[0];
    for (const d of resources(json, "kubernetes_deployment_v1")) {
      expect(d.depends_on).toContain(`kubernetes_job_v1.${jobRef}`);
    }
  });

  test("no secret literal appears anywhere in the synthesized JSON", () => {
    expect(secretLiterals(json)).toEqual([]);
  });

  test("every ${ is either escaped or a Terraform reference", () => {
    const unescaped = text.match(/(?<!\$)\$\{[^}]*\}/g) ?? [];
    for (const ref of unescaped) {
      expect(ref).toMatch(/^\$\{(kubernetes|helm)_[a-z0-9_]+\.[A-Za-z0-9_-]+\.[a-z_\[\]0-9.]+\}$/);
    }
  });

  test("the state backend is configured", () => {
    expect(json.terraform.backend.kubernetes).toEqual({
      secret_suffix: `ota-${region.name}`,
      namespace: "kube-system",
      config_path: region.kubernetes.configPath,
      config_context: region.kubernetes.context,
    });
    expect(text).toHaveProviderWithProperties(
      require("@cdktf/provider-kubernetes/lib/provider").KubernetesProvider,
      { config_context: region.kubernetes.context },
    );
  });
});

/**
 * Finds secret-looking literals: credentials in URLs, `password=` pairs, secret-named env vars or
 * Helm values that carry a value. Returns human-readable findings.
 */
function secretLiterals(json: any): string[] {
  const text = JSON.stringify(json);
  const findings: string[] = [];
  const patterns: [string, RegExp][] = [
    ["credentials in a postgres URL", /postgres(ql)?:\/\/[^\s"/@:]+:[^\s"@]+@/],
    ["credentials in a redis URL", /rediss?:\/\/[^\s"/@]*:(?!\$\()[^\s"@]+@/],
    ["credentials in an mqtt URL", /mqtts?:\/\/[^\s"/@]+:[^\s"@]+@/],
    ["password= pair", /password=(?!\$)/i],
    ["private key", /-----BEGIN [A-Z ]*PRIVATE KEY-----/],
    ["well-known default password", /"(public|prom-operator|admin123|changeme)"/],
  ];
  for (const [what, re] of patterns) {
    const m = re.exec(text);
    if (m) findings.push(`${what}: ${m[0]}`);
  }
  // Helm values: any password/secret/token-named key must be null or an EMQX placeholder.
  for (const release of Object.values<any>(json.resource?.helm_release ?? {})) {
    walk(JSON.parse(release.values[0].replace(/\$\$\{/g, "${")), (key, value) => {
      if (/^(password|pass|pwd|token|secret|secretKey|accessKey|adminPassword)$|_PASSWORD$|_TOKEN$/i.test(key)) {
        if (value !== null && !(typeof value === "string" && /^\$\{[a-z_]+\}$/.test(value))) {
          findings.push(`helm value ${release.name}.${key} = ${JSON.stringify(value)}`);
        }
      }
    });
  }
  return findings;
}

function walk(v: any, visit: (key: string, value: any) => void): void {
  if (Array.isArray(v)) v.forEach((x) => walk(x, visit));
  else if (v && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) {
      visit(k, x);
      walk(x, visit);
    }
  }
}

describe("the secret scanner itself", () => {
  test("flags planted secrets", () => {
    const planted = config((raw) => {
      raw.defaults.redis.extraValues = { auth: { password: "hunter2" } };
      raw.defaults.observability.otlpEndpoint = "http://otel:4318";
    });
    const { json } = synthRegion(planted);
    expect(secretLiterals(json)).toEqual([expect.stringContaining('ota-redis.password = "hunter2"')]);
    expect(secretLiterals({ x: "postgres://ota:s3cret@db:5432/ota" })).toHaveLength(1);
    expect(secretLiterals({ x: "redis://:pw@redis:6379" })).toHaveLength(1);
    expect(secretLiterals({ x: "redis://:$(REDIS_PASSWORD)@redis:6379" })).toHaveLength(0);
    expect(secretLiterals({ x: "host=db password=abc" })).toHaveLength(1);
  });
});

describe("configuration variants", () => {
  test("with an existing Prometheus operator: ServiceMonitor and PrometheusRule, no bundled stack", () => {
    const cfg2 = config((raw) => {
      raw.defaults.observability.installPrometheusStack = false;
    });
    const { text, json } = synthRegion(cfg2);
    expect(resources(json, "helm_release").map((r) => r.name)).not.toContain("kube-prometheus-stack");
    expect(text).toHaveResourceWithProperties(Manifest, {
      manifest: expect.objectContaining({ kind: "ServiceMonitor" }),
    });
    expect(text).toHaveResourceWithProperties(Manifest, {
      manifest: expect.objectContaining({ kind: "PrometheusRule" }),
    });
  });

  test("without shared storage, migrations or a management host", () => {
    const cfg2 = config((raw) => {
      for (const r of raw.regions) {
        delete r.sharedData;
        delete r.hosts.management;
      }
      raw.defaults.migrations.enabled = false;
      raw.defaults.stateBackend = { type: "local" };
      raw.defaults.postgres.installOperator = false;
    });
    const { json, text } = synthRegion(cfg2);
    expect(resources(json, "kubernetes_job_v1")).toHaveLength(0);
    expect(resources(json, "kubernetes_persistent_volume_claim_v1")).toHaveLength(0);
    expect(resources(json, "kubernetes_ingress_v1").map((i) => i.metadata.name)).toEqual(["ota-vehicle"]);
    expect(resources(json, "helm_release").map((r) => r.name)).not.toContain("cnpg");
    const vol = byName(json, "kubernetes_deployment_v1", "rest").spec.template.spec.volume[0];
    expect(vol.empty_dir).toBeDefined();
    expect(json.terraform.backend).toBeUndefined();
    expect(text).toHaveResource(Release);
  });

  test("the services construct can be synthesized on its own", () => {
    const region = cfg.regions[0];
    const synthesized = Testing.synthScope((scope) => {
      new OtaServices(scope, "ota", {
        config: cfg,
        region,
        databaseUrl: { name: "db", key: "uri" },
        redisAddress: "redis:6379",
        redisPassword: { name: "redis", key: "password" },
        mqttUrl: "mqtt://broker:1883",
        dependsOn: [],
      });
    });
    for (const role of ROLES) {
      expect(synthesized).toHaveResourceWithProperties(DeploymentV1, { metadata: expect.objectContaining({ name: role }) });
    }
  });
});
