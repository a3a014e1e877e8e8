/**
 * The OTA service roles of one region, all from the same image (`ota serve --services <role>`):
 * per role a Deployment, a Service (http 8080, grpc 50051), a HorizontalPodAutoscaler
 * (autoscaling/v2) and a PodDisruptionBudget; one ConfigMap with the non-secret settings and the
 * peer addresses; Secrets referenced with `secretKeyRef` only; a migration Job that runs before
 * the Deployments roll; and the Ingresses for the vehicle API / hawkBit DDI and management API.
 *
 * Zero-downtime rollout settings (see docs/deploy.md, "Upgrading without dropping vehicles"):
 * maxUnavailable 0 / maxSurge 25%, readiness on /readyz, liveness on /healthz, a preStop sleep
 * so endpoints and load balancers drain before SIGTERM, and a grace period for the drain.
 */
import { ITerraformDependable } from "cdktf";
import { Construct } from "constructs";
import { ConfigMapV1 } from "@cdktf/provider-kubernetes/lib/config-map-v1";
import { DeploymentV1, DeploymentV1SpecTemplateSpecVolume } from "@cdktf/provider-kubernetes/lib/deployment-v1";
import { HorizontalPodAutoscalerV2 } from "@cdktf/provider-kubernetes/lib/horizontal-pod-autoscaler-v2";
import { IngressV1, IngressV1SpecRuleHttpPath } from "@cdktf/provider-kubernetes/lib/ingress-v1";
import { JobV1 } from "@cdktf/provider-kubernetes/lib/job-v1";
import { PersistentVolumeClaimV1 } from "@cdktf/provider-kubernetes/lib/persistent-volume-claim-v1";
import { PodDisruptionBudgetV1 } from "@cdktf/provider-kubernetes/lib/pod-disruption-budget-v1";
import { ServiceV1 } from "@cdktf/provider-kubernetes/lib/service-v1";
import { PEER_ROLES, PlatformConfig, RegionConfig, Role, ROLES, RoleSettings } from "./config";
import { commonLabels, k8sName, peerEnvName, selectorLabels, serviceHost, sha256 } from "./helpers";
import { SecretKeyRef } from "./stateful";

export const HTTP_PORT = 8080;
export const GRPC_PORT = 50051;
export const DATA_DIR = "/var/lib/ota";
export const CONFIG_MAP_NAME = "ota-config";
export const RUN_AS_USER = "10001";

export interface OtaServicesProps {
  readonly config: PlatformConfig;
  readonly region: RegionConfig;
  readonly databaseUrl: SecretKeyRef;
  readonly redisAddress: string;
  readonly redisPassword: SecretKeyRef;
  readonly mqttUrl: string;
  /** Namespace and stateful releases: created before any OTA pod. */
  readonly dependsOn: ITerraformDependable[];
}

/** Non-secret settings shared by every role (the ConfigMap's data). */
export function otaSettings(props: Pick<OtaServicesProps, "region" | "mqttUrl">): Record<string, string> {
  const { region } = props;
  const data: Record<string, string> = {
    OTA_HTTP_ADDR: `0.0.0.0:${HTTP_PORT}`,
    OTA_GRPC_ADDR: `0.0.0.0:${GRPC_PORT}`,
    OTA_DATA_DIR: DATA_DIR,
    OTA_LOG: region.observability.logFilter,
    OTA_MQTT_URL: props.mqttUrl,
    // jemalloc's huge pages speed up lookups in the in-process staging
    // store; here staging keeps its documents in Redis, so they would only
    // cost memory (docs/deploy.md, Sizing).
    _RJEM_MALLOC_CONF: "thp:default",
  };
  // A role reaches every service it does not run itself at these addresses.
  for (const peer of PEER_ROLES) {
    data[peerEnvName(peer)] = `http://${serviceHost(peer, region.namespace)}:${GRPC_PORT}`;
  }
  if (region.observability.otlpEndpoint) {
    data.OTEL_EXPORTER_OTLP_ENDPOINT = region.observability.otlpEndpoint;
  }
  return data;
}

export class OtaServices extends Construct {
  readonly deployments = new Map<Role, DeploymentV1>();
  readonly services = new Map<Role, ServiceV1>();
  readonly autoscalers = new Map<Role, HorizontalPodAutoscalerV2>();
  readonly disruptionBudgets = new Map<Role, PodDisruptionBudgetV1>();
  readonly configMap: ConfigMapV1;
  readonly migrationJob?: JobV1;

