// Offline validation of the Kubernetes manifests and Prometheus files of deploy/.
//
//   node validate.mjs --deploy DIR --out DIR
//
// Kubernetes manifests (DIR/kubernetes/*.yaml, parsed as YAML 1.1 like Kubernetes does):
//   - each document's apiVersion/kind maps to a model of kubernetes-models (or of
//     @kubernetes-models/prometheus-operator) and passes its .validate(): types, required fields,
//     formats;
//   - each document is written as a typed TypeScript constant (`const m: IDeployment = {...}`) and
//     `tsc --strict --noEmit` compiles them: the excess-property check rejects unknown fields;
//   - the kustomization lists exactly the manifests of the folder;
//   - what ties the files together: probes, ports, grace period vs drain timeout, threads vs the CPU
//     limit, selectors, the HPA's metric served by a prometheus-adapter rule, the PrometheusRule
//     equal to prometheus/rosetta-rules.yml.
// prometheus-adapter/config.yaml is typed the same way; its queries, with the adapter's templates
// filled in, are written to OUT/adapter-queries.rules.yml for `promtool check rules`.
// prometheus/prometheus.yml: Debian's promtool is built without Kubernetes service discovery, so
// its kubernetes_sd_configs are checked here (fields, role, the meta labels relabelled) and
// OUT/prometheus.check.yml, the same file with static targets instead, goes to promtool.
//
// Prints one line per check; exits 1 if any failed.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import YAML from "yaml";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (i % 2 === 0 ? [...pairs, [arg.replace(/^--/, ""), all[i + 1]]] : pairs), []),
);
if (!args.deploy || !args.out) {
  console.error("usage: node validate.mjs --deploy DIR --out DIR");
  process.exit(2);
}
const deployDir = path.resolve(args.deploy);
const outDir = path.resolve(args.out);
// deploy_test.sh runs a copy of this file beside the node_modules of tests/deploy/package.json.
const here = path.dirname(new URL(import.meta.url).pathname);
const nodeModules = path.join(here, "node_modules");

let failures = 0;
function check(ok, what, details = "") {
  console.log(`${ok ? "PASS" : "FAIL"}: ${what}`);
  if (!ok) {
    failures++;
    if (details) console.log("  " + String(details).replace(/\n/g, "\n  "));
  }
  return ok;
}

function readYamlDocuments(file) {
  const documents = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { version: "1.1", uniqueKeys: true });
  const problems = documents.flatMap((d) => [...d.errors, ...d.warnings].map((e) => e.message));
  check(problems.length === 0, `${rel(file)}: YAML 1.1 without errors or warnings`, problems.join("\n"));
  return documents.map((d) => d.toJS()).filter((d) => d !== null && d !== undefined);
}

function rel(file) {
  return path.relative(path.dirname(deployDir), file);
}

// ---- Kubernetes manifests ----
const kubeDir = path.join(deployDir, "kubernetes");
const kubeFiles = fs.readdirSync(kubeDir).filter((f) => /\.ya?ml$/.test(f)).sort();
const manifests = []; // {file, index, doc}
let kustomization = null;
for (const name of kubeFiles) {
  const file = path.join(kubeDir, name);
  readYamlDocuments(file).forEach((doc, index) => {
    if (doc.kind === "Kustomization") kustomization = { file, doc };
    else manifests.push({ file, index, doc });
  });
}

