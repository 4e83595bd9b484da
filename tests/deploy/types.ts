// Types of the deploy/ files that are not Kubernetes API objects, for the excess-property check of
// tsc (validate.mjs): a misspelt field fails to compile.

// kustomize.config.k8s.io/v1beta1 Kustomization: the fields deploy/kubernetes may use.
export interface Kustomization {
  apiVersion: "kustomize.config.k8s.io/v1beta1";
  kind: "Kustomization";
  namespace?: string;
  resources: string[];
  labels?: Array<{ pairs: Record<string, string>; includeSelectors?: boolean; includeTemplates?: boolean }>;
  images?: Array<{ name: string; newName?: string; newTag?: string; digest?: string }>;
  patches?: Array<{ path?: string; patch?: string; target?: Record<string, string> }>;
}

// prometheus-adapter's configuration (docs/config.md of kubernetes-sigs/prometheus-adapter).
interface GroupResource {
  group?: string;
  resource: string;
}

export interface DiscoveryRule {
  seriesQuery: string;
  seriesFilters?: Array<{ is?: string; isNot?: string }>;
  resources?: {
    template?: string;
    overrides?: Record<string, GroupResource>;
    namespaced?: boolean;
  };
  name?: { matches?: string; as?: string };
  metricsQuery: string;
}

export interface AdapterConfig {
  rules?: DiscoveryRule[];
  externalRules?: DiscoveryRule[];
  resourceRules?: {
    cpu?: { containerQuery: string; nodeQuery: string; resources: DiscoveryRule["resources"]; containerLabel: string };
    memory?: { containerQuery: string; nodeQuery: string; resources: DiscoveryRule["resources"]; containerLabel: string };
    window?: string;
  };
}