  constructor(scope: Construct, id: string, props: OtaServicesProps) {
    super(scope, id);
    const { config, region } = props;
    const ns = region.namespace;
    const image = `${config.image.repository}:${region.imageTag}`;
    const labels = { ...commonLabels(region.name), "app.kubernetes.io/version": region.imageTag };

    const settings = otaSettings(props);
    this.configMap = new ConfigMapV1(this, "config", {
      metadata: { name: CONFIG_MAP_NAME, namespace: ns, labels },
      data: settings,
      dependsOn: props.dependsOn,
    });
    // Pods restart when the settings change (the ConfigMap alone would not roll them).
    const configChecksum = sha256(JSON.stringify(settings));

    // Data directory: a shared ReadWriteMany volume when configured (uploaded artifacts must be
    // readable by every http-adapter replica), otherwise a per-pod emptyDir.
    let dataVolume: DeploymentV1SpecTemplateSpecVolume = { name: "data", emptyDir: { sizeLimit: "1Gi" } };
    if (region.sharedData) {
      const pvc = new PersistentVolumeClaimV1(this, "data", {
        metadata: { name: "ota-data", namespace: ns, labels },
        spec: {
          accessModes: ["ReadWriteMany"],
          storageClassName: region.sharedData.storageClassName,
          resources: { requests: { storage: region.sharedData.size } },
        },
        waitUntilBound: false,
        dependsOn: props.dependsOn,
      });
      dataVolume = { name: "data", persistentVolumeClaim: { claimName: pvc.metadata.name } };
    }
    const volumes: DeploymentV1SpecTemplateSpecVolume[] = [dataVolume, { name: "tmp", emptyDir: { sizeLimit: "256Mi" } }];
    const volumeMounts = [
      { name: "data", mountPath: DATA_DIR },
      { name: "tmp", mountPath: "/tmp" },
    ];

    const secretEnv = (name: string, ref: SecretKeyRef) => ({
      name,
      valueFrom: { secretKeyRef: { name: ref.name, key: ref.key } },
    });
    const env = (component: string) => [
      secretEnv("OTA_DATABASE_URL", props.databaseUrl),
      secretEnv("REDIS_PASSWORD", props.redisPassword),
      // Kubernetes expands $(REDIS_PASSWORD) from the variable above: the URL is assembled in the
      // pod, the password never appears in the spec.
      { name: "OTA_REDIS_URL", value: `redis://:$(REDIS_PASSWORD)@${props.redisAddress}/0` },
      secretEnv("OTA_MQTT_USERNAME", { name: config.secrets.mqtt, key: "username" }),
      secretEnv("OTA_MQTT_PASSWORD", { name: config.secrets.mqtt, key: "password" }),
      { name: "OTEL_SERVICE_NAME", value: `ota-${component}` },
      { name: "OTEL_RESOURCE_ATTRIBUTES", value: `deployment.region=${region.name}` },
      { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
    ];
    const containerSecurity = {
      runAsNonRoot: true,
      runAsUser: RUN_AS_USER,
      runAsGroup: RUN_AS_USER,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
    };
    const podSecurity = {
      runAsNonRoot: true,
      runAsUser: RUN_AS_USER,
      runAsGroup: RUN_AS_USER,
      fsGroup: RUN_AS_USER,
      seccompProfile: { type: "RuntimeDefault" },
    };
    const imagePullSecrets = config.image.pullSecret ? [{ name: config.image.pullSecret }] : undefined;

    // --- Migrations: run once per image tag, before any Deployment rolls ----------------------
    const rolloutDeps: ITerraformDependable[] = [...props.dependsOn, this.configMap];
    if (region.migrations.enabled) {
      this.migrationJob = new JobV1(this, "migrate", {
        metadata: { name: k8sName("ota-migrate", region.imageTag), namespace: ns, labels },
        spec: {
          backoffLimit: 10,
          activeDeadlineSeconds: 1800,
          template: {
            metadata: { labels: { ...labels, ...selectorLabels("migrate") } },
            spec: {
              restartPolicy: "Never",
              automountServiceAccountToken: false,
              enableServiceLinks: false,
              securityContext: podSecurity,
              imagePullSecrets,
              container: [
                {
                  name: "migrate",
                  image,
                  imagePullPolicy: config.image.pullPolicy,
                  args: region.migrations.args,
                  envFrom: [{ configMapRef: { name: CONFIG_MAP_NAME } }],
                  env: env("migrate"),
                  resources: {
                    requests: { cpu: "100m", memory: "128Mi" },
                    limits: { cpu: "1", memory: "512Mi" },
                  },
                  securityContext: containerSecurity,
                  volumeMount: [{ name: "tmp", mountPath: "/tmp" }],
                },
              ],
              volume: [{ name: "tmp", emptyDir: { sizeLimit: "256Mi" } }],
            },
          },
        },
        waitForCompletion: true,
        timeouts: { create: "30m", update: "30m" },
        dependsOn: rolloutDeps,
      });
      rolloutDeps.push(this.migrationJob);
    }

    // --- One Deployment + Service + HPA + PDB per role ----------------------------------------
    for (const role of ROLES) {
      const s: RoleSettings = region.roles[role];
      const sel = selectorLabels(role);
      const roleLabels = { ...labels, ...sel };

      const lifecycle =
        s.preStopSleepSeconds > 0
          ? { preStop: [{ exec: { command: ["sleep", String(s.preStopSleepSeconds)] } }] }
          : undefined;

      const deployment = new DeploymentV1(this, `${role}-deployment`, {
        metadata: { name: role, namespace: ns, labels: roleLabels },
        spec: {
          replicas: String(s.replicas),
          revisionHistoryLimit: 10,
          minReadySeconds: 5,
          progressDeadlineSeconds: 600,
          selector: { matchLabels: sel },
          strategy: {
            type: "RollingUpdate",
            // Never go below the current capacity: new pods must be Ready before old ones stop.
            rollingUpdate: { maxUnavailable: "0", maxSurge: "25%" },
          },
          template: {
            metadata: {
              labels: roleLabels,
              annotations: {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": String(HTTP_PORT),
                "prometheus.io/path": "/metrics",
                "checksum/config": configChecksum,
              },
            },
            spec: {
              automountServiceAccountToken: false,
              enableServiceLinks: false,
              terminationGracePeriodSeconds: s.terminationGracePeriodSeconds,
              securityContext: podSecurity,
              imagePullSecrets,
              topologySpreadConstraint: [
                {
                  maxSkew: 1,
                  topologyKey: "topology.kubernetes.io/zone",
                  whenUnsatisfiable: "ScheduleAnyway",
                  labelSelector: [{ matchLabels: sel }],
                },
                {
                  maxSkew: 1,
                  topologyKey: "kubernetes.io/hostname",
                  whenUnsatisfiable: "ScheduleAnyway",
                  labelSelector: [{ matchLabels: sel }],
                },
              ],
              container: [
                {
                  name: "ota",
                  image,
                  imagePullPolicy: config.image.pullPolicy,
                  args: ["serve", "--services", role],
                  port: [
                    { name: "http", containerPort: HTTP_PORT, protocol: "TCP" },
                    { name: "grpc", containerPort: GRPC_PORT, protocol: "TCP" },
                  ],
                  envFrom: [{ configMapRef: { name: CONFIG_MAP_NAME } }],
                  env: env(role),
                  resources: {
                    requests: { cpu: s.requests.cpu, memory: s.requests.memory },
                    limits: { cpu: s.limits.cpu, memory: s.limits.memory },
                  },
                  startupProbe: {
                    httpGet: { path: "/healthz", port: "http" },
                    periodSeconds: 2,
                    timeoutSeconds: 2,
                    failureThreshold: 60,
                  },
                  readinessProbe: {
                    httpGet: { path: "/readyz", port: "http" },
                    periodSeconds: 5,
                    timeoutSeconds: 2,
                    failureThreshold: 3,
                    successThreshold: 1,
                  },
                  livenessProbe: {
                    httpGet: { path: "/healthz", port: "http" },
                    periodSeconds: 10,
                    timeoutSeconds: 3,
                    failureThreshold: 3,
                  },
                  lifecycle,
                  securityContext: containerSecurity,
                  volumeMount: volumeMounts,
                },
              ],
              volume: volumes,
            },
          },
        },
        // After creation the HPA owns the replica count; Terraform must not reset it.
        lifecycle: { ignoreChanges: ["spec[0].replicas"] },
        waitForRollout: true,
        timeouts: { create: "15m", update: "15m" },
        dependsOn: rolloutDeps,
      });
      this.deployments.set(role, deployment);

      this.services.set(
        role,
        new ServiceV1(this, `${role}-service`, {
          metadata: { name: role, namespace: ns, labels: roleLabels },
          spec: {
            type: "ClusterIP",
            selector: sel,
            port: [
              { name: "http", port: HTTP_PORT, targetPort: "http", protocol: "TCP", appProtocol: "http" },
              { name: "grpc", port: GRPC_PORT, targetPort: "grpc", protocol: "TCP", appProtocol: "grpc" },
            ],
          },
          dependsOn: props.dependsOn,
        }),
      );

      this.autoscalers.set(
        role,
        new HorizontalPodAutoscalerV2(this, `${role}-hpa`, {
          metadata: { name: role, namespace: ns, labels: roleLabels },
          spec: {
            minReplicas: s.minReplicas,
            maxReplicas: s.maxReplicas,
            scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: role },
            metric: [
              {
                type: "Resource",
                resource: { name: "cpu", target: { type: "Utilization", averageUtilization: s.targetCpuUtilization } },
              },
            ],
            behavior: {
              // Scale up quickly on a wave; scale down slowly so adapters do not churn connections.
              scaleUp: [{ stabilizationWindowSeconds: 0, selectPolicy: "Max", policy: [{ type: "Percent", value: 100, periodSeconds: 60 }] }],
              scaleDown: [{ stabilizationWindowSeconds: 300, selectPolicy: "Min", policy: [{ type: "Percent", value: 10, periodSeconds: 60 }] }],
            },
          },
          dependsOn: [deployment],
        }),
      );

      this.disruptionBudgets.set(
        role,
        new PodDisruptionBudgetV1(this, `${role}-pdb`, {
          metadata: { name: role, namespace: ns, labels: roleLabels },
          spec: { maxUnavailable: s.pdbMaxUnavailable, selector: { matchLabels: sel } },
          dependsOn: props.dependsOn,
        }),
      );
    }

    // --- Ingress -------------------------------------------------------------------------------
    // Vehicle host: only the vehicle API and DDI paths reach the http-adapter; the broker
    // callbacks (/v1/mqtt/*), /metrics and the management API stay cluster-internal.
    // Which region a vehicle belongs to is decided by DNS: the vehicle is provisioned with its
    // region's host (region.hosts.vehicle), see region.routing and docs/deploy.md.
    const toService = (service: Role, p: string): IngressV1SpecRuleHttpPath => ({
      path: p,
      pathType: "Prefix",
      backend: { service: { name: service, port: { name: "http" } } },
    });
    const vehiclePaths = [
      ...region.ingress.vehiclePathPrefixes.map((p) => toService("http-adapter", p)),
      ...region.ingress.ddiTenants.map((t) => toService("http-adapter", `/${t}/controller/v1`)),
    ];
    new IngressV1(this, "vehicle-ingress", {
      metadata: {
        name: "ota-vehicle",
        namespace: ns,
        labels,
        annotations: { ...region.ingress.annotations, "ota.example.com/routing": "dns-per-region" },
      },
      spec: {
        ingressClassName: region.ingress.className,
        tls: region.ingress.tlsSecretName ? [{ hosts: [region.hosts.vehicle], secretName: region.ingress.tlsSecretName }] : undefined,
        rule: [{ host: region.hosts.vehicle, http: { path: vehiclePaths } }],
      },
      dependsOn: [...this.services.values()],
    });

    if (region.hosts.management) {
      new IngressV1(this, "management-ingress", {
        metadata: { name: "ota-management", namespace: ns, labels, annotations: region.ingress.annotations },
        spec: {
          ingressClassName: region.ingress.managementClassName,
          tls: region.ingress.managementTlsSecretName
            ? [{ hosts: [region.hosts.management], secretName: region.ingress.managementTlsSecretName }]
            : undefined,
          rule: [{ host: region.hosts.management, http: { path: [toService("rest", "/")] } }],
        },
        dependsOn: [...this.services.values()],
      });
    }
  }
}