function modelModule(apiVersion, kind) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const generatedDir = path.join(outDir, "generated");
fs.rmSync(generatedDir, { recursive: true, force: true });
fs.mkdirSync(generatedDir, { recursive: true });
const tsFiles = [];
for (const { file, index, doc } of manifests) {
  const label = `${rel(file)}[${index}] ${doc.kind}/${doc.metadata?.name}`;
  if (typeof doc.apiVersion !== "string" || typeof doc.kind !== "string") {
    check(false, `${label}: has apiVersion and kind`);
    continue;
  }
  const module = modelModule(doc.apiVersion, doc.kind);
  let Model;
  try {
    Model = (await import(path.join(nodeModules, module + ".mjs")))[doc.kind];
  } catch (error) {
    check(false, `${label}: ${doc.apiVersion} ${doc.kind} is a known API type`, error.message);
    continue;
  }
  try {
    new Model(doc).validate();
    check(true, `${label}: valid ${doc.apiVersion} ${doc.kind} (kubernetes-models)`);
  } catch (error) {
    check(false, `${label}: valid ${doc.apiVersion} ${doc.kind} (kubernetes-models)`, error.message);
  }
  const tsFile = path.join(generatedDir, `${path.basename(file)}.${index}.ts`);
  fs.writeFileSync(
    tsFile,
    `// ${rel(file)}, document ${index}\n` +
      `import type { I${doc.kind} as T } from "${module}";\n` +
      `export const manifest: T = ${JSON.stringify(doc, null, 2)};\n`,
  );
  tsFiles.push(tsFile);
}

// The kustomization and the adapter's configuration are typed too (types.ts).
if (check(kustomization !== null, "deploy/kubernetes has a kustomization.yaml")) {
  const listed = kustomization.doc.resources ?? [];
  const manifestFiles = [...new Set(manifests.map((m) => path.basename(m.file)))].sort();
  check(isDeepStrictEqual([...listed].sort(), manifestFiles), "kustomization.yaml lists every manifest of the folder, and only those",
    `listed: ${listed.join(", ")}\nin the folder: ${manifestFiles.join(", ")}`);
  const tsFile = path.join(generatedDir, "kustomization.ts");
  fs.writeFileSync(tsFile, `import type { Kustomization } from "${path.join(here, "types")}";\n` +
    `export const kustomization: Kustomization = ${JSON.stringify(kustomization.doc, null, 2)};\n`);
  tsFiles.push(tsFile);
}

const adapterFile = path.join(deployDir, "prometheus-adapter", "config.yaml");
const [adapter] = readYamlDocuments(adapterFile);
{
  const tsFile = path.join(generatedDir, "prometheus-adapter.ts");
  fs.writeFileSync(tsFile, `import type { AdapterConfig } from "${path.join(here, "types")}";\n` +
    `export const config: AdapterConfig = ${JSON.stringify(adapter, null, 2)};\n`);
  tsFiles.push(tsFile);
}

const promConfigFile = path.join(deployDir, "prometheus", "prometheus.yml");
const [promConfig] = readYamlDocuments(promConfigFile);

// tsc: unknown fields and wrong types, in every document at once.
fs.writeFileSync(path.join(outDir, "tsconfig.json"), JSON.stringify({
  compilerOptions: {
    strict: true, noEmit: true, skipLibCheck: true, module: "commonjs", moduleResolution: "node",
    target: "es2020", types: [], typeRoots: [path.join(nodeModules, "@types")], baseUrl: outDir,
    paths: { "*": [path.join(nodeModules, "*")] },
  },
  files: tsFiles,
}, null, 2));
try {
  execFileSync(process.execPath, [path.join(nodeModules, "typescript", "bin", "tsc"), "-p", path.join(outDir, "tsconfig.json")],
    { encoding: "utf8", stdio: "pipe" });
  check(true, `tsc --strict: ${tsFiles.length} typed documents, no unknown fields or wrong types`);
} catch (error) {
  check(false, `tsc --strict: ${tsFiles.length} typed documents, no unknown fields or wrong types`,
    (error.stdout || "") + (error.stderr || ""));
}

// ---- what ties the files together ----
const byKind = (kind) => manifests.filter((m) => m.doc.kind === kind).map((m) => m.doc);
const [deployment] = byKind("Deployment");
const services = byKind("Service");
const [hpa] = byKind("HorizontalPodAutoscaler");
const [pdb] = byKind("PodDisruptionBudget");
const [podMonitor] = byKind("PodMonitor");
const [promRule] = byKind("PrometheusRule");
for (const [kind, doc] of Object.entries({ Deployment: deployment, HorizontalPodAutoscaler: hpa, PodDisruptionBudget: pdb,
  PodMonitor: podMonitor, PrometheusRule: promRule })) {
  check(doc !== undefined, `deploy/kubernetes has a ${kind}`);
}
check(services.length >= 2 && services.some((s) => s.spec?.clusterIP === "None") && services.some((s) => s.spec?.clusterIP !== "None"),
  "a ClusterIP Service for clients and a headless Service (clusterIP: None) for client-side balancing");

