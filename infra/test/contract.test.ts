/**
 * infra/ and the `ota` binary agree: the role list, the variables that give
 * each peer's address, and every OTA_* variable the stack sets are the ones
 * `ota describe` prints (checked in as ota-describe.json; a Rust test in
 * services/ota/tests/describe.rs keeps that file equal to the binary's
 * output, so neither side can drift).
 */
import * as fs from "fs";
import * as path from "path";
import { PEER_ROLES, ROLES } from "../src/config";
import { peerEnvName } from "../src/helpers";
import { config, containersOf, resources, synthRegion } from "./support";

const contract: { roles: string[]; peers: Record<string, string>; env: string[] } = JSON.parse(
  fs.readFileSync(path.join(__dirname, "..", "ota-describe.json"), "utf8"),
);

describe("the ota binary's contract", () => {
  test("the roles are the binary's roles", () => {
    expect([...ROLES].sort()).toEqual([...contract.roles].sort());
  });

  test("the peer roles and their address variables are the binary's", () => {
    expect([...PEER_ROLES].sort()).toEqual(Object.keys(contract.peers).sort());
    for (const role of PEER_ROLES) {
      expect(peerEnvName(role)).toBe(contract.peers[role]);
    }
  });

  test("every OTA_ variable the stack sets is one the binary reads", () => {
    const { json } = synthRegion(config());
    const names = new Set<string>();
    for (const map of resources(json, "kubernetes_config_map_v1")) {
      Object.keys(map.data ?? {}).forEach((k) => names.add(k));
    }
    for (const deployment of resources(json, "kubernetes_deployment_v1")) {
      for (const c of containersOf(deployment)) {
        (c.env ?? []).forEach((e: any) => names.add(e.name));
      }
    }
    const ota = [...names].filter((n) => n.startsWith("OTA_"));
    expect(ota.length).toBeGreaterThan(5);
    const unknown = ota.filter((n) => !contract.env.includes(n));
    expect(unknown).toEqual([]);
  });
});
