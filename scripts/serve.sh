#!/usr/bin/env bash
# Start the MONAI Label server with the Universal Model app:
#   scripts/serve.sh [--studies DIR] [--port N] [--host IP] [--conf KEY VALUE ...]
# Without --studies it serves a folder of synthetic CT phantoms, written on first use into
# $UNIVERSAL_CACHE_DIR/phantom-studies (default ~/.cache/universal/phantom-studies). Without the released
# weights on disk it also serves a demo model trained on phantoms (built once, about six minutes on two
# cores; `universal demo-model`), announced as such, until the released weights are there (downloaded
# by the server when it can). Other arguments go to `monailabel start_server` unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/install.sh

studies=""
host="0.0.0.0"
port="8000"
model_dir="apps/universal/model"
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    -s|--studies) studies="$2"; shift 2 ;;
    -i|--host) host="$2"; shift 2 ;;
    -p|--port) port="$2"; shift 2 ;;
    --conf) [ "$2" = model_dir ] && model_dir="$3"; rest+=("$1" "$2" "$3"); shift 3 ;;
    *) rest+=("$1"); shift ;;
  esac
done

if [ -z "$studies" ]; then
  studies="${UNIVERSAL_CACHE_DIR:-$HOME/.cache/universal}/phantom-studies"
  mkdir -p "$studies"
  for seed in 1 2 3 4; do
    image="$studies/phantom_$seed.nii.gz"
    [ -f "$image" ] && continue
    lesions=()
    [ $((seed % 2)) -eq 0 ] && lesions=(--lesions)
    echo "serve: writing phantom $image"
    .venv/bin/universal phantom "$image" --seed "$seed" --shape 160 160 96 --spacing 2.5 2.5 5 "${lesions[@]}"
  done
fi

demo="$(.venv/bin/universal demo-model --unless-weights "$model_dir")"
[ -n "$demo" ] && rest+=(--conf demo_model "$demo") && echo "serve: no released weights on disk; serving the demo model $demo (synthetic images only) until they are there"

export MONAI_LABEL_TRACKING_ENABLED="${MONAI_LABEL_TRACKING_ENABLED:-false}"
exec .venv/bin/python -m monailabel.main start_server --app apps/universal --studies "$studies" \
  --host "$host" --port "$port" --conf models universal "${rest[@]}"
