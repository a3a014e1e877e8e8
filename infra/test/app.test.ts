import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { App } from "cdktf";
import { buildApp } from "../main";
import { ROLES } from "../src/config";
import { config } from "./support";

test("the app synthesizes one stack per region, each with every role", () => {
  const cfg = config();
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), "ota-infra-synth-"));
  buildApp(cfg, new App({ outdir, skipValidation: false })).synth();

  const stacks = fs.readdirSync(path.join(outdir, "stacks")).sort();
  expect(stacks).toEqual(cfg.regions.map((r) => `ota-${r.name}`).sort());
  expect(stacks.length).toBeGreaterThanOrEqual(2);
  for (const stack of stacks) {
    const json = JSON.parse(fs.readFileSync(path.join(outdir, "stacks", stack, "cdk.tf.json"), "utf8"));
    const deployments = Object.values<any>(json.resource.kubernetes_deployment_v1).map((d) => d.metadata.name);
    expect(deployments.sort()).toEqual([...ROLES].sort());
    // Only the kubernetes and helm providers: prebuilt bindings, nothing to generate.
    expect(Object.keys(json.terraform.required_providers).sort()).toEqual(["helm", "kubernetes"]);
    expect(Object.keys(json.terraform.backend)).toEqual(["kubernetes"]);
  }
  const manifest = JSON.parse(fs.readFileSync(path.join(outdir, "manifest.json"), "utf8"));
  expect(Object.keys(manifest.stacks).sort()).toEqual(stacks);
});
