/**
 * The stateful parts of one region, as Helm releases of established charts:
 *  - PostgreSQL: the CloudNativePG operator chart plus a `Cluster` through CNPG's `cluster` chart
 *    (a chart rather than kubernetes_manifest, so planning does not need the CRD to exist yet);
 *  - Redis (bitnami/redis): staged per-vehicle documents and the event bus, AOF persistence,
 *    `noeviction` (a staged document must never be evicted to make room);
 *  - EMQX (emqx/emqx): the MQTT cluster vehicles connect to, with shared subscriptions, persistent
 *    sessions, and HTTP authentication/authorization delegated to the http-adapter Service.
 *
 * Secret values are never written here: the charts are pointed at Kubernetes Secrets by name
 * (see docs/deploy.md for the `kubectl create secret` commands).
 */
import { ITerraformDependable } from "cdktf";
import { Construct } from "constructs";
import { Release } from "@cdktf/provider-helm/lib/release";
import { PlatformConfig, RegionConfig, ResourceQuantities } from "./config";
import { deepMerge } from "./config";
import { helmValues, serviceHost } from "./helpers";

export const POSTGRES_CLUSTER_NAME = "ota-pg";
export const REDIS_NAME = "ota-redis";
export const EMQX_NAME = "ota-emqx";
/** Where the EMQX superuser bootstrap file is written (the chart's data volume). */
export const EMQX_SUPERUSER_FILE = "/opt/emqx/data/ota-superusers.csv";

export interface StatefulServicesProps {
  readonly config: PlatformConfig;
  readonly region: RegionConfig;
  /** Resources to create first (the region namespace, the monitoring stack for its CRDs). */
  readonly dependsOn: ITerraformDependable[];
  /** Whether Prometheus operator CRDs exist (ServiceMonitor/PodMonitor objects are created then). */
  readonly monitoringCrds: boolean;
}

export interface SecretKeyRef {
  readonly name: string;
  readonly key: string;
}

function resources(requests: ResourceQuantities, limits: ResourceQuantities) {
  return { requests: { ...requests }, limits: { ...limits } };
}

export class StatefulServices extends Construct {
  /** Secret CNPG creates with the application owner's credentials; key `uri` is the full URL. */
  readonly databaseUrl: SecretKeyRef;
  /** Redis primary endpoint (host:port) inside the cluster. */
  readonly redisAddress: string;
  /** Secret holding the Redis password. */
  readonly redisPassword: SecretKeyRef;
  /** MQTT URL of the EMQX cluster inside the cluster (no credentials). */
  readonly mqttUrl: string;
  readonly releases: Release[] = [];