// Every label of a (non-empty) selector is on the pods.
function subset(small, big) {
  return Object.keys(small ?? {}).length > 0 && Object.entries(small).every(([k, v]) => big?.[k] === v);
}

try {
  if (deployment) checkDeployment();
} catch (error) {
  check(false, "the consistency checks ran (a manifest lacks something they read)", error.stack);
}

function checkDeployment() {
  const pod = deployment.spec.template.spec;
  const podLabels = deployment.spec.template.metadata.labels;
  const container = pod.containers.find((c) => c.name === "rosettad") ?? pod.containers[0];
  const flag = (name) => {
    for (const [i, a] of (container.args ?? []).entries()) {
      if (a === `--${name}`) return container.args[i + 1];
      if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
    }
    return undefined;
  };
  const portNames = Object.fromEntries((container.ports ?? []).map((p) => [p.name, p.containerPort]));
  check(portNames.grpc === 50051 && portNames.metrics === 9400, "the container's ports: grpc 50051, metrics 9400", JSON.stringify(container.ports));
  check(subset(deployment.spec.selector.matchLabels, podLabels), "the Deployment's selector matches its pod labels");

  const grpcProbe = (probe, service) => probe?.grpc?.port === 50051 && (probe.grpc.service ?? "") === service;
  check(grpcProbe(container.readinessProbe, "rosetta.v1.Rosetta"), "readiness: gRPC health probe of rosetta.v1.Rosetta on 50051",
    JSON.stringify(container.readinessProbe));
  check(grpcProbe(container.livenessProbe, ""), "liveness: gRPC health probe of the server (\"\") on 50051", JSON.stringify(container.livenessProbe));
  check(grpcProbe(container.startupProbe, "rosetta.v1.Rosetta"), "startup: gRPC health probe while the models load", JSON.stringify(container.startupProbe));

  // The grace period covers the preStop sleep, the drain and gRPC's 5 s shutdown.
  const drain = Number(flag("drain_timeout") ?? 30);
  const preStop = container.lifecycle?.preStop?.exec?.command;
  const preStopSeconds = preStop?.[0] === "sleep" ? Number(preStop[1]) : (container.lifecycle?.preStop?.sleep?.seconds ?? 0);
  const grace = pod.terminationGracePeriodSeconds ?? 30;
  check(grace >= preStopSeconds + drain + 5, `terminationGracePeriodSeconds ${grace} >= preStop ${preStopSeconds} + --drain_timeout ${drain} + 5`);
  const liveness = container.livenessProbe ?? {};
  check((liveness.periodSeconds ?? 10) * (liveness.failureThreshold ?? 3) > drain,
    "liveness tolerates NOT_SERVING for longer than the drain (the \"\" service is NOT_SERVING while draining)");

  // Threads follow the CPU limit through the downward API.
  const threads = flag("threads");
  const variable = /^\$\((\w+)\)$/.exec(threads ?? "")?.[1];
  const env = (container.env ?? []).find((e) => e.name === variable);
  check(env?.valueFrom?.resourceFieldRef?.resource === "limits.cpu" && String(env.valueFrom.resourceFieldRef.divisor) === "1",
    "--threads is the CPU limit (downward API limits.cpu, divisor 1)", `--threads=${threads}, env ${JSON.stringify(env)}`);
  check(container.resources?.limits?.cpu !== undefined && container.resources?.limits?.memory !== undefined &&
    container.resources?.requests?.cpu !== undefined, "the container has CPU and memory limits and a CPU request (the HPA's utilization needs it)");
  check(pod.securityContext?.runAsNonRoot === true && container.securityContext?.allowPrivilegeEscalation === false,
    "non-root, no privilege escalation");

  for (const service of services) {
    check(subset(service.spec.selector, podLabels) && service.spec.ports.every((p) => portNames[p.targetPort] !== undefined || Object.values(portNames).includes(p.targetPort)),
      `Service ${service.metadata.name} selects the pods and targets their named ports`);
  }
  if (pdb) check(subset(pdb.spec?.selector?.matchLabels, podLabels), "the PodDisruptionBudget selects the pods");
  if (podMonitor) {
    check(subset(podMonitor.spec.selector.matchLabels, podLabels) && podMonitor.spec.podMetricsEndpoints.every((e) => portNames[e.port] === 9400),
      "the PodMonitor selects the pods and scrapes their metrics port");
    check(podLabels[podMonitor.spec.jobLabel] === "rosetta", "the PodMonitor's job label is 'rosetta' (RosettaTargetDown, prometheus.yml)");
  }
  if (hpa) {
    check(hpa.spec.scaleTargetRef.kind === "Deployment" && hpa.spec.scaleTargetRef.name === deployment.metadata.name,
      "the HPA scales the Deployment");
    check(hpa.spec.minReplicas >= 2 && (pdb?.spec?.maxUnavailable ?? 1) < hpa.spec.minReplicas,
      "at least 2 replicas, and the PDB leaves one serving");
    const metrics = hpa.spec.metrics ?? [];
    check(metrics.some((m) => m.type === "Resource" && m.resource.name === "cpu"), "the HPA scales on CPU");
    const adapterNames = (adapter?.rules ?? []).map((r) => r.name?.as ?? /^(\w+)/.exec(r.seriesQuery)?.[1]);
    const custom = metrics.filter((m) => m.type === "Pods" || m.type === "Object" || m.type === "External");
    check(custom.length > 0 && custom.every((m) => adapterNames.includes((m.pods ?? m.object ?? m.external).metric.name)),
      "the HPA's queue metric is published by a prometheus-adapter rule",
      `HPA: ${custom.map((m) => (m.pods ?? m.object ?? m.external).metric.name).join(", ")}; adapter: ${adapterNames.join(", ")}`);
  }
}

