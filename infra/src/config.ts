/**
 * Typed loading and validation of the deployment configuration
 * (`config/regions.json` by default, `OTA_INFRA_CONFIG` to point elsewhere).
 *
 * The file has three parts:
 *  - `image` and `charts`: the same for every region (one image, pinned chart versions);
 *  - `defaults`: region settings shared by all regions (role sizes, Postgres/Redis/EMQX sizes, ...);
 *  - `regions`: one entry per deployment region; each entry is deep-merged over `defaults`
 *    (objects merge key by key, arrays and scalars replace).
 *
 * Validation collects every problem and reports each with the path of the offending field,
 * e.g. `regions[1](us-east).roles.http-adapter.maxReplicas: must be >= minReplicas (6), got 4`.
 * Secrets never belong in this file: it only names the Kubernetes Secrets to reference.
 */
import * as fs from "fs";
import * as path from "path";

/** The service roles of the `ota` binary (`ota serve --services <role>`). */
export const ROLES = [
  "vehicle-store",
  "rule-engine",
  "staging",
  "campaign-manager",
  "http-adapter",
  "mqtt-adapter",
  "rest",
] as const;
export type Role = (typeof ROLES)[number];

/** Roles that are gRPC services other roles call (peer addresses go into the ConfigMap). */
export const PEER_ROLES: readonly Role[] = ["vehicle-store", "rule-engine", "staging", "campaign-manager"];

export interface ResourceQuantities {
  cpu: string;
  memory: string;
}

export interface RoleSettings {
  /** Replicas at creation; afterwards the HPA owns the replica count. */
  replicas: number;
  minReplicas: number;
  maxReplicas: number;
  /** HPA target: average CPU utilisation in percent of the request. */
  targetCpuUtilization: number;
  requests: ResourceQuantities;
  limits: ResourceQuantities;
  /** Seconds Kubernetes waits after SIGTERM before SIGKILL; covers preStop sleep + drain. */
  terminationGracePeriodSeconds: number;
  /** preStop sleep, so endpoints/load balancers stop sending traffic before SIGTERM. */
  preStopSleepSeconds: number;
  /** PodDisruptionBudget maxUnavailable ("1" or a percentage such as "10%"). */
  pdbMaxUnavailable: string;
}

export interface ChartRef {
  repository: string;
  chart: string;
  version: string;
}

export interface ChartsConfig {
  cnpgOperator: ChartRef;
  cnpgCluster: ChartRef;
  redis: ChartRef;
  emqx: ChartRef;
  kubePrometheusStack: ChartRef;
}

export interface ImageConfig {
  repository: string;
  pullPolicy: "Always" | "IfNotPresent";
  /** Optional image pull secret (a docker-registry Secret in the region namespace). */
  pullSecret?: string;
}

/** Names of Kubernetes Secrets the operator creates before deploying (values never live here). */
export interface SecretNames {
  /** key `password`: Redis password (URL-safe, e.g. `openssl rand -hex 32`). */
  redis: string;
  /** keys `username`, `password`: the MQTT adapter's superuser account on EMQX. */
  mqtt: string;
  /** key `EMQX_DASHBOARD__DEFAULT_PASSWORD`: EMQX dashboard admin password. */
  emqxDashboard: string;
  /** keys `admin-user`, `admin-password`: Grafana admin (only with the bundled Prometheus stack). */
  grafanaAdmin: string;
}

export interface IngressConfig {
  className: string;
  /** Ingress class for the management host (an internal class keeps the admin API off the internet). */
  managementClassName: string;
  tlsSecretName?: string;
  managementTlsSecretName?: string;
  annotations: Record<string, string>;
  /** Path prefixes of the vehicle API routed to the http-adapter. */
  vehiclePathPrefixes: string[];
  /** hawkBit DDI tenants; each gets `/{tenant}/controller/v1` routed to the http-adapter. */
  ddiTenants: string[];
}

export interface HostsConfig {
  /** Vehicle API + DDI host for this region (vehicles are provisioned with it). */
  vehicle: string;
  /** Management REST API + dashboard host (optional). */
  management?: string;
  /** MQTT broker host name (DNS record pointing at the EMQX load balancer). */
  mqtt: string;
}

