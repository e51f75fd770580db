#!/usr/bin/env bash
# A real run of the deployment, on one machine: the image (deploy/image/build.sh) checked on its
# own (non-root, read-only root filesystem, /health and an embedding), then the chart's
# Deployment with two replicas under `podman kube play`, Debian's nginx balancing them and
# Debian's Prometheus scraping both with the chart's recording rule. A load run through the
# balancer (its client-side rate against Prometheus's requests_per_second), then a second run
# with one replica killed in the middle (failures counted; nginx retries on the other replica).
#
#   scripts/deploy-check.sh [SECONDS]     (the first load run's length, default 75)
#
# Needs podman, buildah, runc, nginx, prometheus, musl-tools (Debian), the models
# (scripts/fetch-models.sh) and cargo. Exits non-zero when a check fails.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
SECONDS_RUN="${1:-75}"
MODELS="${EDGECUT_MODELS:-$HOME/.cache/edgecut/models}"
IMAGE=localhost/edgecut:0.1.0
EMB=all-MiniLM-L6-v2.q8_0
export CONTAINERS_CONF="$ROOT/deploy/check/containers.conf"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    podman kube down "$WORK/deployment.yaml" >/dev/null 2>&1 || true
    podman rm -f edgecut-check >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "deploy-check: FAILED: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # URL, what
    for _ in $(seq 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
    fail "$2 did not answer at $1"
}

[ -f "$MODELS/$EMB.gguf" ] || fail "no $MODELS/$EMB.gguf (scripts/fetch-models.sh)"
deploy/image/build.sh "$IMAGE"
cargo build --release --locked -p edgecut-server --example load_api >/dev/null 2>&1
LOAD=target/release/examples/load_api

echo "== the image alone: read-only root, non-root, /health and an embedding"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ "$user" = "65532:65532" ] || fail "image user is '$user'"
port=$(free_port)
podman run -d --name edgecut-check --read-only -p "127.0.0.1:$port:8080" \
    -v "$MODELS:/models:ro" "$IMAGE" serve --http 0.0.0.0:8080 -m "/models/$EMB.gguf" >/dev/null
wait_for "http://127.0.0.1:$port/health" "the container"
uid=$(podman top edgecut-check huser user | tail -1)
echo "process user: $uid"
echo "$uid" | grep -q 65532 || fail "the server runs as '$uid'"
podman exec edgecut-check /usr/local/bin/edgecut --version >/dev/null
if podman run --rm --read-only --entrypoint /usr/local/bin/edgecut "$IMAGE" \
    convert /models/x -o /write-test.gguf >/dev/null 2>&1; then
    fail "the root filesystem took a write"
fi
out=$(curl -sf "http://127.0.0.1:$port/v1/embeddings" -H 'content-type: application/json' \
    -d "{\"model\": \"$EMB\", \"input\": \"A man is eating food.\"}")
dims=$(echo "$out" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"][0]["embedding"]))')
[ "$dims" = 384 ] || fail "embedding of $dims values"
echo "health 200, embedding of 384 values, as uid 65532 on a read-only root"
podman rm -f edgecut-check >/dev/null

echo "== two replicas under podman kube play"
"${HELM:-$HOME/.cache/edgecut/bin/helm}" template edgecut deploy/helm/edgecut \
    --set autoscaling.mode=none --set replicaCount=2 --set image.pullPolicy=Never \
    --set models.hostPath="$MODELS" --set "models.files={$EMB.gguf}" \
    --set server.drainTimeoutSeconds=5 > "$WORK/all.yaml"
python3 - "$WORK/all.yaml" "$WORK/deployment.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Deployment"]
# podman kube play publishes every containerPort on the host, so two replicas would both bind
# 8080 (podman issue 16765); in a cluster they are only documentation. Drop them here, and name
# the probes' port by number.
for d in docs:
    for c in d["spec"]["template"]["spec"]["containers"]:
        port = c.pop("ports")[0]["containerPort"]  # http first
        for probe in ("readinessProbe", "livenessProbe"):
            c[probe]["httpGet"]["port"] = port
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
podman kube play "$WORK/deployment.yaml" >/dev/null
mapfile -t pods < <(podman pod ps --filter name=edgecut-edgecut --format '{{.Name}}' | sort)
[ "${#pods[@]}" -eq 2 ] || fail "${#pods[@]} pods: ${pods[*]}"
ip_of() { podman inspect "$(podman pod inspect "$1" --format '{{.InfraContainerID}}')" \
    --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}'; }
A=$(ip_of "${pods[0]}"); B=$(ip_of "${pods[1]}")
echo "replicas: ${pods[0]} at $A, ${pods[1]} at $B"
wait_for "http://$A:8080/health" "${pods[0]}"
wait_for "http://$B:8080/health" "${pods[1]}"

