/** Shared test helpers: configurations to mutate and readers over synthesized Terraform JSON. */
import * as fs from "fs";
import * as path from "path";
import { Testing } from "cdktf";
// Type declarations of cdktf's jest matchers (toHaveResourceWithProperties, ...), registered in setup.ts.
import "cdktf/lib/testing/adapters/jest";
import { parseConfig, PlatformConfig, RegionConfig } from "../src/config";
import { RegionStack } from "../src/region-stack";

export const CONFIG_FILE = path.join(__dirname, "..", "config", "regions.json");

/** The checked-in configuration as raw JSON (a fresh copy each call, safe to mutate). */
export function rawConfig(): any {
  return JSON.parse(fs.readFileSync(CONFIG_FILE, "utf8"));
}

export function config(mutate?: (raw: any) => void): PlatformConfig {
  const raw = rawConfig();
  if (mutate) mutate(raw);
  return parseConfig(raw, "test");
}

export interface Synth {
  region: RegionConfig;
  text: string;
  json: any;
}

/** Synthesizes one region stack and returns its Terraform JSON (text and parsed). */
export function synthRegion(cfg: PlatformConfig, regionName?: string): Synth {
  const region = regionName ? cfg.regions.find((r) => r.name === regionName)! : cfg.regions[0];
  const app = Testing.app();
  const stack = new RegionStack(app, `ota-${region.name}`, { config: cfg, region });
  const text = Testing.synth(stack);
  return { region, text, json: JSON.parse(text) };
}

/** All resources of one Terraform type, as a list of bodies. */
export function resources(json: any, type: string): any[] {
  return Object.values(json.resource?.[type] ?? {});
}

export function byName(json: any, type: string, name: string): any {
  const found = resources(json, type).filter((r) => r.metadata?.name === name || r.name === name);
  if (found.length !== 1) throw new Error(`expected one ${type} named ${name}, found ${found.length}`);
  return found[0];
}

/** Helm release values, parsed (Terraform's `$${` escapes turned back into `${`). */
export function helmValues(release: any): any {
  return JSON.parse(release.values[0].replace(/\$\$\{/g, "${"));
}

export function containersOf(resource: any): any[] {
  return resource.spec.template.spec.container;
}
