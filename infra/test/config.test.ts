import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ConfigError, cpuMillis, deepMerge, loadConfig, memoryBytes, parseConfig, ROLES } from "../src/config";
import { CONFIG_FILE, config, rawConfig } from "./support";

/** Parses a mutated copy of the checked-in config and returns the ConfigError it raises. */
function errorFor(mutate: (raw: any) => void): ConfigError {
  const raw = rawConfig();
  mutate(raw);
  try {
    parseConfig(raw, "test");
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("configuration was accepted");
}

describe("the checked-in config/regions.json", () => {
  const cfg = loadConfig(CONFIG_FILE);

  test("defines at least two regions, each with every role sized", () => {
    expect(cfg.regions.length).toBeGreaterThanOrEqual(2);
    expect(cfg.regions.map((r) => r.name)).toEqual(expect.arrayContaining(["eu-central", "us-east"]));
    for (const region of cfg.regions) {
      expect(Object.keys(region.roles).sort()).toEqual([...ROLES].sort());
    }
  });

  test("regions inherit defaults and override them", () => {
    const eu = cfg.regions.find((r) => r.name === "eu-central")!;
    const us = cfg.regions.find((r) => r.name === "us-east")!;
    expect(eu.roles["http-adapter"].maxReplicas).toBe(40);
    expect(eu.roles["http-adapter"].requests.cpu).toBe("500m"); // from defaults
    expect(us.roles["http-adapter"].maxReplicas).toBe(30); // default untouched
    expect(us.emqx.serviceAnnotations).toEqual({ "service.beta.kubernetes.io/aws-load-balancer-type": "nlb" });
    expect(eu.emqx.serviceAnnotations).toEqual({});
    expect(eu.namespace).toBe("ota");
  });

  test("each region has its own DNS names", () => {
    const hosts = cfg.regions.flatMap((r) => [r.hosts.vehicle, r.hosts.mqtt]);
    expect(new Set(hosts).size).toBe(hosts.length);
  });

  test("loading does not modify defaults shared between regions", () => {
    const [a, b] = cfg.regions;
    a.roles.rest.maxReplicas = 99;
    expect(b.roles.rest.maxReplicas).not.toBe(99);
  });
});

describe("validation rejects bad input and names the field", () => {
  test("unknown role in a region", () => {
    const e = errorFor((raw) => {
      raw.regions[0].roles["video-transcoder"] = raw.defaults.roles.rest;
    });
    expect(e.message).toContain('regions[0](eu-central).roles.video-transcoder: unknown role "video-transcoder"');
    expect(e.message).toContain("expected one of vehicle-store, rule-engine");
  });

  test("unknown role in defaults", () => {
    const e = errorFor((raw) => {
      raw.defaults.roles.bogus = raw.defaults.roles.rest;
    });
    expect(e.issues).toContainEqual(expect.stringContaining('defaults.roles.bogus: unknown role "bogus"'));
  });

  test("minReplicas greater than maxReplicas", () => {
    const e = errorFor((raw) => {
      raw.regions[1].roles = { "mqtt-adapter": { minReplicas: 8, maxReplicas: 4, replicas: 8 } };
    });
    expect(e.message).toContain("regions[1](us-east).roles.mqtt-adapter.maxReplicas: must be >= minReplicas (8), got 4");
  });

  test("initial replicas outside the HPA bounds", () => {
    const e = errorFor((raw) => {
      raw.defaults.roles.rest.replicas = 9;
    });
    expect(e.message).toContain("roles.rest.replicas: must be between minReplicas (2) and maxReplicas (4), got 9");
  });

  test("a role missing everywhere", () => {
    const e = errorFor((raw) => {
      delete raw.defaults.roles.staging;
    });
    expect(e.message).toContain("regions[0](eu-central).roles.staging: missing");
  });

  test("malformed resource quantities and limits below requests", () => {
    const e = errorFor((raw) => {
      raw.defaults.roles.staging.requests.cpu = "lots";
      raw.defaults.roles.rest.limits.memory = "64Mi";
    });
    expect(e.message).toContain("roles.staging.requests.cpu: invalid value \"lots\"");
    expect(e.message).toContain("roles.rest.limits.memory: must be >= requests.memory (128Mi), got 64Mi");
  });

  test("the mutable latest tag", () => {
    const e = errorFor((raw) => {
      raw.regions[0].imageTag = "latest";
    });
    expect(e.message).toContain("regions[0](eu-central).imageTag: must be an immutable version tag");
  });

  test("typos in field names", () => {
    const e = errorFor((raw) => {
      raw.regions[0].namepsace = "ota";
      raw.defaults.emqx.sesionExpiry = "1d";
    });
    expect(e.message).toContain("regions[0](eu-central).namepsace: unknown field");
    expect(e.message).toContain("sesionExpiry: unknown field");
  });

  test("duplicate regions and shared host names", () => {
    const e = errorFor((raw) => {
      raw.regions[1].name = "eu-central";
      raw.regions[1].hosts.vehicle = raw.regions[0].hosts.vehicle;
    });
    expect(e.message).toContain("regions[1](eu-central).name: duplicates regions[0]");
    expect(e.message).toContain("regions[1](eu-central).hosts.vehicle: duplicates regions[0]");
  });

  test("wrong types, chart version ranges, even EMQX cluster sizes", () => {
    const e = errorFor((raw) => {
      raw.defaults.roles.rest.maxReplicas = "4";
      raw.charts.redis.version = "^27.0.0";
      raw.defaults.emqx.replicas = 4;
    });
    expect(e.message).toContain('roles.rest.maxReplicas: must be an integer, got string "4"');
    expect(e.message).toContain('charts.redis.version: invalid value "^27.0.0"');
    expect(e.message).toContain("emqx.replicas: should be odd");
  });

  test("reports every problem at once", () => {
    const e = errorFor((raw) => {
      raw.regions[0].roles.bogus = {};
      raw.regions[1].roles = { rest: { minReplicas: 5, maxReplicas: 1 } };
      raw.regions[1].hosts.vehicle = "not a host";
    });
    expect(e.issues.length).toBeGreaterThanOrEqual(3);
  });

  test("an empty region list", () => {
    expect(() => parseConfig({ ...rawConfig(), regions: [] })).toThrow(/regions: must be a non-empty array/);
  });
});

describe("loading files", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ota-infra-config-"));

  test("a missing file is a ConfigError naming the file", () => {
    const file = path.join(dir, "absent.json");
    expect(() => loadConfig(file)).toThrow(ConfigError);
    expect(() => loadConfig(file)).toThrow(file);
  });

  test("invalid JSON is a ConfigError", () => {
    const file = path.join(dir, "broken.json");
    fs.writeFileSync(file, "{ regions: [");
    expect(() => loadConfig(file)).toThrow(/not valid JSON/);
  });

  test("OTA_INFRA_CONFIG selects another file", () => {
    const file = path.join(dir, "one-region.json");
    const raw = rawConfig();
    raw.regions = [raw.regions[0]];
    fs.writeFileSync(file, JSON.stringify(raw));
    const before = process.env.OTA_INFRA_CONFIG;
    process.env.OTA_INFRA_CONFIG = file;
    try {
      expect(loadConfig().regions.map((r) => r.name)).toEqual(["eu-central"]);
    } finally {
      if (before === undefined) delete process.env.OTA_INFRA_CONFIG;
      else process.env.OTA_INFRA_CONFIG = before;
    }
  });
});

describe("helpers", () => {
  test("quantities", () => {
    expect(cpuMillis("500m")).toBe(500);
    expect(cpuMillis("2")).toBe(2000);
    expect(memoryBytes("512Mi")).toBe(512 * 1024 * 1024);
    expect(memoryBytes("1G")).toBe(1e9);
  });

  test("deepMerge merges objects and replaces arrays", () => {
    expect(deepMerge({ a: { b: 1, c: [1, 2] } }, { a: { c: [3] }, d: 4 })).toEqual({ a: { b: 1, c: [3] }, d: 4 });
  });

  test("a valid mutation is accepted", () => {
    const cfg = config((raw) => {
      raw.regions[0].roles.rest = { minReplicas: 3, maxReplicas: 9, replicas: 3 };
    });
    expect(cfg.regions[0].roles.rest).toMatchObject({ minReplicas: 3, maxReplicas: 9, replicas: 3 });
  });
});
