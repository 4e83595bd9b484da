#!/usr/bin/env bash
# Validates deploy/ offline: every Kubernetes manifest against the Kubernetes API types with unknown
# fields rejected (kubernetes-models' validate() and tsc's excess-property check, see
# tests/deploy/validate.mjs), the files' consistency (probes, ports, grace period, threads, HPA
# metric vs prometheus-adapter, PrometheusRule vs rules file), the alerting rules with
# `promtool check rules` and their unit tests with `promtool test rules`, prometheus-adapter's
# queries and the scrape config with promtool. Then proves that each check can fail: broken copies
# of the files must be rejected.
#
#   deploy_test.sh --source DIR --work DIR
#
# The npm packages of tests/deploy/package.json are installed into WORK/npm once (the npm registry
# is needed the first time only).
set -uo pipefail

source_dir="" work=""
while (( $# > 0 )); do
  case "$1" in
    --source) source_dir=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) echo "deploy_test: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $source_dir && -n $work ]] || { echo "usage: deploy_test.sh --source DIR --work DIR" >&2; exit 2; }
source_dir=$(cd "$source_dir" && pwd)
mkdir -p "$work" && work=$(cd "$work" && pwd)

source "$(dirname "${BASH_SOURCE[0]}")/check.sh"  # check STATUS WHAT [DETAILS]
finish() {
  echo "deploy_test: $passed passed, $failed failed"
  exit $(( failed > 0 ))
}

for tool in node npm promtool; do
  command -v "$tool" >/dev/null ||
    { check 1 "$tool is installed (scripts/install-deps.sh --test installs it)"; finish; }
done

# ---- npm packages, cached in WORK/npm ----
npm_dir="$work/npm"
mkdir -p "$npm_dir"
stamp="$npm_dir/.installed-package.json"
if ! cmp -s "$source_dir/tests/deploy/package.json" "$stamp" || [[ ! -d $npm_dir/node_modules ]]; then
  cp "$source_dir/tests/deploy/package.json" "$npm_dir/package.json"
  if ! (cd "$npm_dir" && npm install --no-audit --no-fund --prefer-offline --no-save > npm-install.log 2>&1); then
    check 1 "npm install of tests/deploy/package.json" "$(tail -20 "$npm_dir/npm-install.log")"
    finish
  fi
  cp "$source_dir/tests/deploy/package.json" "$stamp"
fi
# validate.mjs resolves its imports from its own folder: run a copy beside node_modules.
cp "$source_dir/tests/deploy/validate.mjs" "$source_dir/tests/deploy/types.ts" "$npm_dir/"

# validate DEPLOY_DIR OUT_DIR: runs validate.mjs, then promtool on what it wrote and on the rules.
validate() {
  local deploy=$1 out=$2 status=0
  mkdir -p "$out"
  node "$npm_dir/validate.mjs" --deploy "$deploy" --out "$out" || status=1
  [[ -f $out/adapter-queries.rules.yml ]] && { promtool check rules "$out/adapter-queries.rules.yml" || status=1; }
  [[ -f $out/prometheus.check.yml ]] && { promtool check config "$out/prometheus.check.yml" || status=1; }
  promtool check rules "$deploy/prometheus/rosetta-rules.yml" || status=1
  (cd "$deploy/prometheus" && promtool test rules rosetta-rules.test.yml) || status=1
  return $status
}

# ---- the real files ----
out=$(validate "$source_dir/deploy" "$npm_dir/out" 2>&1); status=$?
echo "$out" | sed 's/^/  | /'
check $status "deploy/: manifests, kustomization, prometheus-adapter, rules (and their unit tests), scrape config"