LB=$(free_port); SPLIT=$(free_port)
mkdir -p "$WORK/nginx"
sed -e "s|@WORK@|$WORK/nginx|g" -e "s|@A@|$A|g" -e "s|@B@|$B|g" -e "s|@PORT@|$LB|" \
    -e "s|@SPLIT@|$SPLIT|" deploy/check/nginx.conf.in > "$WORK/nginx/nginx.conf"
nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
PROM=$(free_port)
sed -e "s|@ROOT@|$ROOT|" -e "s|@A@|$A|" -e "s|@B@|$B|" deploy/check/prometheus.yml.in \
    > "$WORK/prometheus.yml"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$LB/health" "nginx"
wait_for "http://127.0.0.1:$PROM/-/ready" "prometheus"

echo "== load through the balancer for $SECONDS_RUN s"
$LOAD "http://127.0.0.1:$LB" embed-for "$EMB" 16 "$SECONDS_RUN" | tee "$WORK/load1.txt"
client=$(sed -nE 's/.* = ([0-9.]+) req\/s.*/\1/p' "$WORK/load1.txt")
errors=$(sed -nE 's/.*; ([0-9]+) errors.*/\1/p' "$WORK/load1.txt")
# requests_per_second as the recording rule (and the adapter's query) computes it, over the
# last minute of the run.
prom=$(curl -sf "http://127.0.0.1:$PROM/api/v1/query" \
    --data-urlencode 'query=service:requests_per_second:rate1m{service="llm-inference"}' |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
echo "client-side $client req/s; Prometheus requests_per_second $prom"
python3 - "$client" "$prom" "$errors" <<'PY'
import sys
client, prom, errors = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
off = abs(prom - client) / client
print(f"Prometheus against the client: {100 * (prom / client - 1):+.1f}%")
assert errors == 0, f"{errors} errors"
assert off <= 0.10, f"requests_per_second is {100 * off:.1f}% off the client's rate"
PY

echo "== one replica killed in the middle of a run"
# Two split clients (devices running MiniLM's first 3 stages) through the balancer's TCP
# proxy: round robin puts one on each replica.
python3 -c 'for i in range(600): print(f"split request {i}: the device sends stage 3 to the server")' \
    > "$WORK/texts.txt"
for d in 1 2; do
    "$ROOT/target/release/edgecut" embed --device cpu --threads 1 --batch-size 1 \
        -m "$MODELS/$EMB.gguf" --server "127.0.0.1:$SPLIT" --cut 3 --encoding f32 \
        < "$WORK/texts.txt" > "$WORK/split$d.json" 2> "$WORK/split$d.err" &
    eval "device$d=\$!"
    sleep 0.3
done
( sleep 5; podman pod kill "${pods[1]}" >/dev/null; echo "killed ${pods[1]} at 5 s" ) &
killer=$!
$LOAD "http://127.0.0.1:$LB" embed-for "$EMB" 16 12 | tee "$WORK/load2.txt"
wait "$killer"
[ "$(podman pod inspect "${pods[1]}" --format '{{.State}}')" != Running ] ||
    fail "${pods[1]} still runs"
lost=$(sed -nE 's/.*; ([0-9]+) errors.*/\1/p' "$WORK/load2.txt")
total=$(sed -nE 's/.*: ([0-9]+) requests in.*/\1/p' "$WORK/load2.txt")
echo "with a replica killed: $lost of $total requests failed (nginx retried the rest on the other)"
# Bounded: at most the requests in flight on the killed replica (16 clients).
[ "$lost" -le 16 ] || fail "$lost requests failed"
served=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LB/health")
wait "$device1" "$device2" || fail "a split client failed"
"$ROOT/target/release/edgecut" embed --device cpu -m "$MODELS/$EMB.gguf" < "$WORK/texts.txt" \
    > "$WORK/local.json"
python3 - "$WORK" <<'PY'
import json, math, sys
w = sys.argv[1]
local = json.load(open(f"{w}/local.json"))
for d in (1, 2):
    got = json.load(open(f"{w}/split{d}.json"))
    err = open(f"{w}/split{d}.err").read()
    fell = err.count("fell back")
    assert len(got) == len(local), f"device {d}: {len(got)} of {len(local)} embeddings"
    worst = min(sum(a * b for a, b in zip(g, l)) /
                (math.sqrt(sum(a * a for a in g)) * math.sqrt(sum(b * b for b in l)))
                for g, l in zip(got, local))
    print(f"split device {d}: {len(got)} of {len(local)} embeddings, {fell} fallbacks to the"
          f" device, worst cosine to local {worst:.6f}")
    assert worst >= 0.9999
PY
echo "after the kill the balancer answers /health with $served"
[ "$served" = 200 ] || fail "the balancer does not answer after the kill"
echo "deploy-check: passed"