export interface RoutingConfig {
  /**
   * World manufacturer identifiers (first three VIN characters) whose vehicles are provisioned
   * for this region. Informational: VINs are not allocated per region, so routing is by DNS
   * (each vehicle gets its region's host at provisioning); an edge router may use this table
   * to redirect a vehicle that calls the wrong region.
   */
  wmiPrefixes: string[];
  notes: string;
}

export interface PostgresConfig {
  installOperator: boolean;
  operatorNamespace: string;
  instances: number;
  postgresVersion: string;
  storageSize: string;
  storageClass?: string;
  database: string;
  owner: string;
  maxConnections: number;
  requests: ResourceQuantities;
  limits: ResourceQuantities;
  extraValues: Record<string, unknown>;
}

export interface RedisConfig {
  replicas: number;
  storageSize: string;
  storageClass?: string;
  requests: ResourceQuantities;
  limits: ResourceQuantities;
  extraValues: Record<string, unknown>;
}

export interface EmqxConfig {
  replicas: number;
  storageSize: string;
  storageClass?: string;
  /** MQTT session expiry for persistent (clean_start=false) vehicle sessions, e.g. "7d". */
  sessionExpiry: string;
  maxMqueueLen: number;
  serviceType: "LoadBalancer" | "ClusterIP" | "NodePort";
  serviceAnnotations: Record<string, string>;
  requests: ResourceQuantities;
  limits: ResourceQuantities;
  extraValues: Record<string, unknown>;
}

export interface ObservabilityConfig {
  /** Install kube-prometheus-stack (Prometheus operator, Prometheus, Grafana) in this cluster. */
  installPrometheusStack: boolean;
  namespace: string;
  retention: string;
  /** Directory of Grafana dashboard JSON files, relative to the infra directory. */
  dashboardsDir: string;
  otlpEndpoint?: string;
  logFilter: string;
  extraValues: Record<string, unknown>;
}

export interface SharedDataConfig {
  /** A ReadWriteMany storage class (EFS, Filestore, Azure Files, NFS...). */
  storageClassName: string;
  size: string;
}

export type StateBackendConfig = { type: "local" } | { type: "kubernetes"; namespace: string };

export interface MigrationsConfig {
  enabled: boolean;
  /** Arguments to the `ota` entrypoint for the migration Job. */
  args: string[];
}

export interface RegionConfig {
  name: string;
  kubernetes: { configPath: string; context: string };
  namespace: string;
  imageTag: string;
  /** Value of the vehicle inventory field `region` served by this deployment (e.g. "EU"). */
  inventoryRegion: string;
  hosts: HostsConfig;
  ingress: IngressConfig;
  routing: RoutingConfig;
  roles: Record<Role, RoleSettings>;
  postgres: PostgresConfig;
  redis: RedisConfig;
  emqx: EmqxConfig;
  observability: ObservabilityConfig;
  sharedData?: SharedDataConfig;
  stateBackend: StateBackendConfig;
  migrations: MigrationsConfig;
}

export interface PlatformConfig {
  image: ImageConfig;
  charts: ChartsConfig;
  secrets: SecretNames;
  regions: RegionConfig[];
}

/** Raised for an invalid configuration; `issues` lists every problem with its field path. */
export class ConfigError extends Error {
  readonly issues: string[];
  constructor(source: string, issues: string[]) {
    super(`invalid infra configuration (${source}):\n${issues.map((i) => `  - ${i}`).join("\n")}`);
    this.name = "ConfigError";
    this.issues = issues;
  }
}

// ---------------------------------------------------------------------------------------------
// Locating files