// The PrometheusRule carries exactly the rules promtool checks.
const rulesFile = path.join(deployDir, "prometheus", "rosetta-rules.yml");
const [rules] = readYamlDocuments(rulesFile);
if (promRule) {
  check(isDeepStrictEqual(promRule.spec.groups, rules.groups), "the PrometheusRule's groups equal prometheus/rosetta-rules.yml");
}
const alerts = rules.groups.flatMap((g) => g.rules).map((r) => r.alert).filter(Boolean);
for (const [alert, metric] of [["RosettaHighErrorRate", "rosetta_requests_total"], ["RosettaHighLatencyP99", "rosetta_request_duration_seconds_bucket"],
  ["RosettaQueueSaturated", "rosetta_waiting_texts"]]) {
  const rule = rules.groups.flatMap((g) => g.rules).find((r) => r.alert === alert);
  check(rule !== undefined && rule.expr.includes(metric), `alert ${alert} on ${metric}`, `alerts: ${alerts.join(", ")}`);
}

// ---- prometheus-adapter: its queries with the templates filled in, for promtool ----
{
  const fill = (query, series) => query
    .replaceAll("<<.Series>>", series)
    .replaceAll("<<.LabelMatchers>>", 'namespace="prod",pod=~"rosetta-a|rosetta-b"')
    .replaceAll("<<.GroupBy>>", "pod");
  const recording = (adapter?.rules ?? []).flatMap((rule, i) => {
    const series = /^(\w+)/.exec(rule.seriesQuery)?.[1];
    return [
      { record: `adapter:series_query_${i}`, expr: rule.seriesQuery },
      { record: `adapter:metrics_query_${i}`, expr: fill(rule.metricsQuery, series) },
    ];
  });
  fs.writeFileSync(path.join(outDir, "adapter-queries.rules.yml"), YAML.stringify({ groups: [{ name: "adapter", rules: recording }] }));
  check(recording.length > 0, `prometheus-adapter: ${recording.length / 2} rules written for promtool (adapter-queries.rules.yml)`);
}

