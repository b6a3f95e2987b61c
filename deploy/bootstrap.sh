#!/bin/sh
# One-shot bootstrap of the A/B stack: synthetic world -> CTMVM -> ONNX bundle -> the
# simulator's truth file -> feature store in Redis. The `bootstrap` service of
# deploy/docker-compose.yml runs it; locally, from the repository root:
#
#   PYTHON=.venv/bin/python TAGPROFILE_REDIS_URL=redis://localhost:6379/0 sh deploy/bootstrap.sh
#
# (without TAGPROFILE_REDIS_URL, `service load` uses the embedded Redis instead).
#
# A step whose output exists is skipped, so re-running `docker compose up` is quick, unless
# TP_FORCE=1 or the sizes, seed or epochs differ from the ones that produced it; once a step
# runs, every later step runs too. The feature store is loaded every time: it lives in
# Redis, which may have been restarted empty.
#
# Environment (default):
#   ARTIFACTS  (artifacts)  output root: data/abtest, runs/abtest, bundles/abtest, abtest/
#   PYTHON     (python)     interpreter with the project installed
#   TP_USERS (12000) TP_ITEMS (1000) TP_TAGS (200) TP_SEED (0)  synthetic world
#   TP_EPOCHS (5) TP_DEVICE (cpu)                               training
#   TP_CONFIG  (unset)      a training config file (default: the data set's family config)
#   TP_FORCE   (0)          1: redo every step
#   TP_DATA    (unset)      a prepared data set (real data) to use instead of a synthetic world
#   TP_TRUTH_SPLITS         users the simulator may replay: all splits of a synthetic world
#                           (its planted interests are known for everyone), test users of
#                           real data (their held-out interactions); default accordingly
set -eu

ARTIFACTS=${ARTIFACTS:-artifacts}
PYTHON=${PYTHON:-python}
TP_USERS=${TP_USERS:-12000}
TP_ITEMS=${TP_ITEMS:-1000}
TP_TAGS=${TP_TAGS:-200}
TP_SEED=${TP_SEED:-0}
TP_EPOCHS=${TP_EPOCHS:-5}
TP_DEVICE=${TP_DEVICE:-cpu}
TP_FORCE=${TP_FORCE:-0}
TP_CONFIG=${TP_CONFIG:-}

DATA=${TP_DATA:-$ARTIFACTS/data/abtest}
if [ -n "${TP_DATA:-}" ]; then
    TP_TRUTH_SPLITS=${TP_TRUTH_SPLITS:-test}
else
    TP_TRUTH_SPLITS=${TP_TRUTH_SPLITS:-train,valid,test}
fi
RUN=$ARTIFACTS/runs/abtest
BUNDLE=$ARTIFACTS/bundles/abtest
ABTEST=$ARTIFACTS/abtest
TRUTH=$ABTEST/truth.jsonl
STAMP=$ABTEST/bootstrap.params

log() {
    printf '[bootstrap] %s\n' "$*"
}

fail() {
    printf '[bootstrap] error: %s\n' "$*" >&2
    exit 2
}

# Echo a command, then run it (set -e stops the script if it fails).
run_cmd() {
    log "+ $*"
    "$@"
}

# needed MARKER: true if the step writing MARKER must run. After a step runs, force=1 makes
# every later step run as well (they depend on its output).
needed() {
    [ "$force" = 1 ] || [ ! -s "$1" ]
}

skip() {
    log "skip $1: $2 exists (TP_FORCE=1 redoes it)"
}

check_int() {
    case $2 in
        '' | *[!0-9]*) fail "$1 must be a non-negative integer, got '$2'" ;;
    esac
}

check_int TP_USERS "$TP_USERS"
check_int TP_ITEMS "$TP_ITEMS"
check_int TP_TAGS "$TP_TAGS"
check_int TP_SEED "$TP_SEED"
check_int TP_EPOCHS "$TP_EPOCHS"
case $TP_FORCE in
    1 | true | yes) force=1 ;;
    0 | false | no | '') force=0 ;;
    *) fail "TP_FORCE must be 0 or 1, got '$TP_FORCE'" ;;
esac

started=$(date +%s)
params="data=${TP_DATA:-synthetic} users=$TP_USERS items=$TP_ITEMS tags=$TP_TAGS seed=$TP_SEED"
params="$params epochs=$TP_EPOCHS config=${TP_CONFIG:-family} truth=$TP_TRUTH_SPLITS"
log "artifacts in $ARTIFACTS; $params; redis ${TAGPROFILE_REDIS_URL:-embedded}"

# Outputs of other parameters (or of unknown ones: no stamp) are not reused.
if [ "$force" = 0 ] && [ -e "$ARTIFACTS/runs/abtest" ]; then
    previous=$(cat "$STAMP" 2>/dev/null || echo "unknown parameters")
    if [ "$previous" != "$params" ]; then
        log "existing artifacts were made with $previous: rebuilding them"
        force=1
    fi
fi
mkdir -p "$ABTEST"
printf '%s\n' "$params" >"$STAMP"

if [ -n "${TP_DATA:-}" ]; then
    [ -s "$DATA/stats.json" ] || fail "TP_DATA=$DATA is not a prepared data set (no stats.json)"
    log "using the prepared data set $DATA"
elif needed "$DATA/stats.json"; then
    rm -rf "$DATA"
    run_cmd "$PYTHON" -m training prepare --dataset synthetic --users "$TP_USERS" \
        --items "$TP_ITEMS" --tags "$TP_TAGS" --seed "$TP_SEED" --out "$DATA"
    force=1
else
    skip prepare "$DATA/stats.json"
fi

if needed "$RUN/checkpoint.pt"; then
    rm -rf "$RUN"
    if [ -n "$TP_CONFIG" ]; then set -- --config "$TP_CONFIG"; else set --; fi
    run_cmd "$PYTHON" -m training train --data "$DATA" --model ctmvm --out "$RUN" \
        --epochs "$TP_EPOCHS" --seed "$TP_SEED" --device "$TP_DEVICE" "$@"
    force=1
else
    skip train "$RUN/checkpoint.pt"
fi

if needed "$BUNDLE/manifest.json"; then
    mkdir -p "$(dirname "$BUNDLE")"
    run_cmd "$PYTHON" -m training export --run "$RUN" --data "$DATA" --out "$BUNDLE"
    force=1
else
    skip export "$BUNDLE/manifest.json"
fi

if needed "$TRUTH"; then
    # written aside, then renamed: an interrupted run leaves no half truth file behind
    partial=$ABTEST/truth.partial.jsonl
    rm -f "$partial"
    run_cmd "$PYTHON" -m training truth --data "$DATA" --out "$partial" \
        --splits "$TP_TRUTH_SPLITS"
    mv "$partial" "$TRUTH"
else
    skip truth "$TRUTH"
fi

run_cmd "$PYTHON" -m service load --bundle "$BUNDLE"

log "done in $(($(date +%s) - started)) s: bundle $BUNDLE, truth $TRUTH"
