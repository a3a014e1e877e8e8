/**
 * One Terraform stack per region: providers for the region's cluster, the state backend, the
 * namespace, observability, the stateful services and the OTA roles, plus outputs that say
 * where this region's vehicles connect.
 *
 * Region ownership: every region is a complete, independent platform (own database, Redis,
 * broker). A vehicle belongs to exactly one region, the one whose inventory `region` value
 * matches `inventoryRegion`; it is provisioned with that region's host names
 * (`hosts.vehicle`, `hosts.mqtt`, e.g. eu.ota.example.com), so routing is plain DNS and no
 * request crosses regions. VIN ranges are not a reliable key (manufacturers do not allocate
 * VINs per market), so `routing.wmiPrefixes` is only a hint for an edge redirect.
 */
import { TerraformOutput, TerraformStack } from "cdktf";
import { Construct } from "constructs";
import { HelmProvider } from "@cdktf/provider-helm/lib/provider";
import { KubernetesProvider } from "@cdktf/provider-kubernetes/lib/provider";
import { NamespaceV1 } from "@cdktf/provider-kubernetes/lib/namespace-v1";
import { KubernetesBackend } from "./backend";
import { PlatformConfig, RegionConfig, ROLES } from "./config";
import { commonLabels } from "./helpers";
import { Observability } from "./observability";
import { OtaServices } from "./ota-services";
import { StatefulServices } from "./stateful";

export interface RegionStackProps {
  readonly config: PlatformConfig;
  readonly region: RegionConfig;
}

export function stackName(region: RegionConfig): string {
  return `ota-${region.name}`;
}

export class RegionStack extends TerraformStack {
  readonly region: RegionConfig;
  readonly services: OtaServices;
  readonly stateful: StatefulServices;
  readonly observability: Observability;

  constructor(scope: Construct, id: string, props: RegionStackProps) {
    super(scope, id);
    const { config, region } = props;
    this.region = region;

    const kube = { configPath: region.kubernetes.configPath, configContext: region.kubernetes.context };
    new KubernetesProvider(this, "kubernetes", kube);
    new HelmProvider(this, "helm", { kubernetes: kube });

    if (region.stateBackend.type === "kubernetes") {
      // State lives in a Secret of the region's own cluster (tfstate-default-<suffix>).
      new KubernetesBackend(this, {
        secretSuffix: stackName(region),
        namespace: region.stateBackend.namespace,
        configPath: region.kubernetes.configPath,
        configContext: region.kubernetes.context,
      });
    }

    const namespace = new NamespaceV1(this, "namespace", {
      metadata: {
        name: region.namespace,
        labels: {
          ...commonLabels(region.name),
          // EMQX and the bitnami charts run as fixed non-root users but do not meet every
          // "restricted" rule; enforce baseline, warn on restricted.
          "pod-security.kubernetes.io/enforce": "baseline",
          "pod-security.kubernetes.io/warn": "restricted",
        },
      },
    });

    // Stable address for targeted applies (docs/deploy.md: namespace first, then Secrets).
    namespace.overrideLogicalId("ota_namespace");

    this.observability = new Observability(this, "observability", {
      config,
      region,
      dependsOn: [namespace],
    });

    this.stateful = new StatefulServices(this, "stateful", {
      config,
      region,
      dependsOn: [namespace, ...this.observability.ready],
      monitoringCrds: this.observability.monitoringCrds,
    });

    this.services = new OtaServices(this, "ota", {
      config,
      region,
      databaseUrl: this.stateful.databaseUrl,
      redisAddress: this.stateful.redisAddress,
      redisPassword: this.stateful.redisPassword,
      mqttUrl: this.stateful.mqttUrl,
      dependsOn: [namespace, ...this.stateful.releases],
    });

    new TerraformOutput(this, "vehicle_api_url", {
      value: `https://${region.hosts.vehicle}/v1/vehicles`,
      description: `Vehicle HTTP API for vehicles with inventory region=${region.inventoryRegion}`,
    });
    new TerraformOutput(this, "ddi_base_urls", {
      value: region.ingress.ddiTenants.map((t) => `https://${region.hosts.vehicle}/${t}/controller/v1`),
      description: "hawkBit DDI base URL per tenant",
    });
    new TerraformOutput(this, "mqtt_endpoint", {
      value: `${region.hosts.mqtt}:1883`,
      description: "MQTT host vehicles of this region connect to (DNS record for the EMQX load balancer)",
    });
    if (region.hosts.management) {
      new TerraformOutput(this, "management_url", { value: `https://${region.hosts.management}/api/v1` });
    }
    new TerraformOutput(this, "routing", {
      value: {
        region: region.name,
        inventoryRegion: region.inventoryRegion,
        wmiPrefixes: region.routing.wmiPrefixes,
        notes: region.routing.notes,
      },
    });
    new TerraformOutput(this, "roles", { value: [...ROLES] });
  }
}