// ---- prometheus.yml: kubernetes_sd_configs here, the rest by promtool ----
{
  // Prometheus' kubernetes_sd_config fields and the meta labels of role pod (docs, 2.42).
  const sdFields = new Set(["api_server", "role", "kubeconfig_file", "namespaces", "selectors", "attach_metadata", "basic_auth",
    "authorization", "oauth2", "follow_redirects", "enable_http2", "tls_config", "proxy_url", "no_proxy", "proxy_from_environment",
    "proxy_connect_header", "bearer_token", "bearer_token_file"]);
  const roles = new Set(["node", "service", "pod", "endpoints", "endpointslice", "ingress"]);
  const podMeta = [/^__meta_kubernetes_namespace$/, /^__meta_kubernetes_pod_name$/, /^__meta_kubernetes_pod_ip$/,
    /^__meta_kubernetes_pod_label_\w+$/, /^__meta_kubernetes_pod_labelpresent_\w+$/, /^__meta_kubernetes_pod_annotation_\w+$/,
    /^__meta_kubernetes_pod_annotationpresent_\w+$/, /^__meta_kubernetes_pod_container_init$/, /^__meta_kubernetes_pod_container_name$/,
    /^__meta_kubernetes_pod_container_id$/, /^__meta_kubernetes_pod_container_image$/, /^__meta_kubernetes_pod_container_port_name$/,
    /^__meta_kubernetes_pod_container_port_number$/, /^__meta_kubernetes_pod_container_port_protocol$/, /^__meta_kubernetes_pod_ready$/,
    /^__meta_kubernetes_pod_phase$/, /^__meta_kubernetes_pod_node_name$/, /^__meta_kubernetes_pod_host_ip$/, /^__meta_kubernetes_pod_uid$/,
    /^__meta_kubernetes_pod_controller_kind$/, /^__meta_kubernetes_pod_controller_name$/];
  const copy = structuredClone(promConfig);
  let sdJobs = 0;
  for (const job of copy.scrape_configs ?? []) {
    if (!job.kubernetes_sd_configs) continue;
    sdJobs++;
    for (const sd of job.kubernetes_sd_configs) {
      const unknown = Object.keys(sd).filter((k) => !sdFields.has(k));
      check(unknown.length === 0 && roles.has(sd.role), `prometheus.yml job ${job.job_name}: kubernetes_sd_configs fields and role '${sd.role}'`,
        `unknown fields: ${unknown.join(", ")}`);
      const used = (job.relabel_configs ?? []).flatMap((r) => r.source_labels ?? []).filter((l) => l.startsWith("__meta_kubernetes_"));
      const wrong = sd.role === "pod" ? used.filter((l) => !podMeta.some((re) => re.test(l))) : [];
      check(wrong.length === 0, `prometheus.yml job ${job.job_name}: relabelled meta labels exist for role ${sd.role}`, wrong.join(", "));
      const targets = new Set((job.relabel_configs ?? []).map((r) => r.target_label));
      check(targets.has("namespace") && targets.has("pod"), `prometheus.yml job ${job.job_name}: namespace and pod labels (adapter, alerts)`);
    }
    delete job.kubernetes_sd_configs;
    job.static_configs = [{ targets: ["placeholder.invalid:9400"] }];
  }
  check(sdJobs > 0 && (promConfig.scrape_configs ?? []).some((j) => j.job_name === "rosetta"),
    "prometheus.yml has a Kubernetes job named 'rosetta'");
  copy.rule_files = (copy.rule_files ?? []).map((f) => path.resolve(path.dirname(promConfigFile), f));
  fs.writeFileSync(path.join(outDir, "prometheus.check.yml"), YAML.stringify(copy));
}

console.log(failures === 0 ? "validate.mjs: all checks passed" : `validate.mjs: ${failures} check(s) failed`);
process.exit(failures === 0 ? 0 : 1);
