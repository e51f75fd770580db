#!/usr/bin/env bash
# Checks the deployment files (run by scripts/test.sh): helm lint; helm template of the chart
# with each autoscaling mode (none, hpa, keda), every object through kubernetes-validate
# --strict (objects of CRDs, which it has no schema for, are reported and skipped); the
# committed plain manifests equal a fresh render; promtool check and test of the recording rule
# and of the prometheus-adapter query on synthetic series; the HPA arithmetic test.
#
# Needs helm ($HELM, default ~/.cache/edgecut/bin/helm), kubernetes-validate and PyYAML in the
# venv, and promtool (scripts/setup.sh installs them all).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EDGECUT_VENV:-$HOME/.cache/edgecut/venv}"
HELM="${HELM:-$HOME/.cache/edgecut/bin/helm}"
K8S_VERSION="${K8S_VERSION:-1.35.0}"
CHART=deploy/helm/edgecut
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$HELM" lint --strict "$CHART"
for mode in none hpa keda; do
    "$HELM" template edgecut "$CHART" --set autoscaling.mode="$mode" > "$WORK/$mode.yaml"
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$WORK/$mode.yaml"
    kinds=$(grep -E '^kind:' "$WORK/$mode.yaml" | sort | tr '\n' ' ')
    echo "deploy: autoscaling.mode=$mode renders $kinds"
done
grep -q 'kind: HorizontalPodAutoscaler' "$WORK/hpa.yaml" && ! grep -q ScaledObject "$WORK/hpa.yaml"
grep -q 'kind: ScaledObject' "$WORK/keda.yaml" && ! grep -q HorizontalPodAutoscaler "$WORK/keda.yaml"
! grep -qE 'kind: (HorizontalPodAutoscaler|ScaledObject)' "$WORK/none.yaml"

# The plain manifests for kubectl/kustomize users are the chart's render, kept in step.
for mode in hpa keda; do
    if ! diff -u "deploy/manifests/edgecut-$mode.yaml" "$WORK/$mode.yaml"; then
        echo "deploy/manifests/edgecut-$mode.yaml differs from the chart's render: rerun" \
             "$HELM template edgecut $CHART --set autoscaling.mode=$mode" >&2
        exit 1
    fi
done

# The adapter's query with its templates filled in as the adapter fills them for the HPA's
# selector, as a rule promtool can evaluate.
query=$("$VENV/bin/python" - <<'PY'
import yaml
r = yaml.safe_load(open("deploy/prometheus-adapter-values.yaml"))["rules"]["external"][0]
q = r["metricsQuery"].replace("<<.Series>>", "edgecut_http_requests_total")
print(q.replace("<<.LabelMatchers>>", 'namespace="default",service="llm-inference"'))
PY
)
cat > deploy/tests/adapter-rules.yaml <<EOF2
# Made by scripts/deploy-validate.sh from deploy/prometheus-adapter-values.yaml.
groups:
  - name: adapter
    rules:
      - record: adapter:requests_per_second
        expr: $query
EOF2
promtool check rules "$CHART/rules/requests.yaml" deploy/tests/adapter-rules.yaml
promtool test rules deploy/tests/rules-test.yaml
"$VENV/bin/python" deploy/tests/test_hpa.py
echo "deploy: all checks passed"
