/**
 * CDKTF app entry: one stack per region of config/regions.json (or $OTA_INFRA_CONFIG).
 *
 *   npx cdktf synth                  # Terraform JSON for every region in cdktf.out/stacks/
 *   npx cdktf deploy ota-eu-central  # plan + apply one region
 *
 * See docs/deploy.md for the whole path to production.
 */
import { App } from "cdktf";
import { ConfigError, loadConfig, PlatformConfig } from "./src/config";
import { RegionStack, stackName } from "./src/region-stack";

export function buildApp(config: PlatformConfig, app: App = new App()): App {
  for (const region of config.regions) {
    new RegionStack(app, stackName(region), { config, region });
  }
  return app;
}

if (require.main === module) {
  let config: PlatformConfig;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      process.exit(2);
    }
    throw e;
  }
  buildApp(config).synth();
}