  constructor(scope: Construct, id: string, props: StatefulServicesProps) {
    super(scope, id);
    const { config, region, monitoringCrds } = props;
    const ns = region.namespace;

    // --- PostgreSQL (CloudNativePG) ------------------------------------------------------------
    const pgDeps: ITerraformDependable[] = [...props.dependsOn];
    if (region.postgres.installOperator) {
      const operator = new Release(this, "cnpg-operator", {
        name: "cnpg",
        namespace: region.postgres.operatorNamespace,
        createNamespace: true,
        repository: config.charts.cnpgOperator.repository,
        chart: config.charts.cnpgOperator.chart,
        version: config.charts.cnpgOperator.version,
        wait: true,
        timeout: 600,
        maxHistory: 10,
        values: [helmValues({ crds: { create: true }, monitoring: { podMonitorEnabled: monitoringCrds } })],
        dependsOn: props.dependsOn,
      });
      this.releases.push(operator);
      pgDeps.push(operator);
    }

    const pg = region.postgres;
    const pgValues = {
      fullnameOverride: POSTGRES_CLUSTER_NAME,
      type: "postgresql",
      mode: "standalone",
      version: { postgresql: pg.postgresVersion },
      cluster: {
        instances: pg.instances,
        storage: { size: pg.storageSize, storageClass: pg.storageClass ?? "" },
        resources: resources(pg.requests, pg.limits),
        // One application database and owner; CNPG generates the password into `<cluster>-app`.
        initdb: { database: pg.database, owner: pg.owner },
        enableSuperuserAccess: false,
        primaryUpdateStrategy: "unsupervised",
        primaryUpdateMethod: "switchover",
        affinity: { topologyKey: "topology.kubernetes.io/zone" },
        postgresql: { parameters: { max_connections: String(pg.maxConnections) } },
        monitoring: {
          enabled: monitoringCrds,
          podMonitor: { enabled: monitoringCrds },
          prometheusRule: { enabled: monitoringCrds },
        },
      },
      backups: { enabled: false },
    };
    const pgCluster = new Release(this, "postgres", {
      name: POSTGRES_CLUSTER_NAME,
      namespace: ns,
      repository: config.charts.cnpgCluster.repository,
      chart: config.charts.cnpgCluster.chart,
      version: config.charts.cnpgCluster.version,
      wait: true,
      timeout: 900,
      maxHistory: 10,
      values: [helmValues(deepMerge(pgValues, pg.extraValues))],
      dependsOn: pgDeps,
    });
    this.releases.push(pgCluster);
    this.databaseUrl = { name: `${POSTGRES_CLUSTER_NAME}-app`, key: "uri" };

    // --- Redis ---------------------------------------------------------------------------------
    const rd = region.redis;
    const persistence = (size: string, storageClass?: string) => ({
      enabled: true,
      size,
      ...(storageClass ? { storageClass } : {}),
    });
    const redisValues = {
      fullnameOverride: REDIS_NAME,
      architecture: rd.replicas > 0 ? "replication" : "standalone",
      auth: {
        enabled: true,
        existingSecret: config.secrets.redis,
        existingSecretPasswordKey: "password",
      },
      // AOF every second: staged documents and the bus survive a Redis restart.
      // noeviction: Redis answers errors rather than silently dropping a vehicle's staged doc.
      commonConfiguration: ["appendonly yes", "appendfsync everysec", 'save ""', "maxmemory-policy noeviction"].join("\n"),
      master: {
        persistence: persistence(rd.storageSize, rd.storageClass),
        resources: resources(rd.requests, rd.limits),
      },
      replica: {
        replicaCount: rd.replicas,
        persistence: persistence(rd.storageSize, rd.storageClass),
        resources: resources(rd.requests, rd.limits),
      },
      metrics: { enabled: true, serviceMonitor: { enabled: monitoringCrds } },
    };
    const redis = new Release(this, "redis", {
      name: REDIS_NAME,
      namespace: ns,
      repository: config.charts.redis.repository,
      chart: config.charts.redis.chart,
      version: config.charts.redis.version,
      wait: true,
      timeout: 600,
      maxHistory: 10,
      values: [helmValues(deepMerge(redisValues, rd.extraValues))],
      dependsOn: props.dependsOn,
    });
    this.releases.push(redis);
    this.redisAddress = `${serviceHost(`${REDIS_NAME}-master`, ns)}:6379`;
    this.redisPassword = { name: config.secrets.redis, key: "password" };

    // --- EMQX ----------------------------------------------------------------------------------
    const mq = region.emqx;
    const httpAdapter = `http://${serviceHost("http-adapter", ns)}:8080`;
    const jsonHeaders = { "content-type": "application/json" };
    const emqxValues = {
      replicaCount: mq.replicas,
      // Dashboard admin password comes from this Secret (key EMQX_DASHBOARD__DEFAULT_PASSWORD).
      envFromSecret: config.secrets.emqxDashboard,
      persistence: {
        enabled: true,
        size: mq.storageSize,
        ...(mq.storageClass ? { storageClassName: mq.storageClass } : {}),
      },
      resources: resources(mq.requests, mq.limits),
      service: { type: mq.serviceType, annotations: mq.serviceAnnotations },
      affinity: {
        podAntiAffinity: {
          preferredDuringSchedulingIgnoredDuringExecution: [
            {
              weight: 100,
              podAffinityTerm: {
                topologyKey: "topology.kubernetes.io/zone",
                labelSelector: { matchLabels: { "app.kubernetes.io/instance": EMQX_NAME } },
              },
            },
          ],
        },
      },
      metrics: { enabled: monitoringCrds, type: "prometheus" },
      emqxConfig: {
        // The chart default would set the dashboard password to a well-known value: drop it,
        // the Secret above provides it.
        EMQX_DASHBOARD__DEFAULT_PASSWORD: null,
        EMQX_LOG__CONSOLE__FORMATTER: "json",
        // Vehicles connect with clean_start=false; their sessions (subscriptions, queued QoS 1
        // messages) outlive a disconnect for this long.
        EMQX_MQTT__SESSION_EXPIRY_INTERVAL: mq.sessionExpiry,
        EMQX_MQTT__MAX_MQUEUE_LEN: String(mq.maxMqueueLen),
        EMQX_MQTT__MQUEUE_STORE_QOS0: "false",
        // The adapter acknowledges a report only once recorded and records many at a time (the
        // campaign manager batches them); EMQX's default window of 32 unacknowledged messages
        // per session would cap each adapter at 32 reports in progress.
        EMQX_MQTT__MAX_INFLIGHT: "1024",
        EMQX_MQTT__RETAIN_AVAILABLE: "true",
        // The adapters consume $share/ota/ota/v1/vehicles/+/status and .../inventory; hashing by
        // client id keeps one vehicle's reports on one adapter, in order.
        EMQX_MQTT__SHARED_SUBSCRIPTION: "true",
        EMQX_MQTT__SHARED_SUBSCRIPTION_STRATEGY: "hash_clientid",
        // Authentication chain: (1) the adapter's superuser from the bootstrap file (unknown
        // users fall through), (2) every vehicle through the platform's HTTP endpoint.
        EMQX_AUTHENTICATION: [
          {
            mechanism: "password_based",
            backend: "built_in_database",
            user_id_type: "username",
            password_hash_algorithm: { name: "sha256", salt_position: "suffix" },
            bootstrap_file: EMQX_SUPERUSER_FILE,
            bootstrap_type: "plain",
          },
          {
            mechanism: "password_based",
            backend: "http",
            method: "post",
            url: `${httpAdapter}/v1/mqtt/auth`,
            headers: jsonHeaders,
            body: { clientid: "${clientid}", username: "${username}", password: "${password}" },
            connect_timeout: "5s",
            request_timeout: "5s",
            pool_size: 32,
          },
        ],
        // Topic ACL: every publish/subscribe of a non-superuser is asked of the platform;
        // anything the platform does not allow is denied.
        EMQX_AUTHORIZATION__NO_MATCH: "deny",
        EMQX_AUTHORIZATION__CACHE__ENABLE: "true",
        EMQX_AUTHORIZATION__CACHE__TTL: "1m",
        EMQX_AUTHORIZATION__SOURCES: [
          {
            type: "http",
            enable: true,
            method: "post",
            url: `${httpAdapter}/v1/mqtt/acl`,
            headers: jsonHeaders,
            body: { clientid: "${clientid}", username: "${username}", topic: "${topic}", action: "${action}" },
            connect_timeout: "5s",
            request_timeout: "5s",
            pool_size: 32,
          },
        ],
      },
      // Writes the superuser bootstrap file from the `ota-mqtt` Secret before EMQX starts, so the
      // adapter's credentials exist only in that Secret.
      initContainers: [
        {
          name: "ota-superuser-bootstrap",
          image: `emqx/emqx:${config.charts.emqx.version}`,
          command: [
            "sh",
            "-c",
            `umask 077 && printf 'user_id,password,is_superuser\\n%s,%s,true\\n' "$OTA_MQTT_USERNAME" "$OTA_MQTT_PASSWORD" > ${EMQX_SUPERUSER_FILE}`,
          ],
          env: [
            { name: "OTA_MQTT_USERNAME", valueFrom: { secretKeyRef: { name: config.secrets.mqtt, key: "username" } } },
            { name: "OTA_MQTT_PASSWORD", valueFrom: { secretKeyRef: { name: config.secrets.mqtt, key: "password" } } },
          ],
          volumeMounts: [{ name: "emqx-data", mountPath: "/opt/emqx/data" }],
          securityContext: { runAsUser: 1000, runAsNonRoot: true, allowPrivilegeEscalation: false },
          resources: { requests: { cpu: "10m", memory: "16Mi" }, limits: { cpu: "100m", memory: "64Mi" } },
        },
      ],
    };
    const emqx = new Release(this, "emqx", {
      name: EMQX_NAME,
      namespace: ns,
      repository: config.charts.emqx.repository,
      chart: config.charts.emqx.chart,
      version: config.charts.emqx.version,
      wait: true,
      timeout: 900,
      maxHistory: 10,
      values: [helmValues(deepMerge(emqxValues, mq.extraValues))],
      dependsOn: props.dependsOn,
    });
    this.releases.push(emqx);
    this.mqttUrl = `mqtt://${serviceHost(EMQX_NAME, ns)}:1883`;
  }
}