# ---- broken copies must fail ----
# broken NAME FILE SED_EXPRESSION EXPECTED_TEXT: a copy of deploy/ with FILE edited; validation
# must fail and its output contain EXPECTED_TEXT.
broken() {
  local name=$1 file=$2 expression=$3 expected=$4
  local copy="$work/broken/$name"
  rm -rf "$copy" && mkdir -p "$copy" && cp -r "$source_dir/deploy" "$copy/"
  sed -i -e "$expression" "$copy/deploy/$file"
  if cmp -s "$source_dir/deploy/$file" "$copy/deploy/$file"; then
    check 1 "broken copy '$name': the edit changed $file" "sed '$expression' matched nothing"
    return
  fi
  local output status
  output=$(validate "$copy/deploy" "$copy/out" 2>&1); status=$?
  check $([[ $status != 0 && $output == *"$expected"* ]]; echo $?) \
    "broken copy '$name' ($file) is rejected: $expected" "status $status; output:
$(grep -E -A2 'FAIL|error|Error' <<< "$output" | head -30)"
}
broken unknown-field kubernetes/deployment.yaml 's/readinessProbe:/readinesProbe:/' \
  "'\"readinesProbe\"' does not exist in type"
broken unknown-nested-field kubernetes/service.yaml '0,/targetPort: grpc/s//targetPrt: grpc/' \
  "'\"targetPrt\"' does not exist in type"
broken wrong-type kubernetes/hpa.yaml 's/minReplicas: 2/minReplicas: two/' \
  "FAIL: deploy/kubernetes/hpa.yaml[0] HorizontalPodAutoscaler/rosetta: valid"
broken missing-required kubernetes/service.yaml '0,/      port: 50051/{//d}' "spec/ports/0 must have required property port"
broken yaml-1.1-boolean kubernetes/service.yaml '0,/name: grpc/s//name: on/' "not assignable to type 'string'"
broken short-grace kubernetes/deployment.yaml 's/terminationGracePeriodSeconds: 50/terminationGracePeriodSeconds: 20/' \
  "FAIL: terminationGracePeriodSeconds 20 >="
broken fixed-threads kubernetes/deployment.yaml 's/--threads=$(ROSETTA_CPU_LIMIT)/--threads=4/' \
  "FAIL: --threads is the CPU limit"
broken unlisted-manifest kubernetes/kustomization.yaml '/- pdb.yaml/d' "FAIL: kustomization.yaml lists every manifest"
broken hpa-metric-unknown kubernetes/hpa.yaml 's/name: rosetta_waiting_texts/name: rosetta_queue_length/' \
  "FAIL: the HPA's queue metric is published by a prometheus-adapter rule"
broken rules-drift prometheus/rosetta-rules.yml 's/) > 0.05/) > 0.10/' \
  "FAIL: the PrometheusRule's groups equal prometheus/rosetta-rules.yml"
broken rules-bad-promql kubernetes/prometheusrule.yaml 's/> 0.8$/> > 0.8/' "FAIL: the PrometheusRule's groups equal"
broken rules-bad-promql-promtool prometheus/rosetta-rules.yml 's/> 0.8$/> > 0.8/' "parse error"
broken rules-threshold prometheus/rosetta-rules.yml 's/) > 0.05/) > 0.5/' "FAILED"
broken client-errors-count prometheus/rosetta-rules.yml 's/|INVALID_ARGUMENT|NOT_FOUND|/|/' "FAILED"
broken adapter-bad-query prometheus-adapter/config.yaml 's/sum by (<<.GroupBy>>)/sum by (<<.GroupBy>>/' \
  "adapter:metrics_query_0\": could not parse expression"
broken adapter-unknown-field prometheus-adapter/config.yaml 's/metricsQuery:/metricQuery:/' \
  "'\"metricQuery\"' does not exist in type"
broken scrape-config-bad-relabel prometheus/prometheus.yml 's/action: keep/action: kepp/' "unknown relabel action"
broken scrape-config-sd-field prometheus/prometheus.yml 's/- role: pod/- rol: pod/' \
  "FAIL: prometheus.yml job rosetta: kubernetes_sd_configs fields"

finish
