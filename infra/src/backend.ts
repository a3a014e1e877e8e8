/**
 * Terraform's `kubernetes` state backend (state in a Secret of the region's own cluster), which
 * cdktf 0.21 no longer ships as a class. Synthesizes
 * `terraform { backend "kubernetes" { secret_suffix, namespace, config_path, config_context } }`.
 */
import { TerraformBackend, TerraformRemoteState } from "cdktf";
import { Construct } from "constructs";

export interface KubernetesBackendConfig {
  /** The state Secret is named `tfstate-default-<secretSuffix>`. */
  readonly secretSuffix: string;
  readonly namespace: string;
  readonly configPath: string;
  readonly configContext: string;
}

function snake(props: KubernetesBackendConfig): Record<string, string> {
  return {
    secret_suffix: props.secretSuffix,
    namespace: props.namespace,
    config_path: props.configPath,
    config_context: props.configContext,
  };
}

class KubernetesRemoteState extends TerraformRemoteState {
  constructor(scope: Construct, id: string, config: KubernetesBackendConfig) {
    super(scope, id, "kubernetes", { ...snake(config) } as never);
  }
}

export class KubernetesBackend extends TerraformBackend {
  constructor(
    scope: Construct,
    private readonly props: KubernetesBackendConfig,
  ) {
    super(scope, "backend", "kubernetes");
  }

  protected synthesizeAttributes(): { [name: string]: unknown } {
    return snake(this.props);
  }

  protected synthesizeHclAttributes(): { [name: string]: unknown } {
    return snake(this.props);
  }

  getRemoteStateDataSource(scope: Construct, name: string, _fromStack: string): TerraformRemoteState {
    return new KubernetesRemoteState(scope, name, this.props);
  }
}