/** The infra directory (the one holding cdktf.json), found from this file's location. */
export function infraRoot(start: string = __dirname): string {
  let dir = start;
  for (;;) {
    if (fs.existsSync(path.join(dir, "cdktf.json"))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cdktf.json not found above ${start}`);
    dir = parent;
  }
}

export function defaultConfigPath(): string {
  const fromEnv = process.env.OTA_INFRA_CONFIG;
  if (fromEnv) return path.resolve(fromEnv);
  return path.join(infraRoot(), "config", "regions.json");
}

export function loadConfig(file: string = defaultConfigPath()): PlatformConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError(file, [`cannot read file: ${(e as Error).message}`]);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(file, [`not valid JSON: ${(e as Error).message}`]);
  }
  return parseConfig(raw, file);
}

// ---------------------------------------------------------------------------------------------
// Validation helpers

type Json = Record<string, unknown>;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const HOSTNAME = /^(?=.{1,253}$)([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$/;
const CPU = /^(\d+(\.\d+)?|\d+m)$/;
const MEMORY = /^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$/;
const STORAGE = /^\d+(Mi|Gi|Ti)$/;
const IMAGE_TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DURATION = /^\d+(ms|s|m|h|d|w)$/;
const PERCENT_OR_INT = /^(\d+|\d{1,3}%)$/;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Deep merge: objects merge recursively, anything else in `over` replaces `base`. */
export function deepMerge(base: unknown, over: unknown): unknown {
  if (over === undefined) return structuredClone(base);
  if (isObject(base) && isObject(over)) {
    const out: Json = structuredClone(base);
    for (const [k, v] of Object.entries(over)) out[k] = deepMerge(base[k], v);
    return out;
  }
  return structuredClone(over);
}

class Checker {
  readonly issues: string[] = [];

  add(p: string, msg: string): void {
    this.issues.push(`${p}: ${msg}`);
  }

  object(v: unknown, p: string, allowed: readonly string[]): Json {
    if (!isObject(v)) {
      this.add(p, `must be an object, got ${describe(v)}`);
      return {};
    }
    for (const k of Object.keys(v)) {
      if (!allowed.includes(k)) this.add(`${p}.${k}`, `unknown field (allowed: ${allowed.join(", ")})`);
    }
    return v;
  }

  string(v: unknown, p: string, pattern?: RegExp, hint?: string): string {
    if (typeof v !== "string" || v.length === 0) {
      this.add(p, `must be a non-empty string, got ${describe(v)}`);
      return "";
    }
    if (pattern && !pattern.test(v)) this.add(p, `invalid value ${JSON.stringify(v)}${hint ? ` (${hint})` : ""}`);
    return v;
  }

  optString(v: unknown, p: string, pattern?: RegExp, hint?: string): string | undefined {
    if (v === undefined) return undefined;
    return this.string(v, p, pattern, hint);
  }

  int(v: unknown, p: string, min: number, max: number): number {
    if (typeof v !== "number" || !Number.isInteger(v)) {
      this.add(p, `must be an integer, got ${describe(v)}`);
      return min;
    }
    if (v < min || v > max) this.add(p, `must be between ${min} and ${max}, got ${v}`);
    return v;
  }

  bool(v: unknown, p: string): boolean {
    if (typeof v !== "boolean") {
      this.add(p, `must be true or false, got ${describe(v)}`);
      return false;
    }
    return v;
  }

  stringArray(v: unknown, p: string, pattern?: RegExp, hint?: string, allowEmpty = true): string[] {
    if (!Array.isArray(v)) {
      this.add(p, `must be an array of strings, got ${describe(v)}`);
      return [];
    }
    if (!allowEmpty && v.length === 0) this.add(p, "must not be empty");
    return v.map((item, i) => this.string(item, `${p}[${i}]`, pattern, hint));
  }

  stringMap(v: unknown, p: string): Record<string, string> {
    if (v === undefined) return {};
    if (!isObject(v)) {
      this.add(p, `must be an object of strings, got ${describe(v)}`);
      return {};
    }
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(v)) {
      if (typeof val !== "string") this.add(`${p}.${k}`, `must be a string, got ${describe(val)}`);
      else out[k] = val;
    }
    return out;
  }

  freeObject(v: unknown, p: string): Record<string, unknown> {
    if (v === undefined) return {};
    if (!isObject(v)) {
      this.add(p, `must be an object, got ${describe(v)}`);
      return {};
    }
    return v;
  }

  oneOf<T extends string>(v: unknown, p: string, options: readonly T[]): T {
    if (typeof v !== "string" || !options.includes(v as T)) {
      this.add(p, `must be one of ${options.join(", ")}, got ${describe(v)}`);
      return options[0];
    }
    return v as T;
  }
}

function describe(v: unknown): string {
  if (v === undefined) return "nothing (field missing)";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** CPU quantity in millicores. */
export function cpuMillis(q: string): number {
  return q.endsWith("m") ? Number(q.slice(0, -1)) : Number(q) * 1000;
}

/** Memory quantity in bytes. */
export function memoryBytes(q: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q);
  if (!m) return NaN;
  const factor: Record<string, number> = {
    "": 1,
    Ki: 1024,
    Mi: 1024 ** 2,
    Gi: 1024 ** 3,
    Ti: 1024 ** 4,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
  };
  return Number(m[1]) * factor[m[2] ?? ""];
}

function quantities(c: Checker, v: unknown, p: string): ResourceQuantities {
  const o = c.object(v, p, ["cpu", "memory"]);
  return {
    cpu: c.string(o.cpu, `${p}.cpu`, CPU, 'CPU quantity such as "500m" or "2"'),
    memory: c.string(o.memory, `${p}.memory`, MEMORY, 'memory quantity such as "512Mi" or "2Gi"'),
  };
}

function requestsWithinLimits(c: Checker, p: string, req: ResourceQuantities, lim: ResourceQuantities): void {
  if (CPU.test(req.cpu) && CPU.test(lim.cpu) && cpuMillis(req.cpu) > cpuMillis(lim.cpu)) {
    c.add(`${p}.limits.cpu`, `must be >= requests.cpu (${req.cpu}), got ${lim.cpu}`);
  }
  if (MEMORY.test(req.memory) && MEMORY.test(lim.memory) && memoryBytes(req.memory) > memoryBytes(lim.memory)) {
    c.add(`${p}.limits.memory`, `must be >= requests.memory (${req.memory}), got ${lim.memory}`);
  }
}

const ROLE_FIELDS = [
  "replicas",
  "minReplicas",
  "maxReplicas",
  "targetCpuUtilization",
  "requests",
  "limits",
  "terminationGracePeriodSeconds",
  "preStopSleepSeconds",
  "pdbMaxUnavailable",
] as const;

function roleSettings(c: Checker, v: unknown, p: string): RoleSettings {
  const o = c.object(v, p, ROLE_FIELDS);
  const s: RoleSettings = {
    replicas: c.int(o.replicas, `${p}.replicas`, 1, 10000),
    minReplicas: c.int(o.minReplicas, `${p}.minReplicas`, 1, 10000),
    maxReplicas: c.int(o.maxReplicas, `${p}.maxReplicas`, 1, 10000),
    targetCpuUtilization: c.int(o.targetCpuUtilization, `${p}.targetCpuUtilization`, 10, 100),
    requests: quantities(c, o.requests, `${p}.requests`),
    limits: quantities(c, o.limits, `${p}.limits`),
    terminationGracePeriodSeconds: c.int(o.terminationGracePeriodSeconds, `${p}.terminationGracePeriodSeconds`, 1, 3600),
    preStopSleepSeconds: c.int(o.preStopSleepSeconds, `${p}.preStopSleepSeconds`, 0, 300),
    pdbMaxUnavailable: c.string(o.pdbMaxUnavailable, `${p}.pdbMaxUnavailable`, PERCENT_OR_INT, 'an integer or a percentage such as "10%"'),
  };
  if (s.minReplicas > s.maxReplicas) {
    c.add(`${p}.maxReplicas`, `must be >= minReplicas (${s.minReplicas}), got ${s.maxReplicas}`);
  } else if (s.replicas < s.minReplicas || s.replicas > s.maxReplicas) {
    c.add(`${p}.replicas`, `must be between minReplicas (${s.minReplicas}) and maxReplicas (${s.maxReplicas}), got ${s.replicas}`);
  }
  if (s.preStopSleepSeconds >= s.terminationGracePeriodSeconds) {
    c.add(
      `${p}.terminationGracePeriodSeconds`,
      `must exceed preStopSleepSeconds (${s.preStopSleepSeconds}) to leave time for the graceful drain, got ${s.terminationGracePeriodSeconds}`,
    );
  }
  requestsWithinLimits(c, p, s.requests, s.limits);
  return s;
}

function chartRef(c: Checker, v: unknown, p: string): ChartRef {
  const o = c.object(v, p, ["repository", "chart", "version"]);
  return {
    repository: c.string(o.repository, `${p}.repository`, /^(https:\/\/|oci:\/\/)/, "an https:// or oci:// chart repository"),
    chart: c.string(o.chart, `${p}.chart`),
    version: c.string(o.version, `${p}.version`, /^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$/, "an exact chart version, no ranges"),
  };
}

const REGION_FIELDS = [
  "name",
  "kubernetes",
  "namespace",
  "imageTag",
  "inventoryRegion",
  "hosts",
  "ingress",
  "routing",
  "roles",
  "postgres",
  "redis",
  "emqx",
  "observability",
  "sharedData",
  "stateBackend",
  "migrations",
] as const;

function region(c: Checker, v: unknown, p: string): RegionConfig {
  const o = c.object(v, p, REGION_FIELDS);

  const k8s = c.object(o.kubernetes, `${p}.kubernetes`, ["configPath", "context"]);
  const hosts = c.object(o.hosts, `${p}.hosts`, ["vehicle", "management", "mqtt"]);
  const ing = c.object(o.ingress, `${p}.ingress`, [
    "className",
    "managementClassName",
    "tlsSecretName",
    "managementTlsSecretName",
    "annotations",
    "vehiclePathPrefixes",
    "ddiTenants",
  ]);
  const routing = c.object(o.routing, `${p}.routing`, ["wmiPrefixes", "notes"]);

  // Roles: every key must be a known role and every role must end up configured.
  const rolesRaw = c.object(o.roles, `${p}.roles`, ROLES);
  const roles = {} as Record<Role, RoleSettings>;
  for (const role of ROLES) {
    if (rolesRaw[role] === undefined) {
      c.add(`${p}.roles.${role}`, "missing (every role must be sized, in defaults.roles or in the region)");
      continue;
    }
    roles[role] = roleSettings(c, rolesRaw[role], `${p}.roles.${role}`);
  }

  const pg = c.object(o.postgres, `${p}.postgres`, [
    "installOperator",
    "operatorNamespace",
    "instances",
    "postgresVersion",
    "storageSize",
    "storageClass",
    "database",
    "owner",
    "maxConnections",
    "requests",
    "limits",
    "extraValues",
  ]);
  const postgres: PostgresConfig = {
    installOperator: c.bool(pg.installOperator, `${p}.postgres.installOperator`),
    operatorNamespace: c.string(pg.operatorNamespace, `${p}.postgres.operatorNamespace`, DNS_LABEL),
    instances: c.int(pg.instances, `${p}.postgres.instances`, 1, 9),
    postgresVersion: c.string(pg.postgresVersion, `${p}.postgres.postgresVersion`, /^\d{2}$/, 'a major version such as "17"'),
    storageSize: c.string(pg.storageSize, `${p}.postgres.storageSize`, STORAGE, 'such as "100Gi"'),
    storageClass: c.optString(pg.storageClass, `${p}.postgres.storageClass`),
    database: c.string(pg.database, `${p}.postgres.database`, /^[a-z_][a-z0-9_]*$/),
    owner: c.string(pg.owner, `${p}.postgres.owner`, /^[a-z_][a-z0-9_]*$/),
    maxConnections: c.int(pg.maxConnections, `${p}.postgres.maxConnections`, 20, 10000),
    requests: quantities(c, pg.requests, `${p}.postgres.requests`),
    limits: quantities(c, pg.limits, `${p}.postgres.limits`),
    extraValues: c.freeObject(pg.extraValues, `${p}.postgres.extraValues`),
  };
  requestsWithinLimits(c, `${p}.postgres`, postgres.requests, postgres.limits);

  const rd = c.object(o.redis, `${p}.redis`, ["replicas", "storageSize", "storageClass", "requests", "limits", "extraValues"]);
  const redis: RedisConfig = {
    replicas: c.int(rd.replicas, `${p}.redis.replicas`, 0, 10),
    storageSize: c.string(rd.storageSize, `${p}.redis.storageSize`, STORAGE, 'such as "20Gi"'),
    storageClass: c.optString(rd.storageClass, `${p}.redis.storageClass`),
    requests: quantities(c, rd.requests, `${p}.redis.requests`),
    limits: quantities(c, rd.limits, `${p}.redis.limits`),
    extraValues: c.freeObject(rd.extraValues, `${p}.redis.extraValues`),
  };
  requestsWithinLimits(c, `${p}.redis`, redis.requests, redis.limits);

  const mq = c.object(o.emqx, `${p}.emqx`, [
    "replicas",
    "storageSize",
    "storageClass",
    "sessionExpiry",
    "maxMqueueLen",
    "serviceType",
    "serviceAnnotations",
    "requests",
    "limits",
    "extraValues",
  ]);
  const emqx: EmqxConfig = {
    replicas: c.int(mq.replicas, `${p}.emqx.replicas`, 1, 99),
    storageSize: c.string(mq.storageSize, `${p}.emqx.storageSize`, STORAGE, 'such as "10Gi"'),
    storageClass: c.optString(mq.storageClass, `${p}.emqx.storageClass`),
    sessionExpiry: c.string(mq.sessionExpiry, `${p}.emqx.sessionExpiry`, DURATION, 'a duration such as "2h" or "7d"'),
    maxMqueueLen: c.int(mq.maxMqueueLen, `${p}.emqx.maxMqueueLen`, 0, 1000000),
    serviceType: c.oneOf(mq.serviceType, `${p}.emqx.serviceType`, ["LoadBalancer", "ClusterIP", "NodePort"] as const),
    serviceAnnotations: c.stringMap(mq.serviceAnnotations, `${p}.emqx.serviceAnnotations`),
    requests: quantities(c, mq.requests, `${p}.emqx.requests`),
    limits: quantities(c, mq.limits, `${p}.emqx.limits`),
    extraValues: c.freeObject(mq.extraValues, `${p}.emqx.extraValues`),
  };
  requestsWithinLimits(c, `${p}.emqx`, emqx.requests, emqx.limits);
  if (emqx.replicas % 2 === 0) {
    c.add(`${p}.emqx.replicas`, `should be odd so the EMQX cluster can heal after a net split, got ${emqx.replicas}`);
  }

  const ob = c.object(o.observability, `${p}.observability`, [
    "installPrometheusStack",
    "namespace",
    "retention",
    "dashboardsDir",
    "otlpEndpoint",
    "logFilter",
    "extraValues",
  ]);
  const observability: ObservabilityConfig = {
    installPrometheusStack: c.bool(ob.installPrometheusStack, `${p}.observability.installPrometheusStack`),
    namespace: c.string(ob.namespace, `${p}.observability.namespace`, DNS_LABEL, "a DNS-1123 label"),
    retention: c.string(ob.retention, `${p}.observability.retention`, DURATION, 'such as "15d"'),
    dashboardsDir: c.string(ob.dashboardsDir, `${p}.observability.dashboardsDir`),
    otlpEndpoint: c.optString(ob.otlpEndpoint, `${p}.observability.otlpEndpoint`, /^https?:\/\//, "an http(s):// URL"),
    logFilter: c.string(ob.logFilter, `${p}.observability.logFilter`),
    extraValues: c.freeObject(ob.extraValues, `${p}.observability.extraValues`),
  };

  let sharedData: SharedDataConfig | undefined;
  if (o.sharedData !== undefined) {
    const sd = c.object(o.sharedData, `${p}.sharedData`, ["storageClassName", "size"]);
    sharedData = {
      storageClassName: c.string(sd.storageClassName, `${p}.sharedData.storageClassName`),
      size: c.string(sd.size, `${p}.sharedData.size`, STORAGE, 'such as "200Gi"'),
    };
  }

  const sb = c.object(o.stateBackend, `${p}.stateBackend`, ["type", "namespace"]);
  const sbType = c.oneOf(sb.type, `${p}.stateBackend.type`, ["local", "kubernetes"] as const);
  const stateBackend: StateBackendConfig =
    sbType === "kubernetes"
      ? { type: "kubernetes", namespace: c.string(sb.namespace, `${p}.stateBackend.namespace`, DNS_LABEL) }
      : { type: "local" };

  const mg = c.object(o.migrations, `${p}.migrations`, ["enabled", "args"]);
  const migrations: MigrationsConfig = {
    enabled: c.bool(mg.enabled, `${p}.migrations.enabled`),
    args: c.stringArray(mg.args, `${p}.migrations.args`, undefined, undefined, false),
  };

  const imageTag = c.string(o.imageTag, `${p}.imageTag`, IMAGE_TAG, "a docker image tag");
  if (imageTag === "latest") {
    c.add(`${p}.imageTag`, 'must be an immutable version tag, not "latest" (rolling upgrades and rollbacks need a fixed tag)');
  }

  const cfg: RegionConfig = {
    name: c.string(o.name, `${p}.name`, DNS_LABEL, "a DNS-1123 label such as eu-central"),
    kubernetes: {
      configPath: c.string(k8s.configPath, `${p}.kubernetes.configPath`),
      context: c.string(k8s.context, `${p}.kubernetes.context`),
    },
    namespace: c.string(o.namespace, `${p}.namespace`, DNS_LABEL, "a DNS-1123 label"),
    imageTag,
    inventoryRegion: c.string(o.inventoryRegion, `${p}.inventoryRegion`),
    hosts: {
      vehicle: c.string(hosts.vehicle, `${p}.hosts.vehicle`, HOSTNAME, "a DNS host name"),
      management: c.optString(hosts.management, `${p}.hosts.management`, HOSTNAME, "a DNS host name"),
      mqtt: c.string(hosts.mqtt, `${p}.hosts.mqtt`, HOSTNAME, "a DNS host name"),
    },
    ingress: {
      className: c.string(ing.className, `${p}.ingress.className`),
      managementClassName: c.string(ing.managementClassName, `${p}.ingress.managementClassName`),
      tlsSecretName: c.optString(ing.tlsSecretName, `${p}.ingress.tlsSecretName`, DNS_LABEL),
      managementTlsSecretName: c.optString(ing.managementTlsSecretName, `${p}.ingress.managementTlsSecretName`, DNS_LABEL),
      annotations: c.stringMap(ing.annotations, `${p}.ingress.annotations`),
      vehiclePathPrefixes: c.stringArray(ing.vehiclePathPrefixes, `${p}.ingress.vehiclePathPrefixes`, /^\/[A-Za-z0-9_\-/.]*$/, "an absolute path", false),
      ddiTenants: c.stringArray(ing.ddiTenants, `${p}.ingress.ddiTenants`, /^[A-Za-z0-9_-]+$/, "a tenant name"),
    },
    routing: {
      wmiPrefixes: c.stringArray(routing.wmiPrefixes, `${p}.routing.wmiPrefixes`, /^[A-HJ-NPR-Z0-9]{3}$/, "three VIN characters (no I, O, Q)"),
      notes: c.string(routing.notes, `${p}.routing.notes`),
    },
    roles,
    postgres,
    redis,
    emqx,
    observability,
    sharedData,
    stateBackend,
    migrations,
  };
  if (cfg.hosts.management && cfg.hosts.management === cfg.hosts.vehicle) {
    c.add(`${p}.hosts.management`, "must differ from hosts.vehicle (the vehicle host exposes only vehicle paths)");
  }
  return cfg;
}

/** Validates raw JSON (already parsed) and returns the typed configuration, regions merged over defaults. */
export function parseConfig(raw: unknown, source = "config"): PlatformConfig {
  const c = new Checker();
  const top = c.object(raw, "(root)", ["$comment", "image", "charts", "secrets", "defaults", "regions"]);

  const img = c.object(top.image, "image", ["repository", "pullPolicy", "pullSecret"]);
  const image: ImageConfig = {
    repository: c.string(img.repository, "image.repository", /^[a-z0-9]+([._\-/:][a-z0-9]+)*$/, "an image repository without tag"),
    pullPolicy: c.oneOf(img.pullPolicy, "image.pullPolicy", ["IfNotPresent", "Always"] as const),
    pullSecret: c.optString(img.pullSecret, "image.pullSecret", DNS_LABEL),
  };

  const ch = c.object(top.charts, "charts", ["cnpgOperator", "cnpgCluster", "redis", "emqx", "kubePrometheusStack"]);
  const charts: ChartsConfig = {
    cnpgOperator: chartRef(c, ch.cnpgOperator, "charts.cnpgOperator"),
    cnpgCluster: chartRef(c, ch.cnpgCluster, "charts.cnpgCluster"),
    redis: chartRef(c, ch.redis, "charts.redis"),
    emqx: chartRef(c, ch.emqx, "charts.emqx"),
    kubePrometheusStack: chartRef(c, ch.kubePrometheusStack, "charts.kubePrometheusStack"),
  };

  const sec = c.object(top.secrets, "secrets", ["redis", "mqtt", "emqxDashboard", "grafanaAdmin"]);
  const secrets: SecretNames = {
    redis: c.string(sec.redis, "secrets.redis", DNS_LABEL, "a Secret name"),
    mqtt: c.string(sec.mqtt, "secrets.mqtt", DNS_LABEL, "a Secret name"),
    emqxDashboard: c.string(sec.emqxDashboard, "secrets.emqxDashboard", DNS_LABEL, "a Secret name"),
    grafanaAdmin: c.string(sec.grafanaAdmin, "secrets.grafanaAdmin", DNS_LABEL, "a Secret name"),
  };

  const defaults = top.defaults === undefined ? {} : top.defaults;
  if (!isObject(defaults)) c.add("defaults", `must be an object, got ${describe(defaults)}`);
  else {
    // Catch typos in defaults early, with the defaults path (the merged region would report them too).
    for (const k of Object.keys(defaults)) {
      if (!(REGION_FIELDS as readonly string[]).includes(k)) c.add(`defaults.${k}`, `unknown field (allowed: ${REGION_FIELDS.join(", ")})`);
    }
    if (isObject(defaults.roles)) {
      for (const k of Object.keys(defaults.roles)) {
        if (!(ROLES as readonly string[]).includes(k)) c.add(`defaults.roles.${k}`, `unknown role "${k}"; expected one of ${ROLES.join(", ")}`);
      }
    }
  }

  const regions: RegionConfig[] = [];
  if (!Array.isArray(top.regions) || top.regions.length === 0) {
    c.add("regions", `must be a non-empty array, got ${describe(top.regions)}`);
  } else {
    top.regions.forEach((r, i) => {
      const name = isObject(r) && typeof r.name === "string" ? r.name : String(i);
      const p = `regions[${i}](${name})`;
      if (!isObject(r)) {
        c.add(p, `must be an object, got ${describe(r)}`);
        return;
      }
      if (isObject(r.roles)) {
        for (const k of Object.keys(r.roles)) {
          if (!(ROLES as readonly string[]).includes(k)) c.add(`${p}.roles.${k}`, `unknown role "${k}"; expected one of ${ROLES.join(", ")}`);
        }
      }
      // Unknown roles were reported above with a clear message; drop them before merging.
      const cleaned: Json = { ...r };
      if (isObject(r.roles)) {
        cleaned.roles = Object.fromEntries(Object.entries(r.roles).filter(([k]) => (ROLES as readonly string[]).includes(k)));
      }
      // Unknown fields of defaults were reported above with the defaults path; leave them out here.
      const base: Json = isObject(defaults)
        ? Object.fromEntries(Object.entries(defaults).filter(([k]) => (REGION_FIELDS as readonly string[]).includes(k)))
        : {};
      if (isObject(base.roles)) {
        base.roles = Object.fromEntries(Object.entries(base.roles).filter(([k]) => (ROLES as readonly string[]).includes(k)));
      }
      regions.push(region(c, deepMerge(base, cleaned), p));
    });
  }

  const seen = new Map<string, string>();
  regions.forEach((r, i) => {
    for (const [kind, value] of [
      ["name", r.name],
      ["hosts.vehicle", r.hosts.vehicle],
      ["hosts.mqtt", r.hosts.mqtt],
    ] as const) {
      const key = `${kind}=${value}`;
      if (seen.has(key)) c.add(`regions[${i}](${r.name}).${kind}`, `duplicates ${seen.get(key)}`);
      else seen.set(key, `regions[${i}]`);
    }
  });

  if (c.issues.length > 0) throw new ConfigError(source, dedupe(c.issues));
  return { image, charts, secrets, regions };
}

function dedupe(xs: string[]): string[] {
  return [...new Set(xs)];
}
