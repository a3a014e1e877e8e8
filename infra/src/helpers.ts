/** Small helpers shared by the constructs: Terraform-safe strings, labels, names. */
import { createHash } from "crypto";
import { Token } from "cdktf";

/**
 * Escapes a literal string for Terraform JSON: `${` and `%{` start interpolation and template
 * directives, so literal ones (EMQX placeholders such as `${clientid}`, Grafana's
 * `${DS_PROMETHEUS}`) must be written `$${` and `%%{`. cdktf does not do this for us.
 * Refuses strings that contain cdktf tokens, which must stay unescaped.
 */
export function terraformLiteral(s: string): string {
  if (Token.isUnresolved(s)) {
    throw new Error("terraformLiteral: string contains a cdktf token; build it from plain values");
  }
  // (a replacement function: in a replacement string "$$" would collapse to "$")
  return s.replace(/\$\{/g, () => "$${").replace(/%\{/g, () => "%%{");
}

/** Helm values as one document: JSON is YAML, escaped for Terraform. */
export function helmValues(values: unknown): string {
  return terraformLiteral(JSON.stringify(values, null, 2));
}

export const PART_OF = "ota";

/** Standard labels of everything the platform deploys. */
export function commonLabels(region: string): Record<string, string> {
  return {
    "app.kubernetes.io/part-of": PART_OF,
    "app.kubernetes.io/managed-by": "cdktf",
    "ota.example.com/region": region,
  };
}

/** Selector labels of one role's pods (stable: never add a label here after the first deploy). */
export function selectorLabels(role: string): Record<string, string> {
  return {
    "app.kubernetes.io/name": "ota",
    "app.kubernetes.io/component": role,
  };
}

/** Environment variable name for a peer address, e.g. vehicle-store -> OTA_PEERS__VEHICLE_STORE. */
export function peerEnvName(role: string): string {
  return `OTA_PEERS__${role.toUpperCase().replace(/-/g, "_")}`;
}

/** In-cluster DNS name of a Service. */
export function serviceHost(name: string, namespace: string): string {
  return `${name}.${namespace}.svc.cluster.local`;
}

/** A Kubernetes object name from parts, lower-cased, limited to 63 characters. */
export function k8sName(...parts: string[]): string {
  const name = parts
    .join("-")
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/-+/g, "-")
    .replace(/^-|-$/g, "");
  if (name.length <= 63) return name;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 8);
  return `${name.slice(0, 54).replace(/-$/, "")}-${hash}`;
}

export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
