#!/usr/bin/env bash
# Installs what is needed (Debian packages, as root), builds, and starts the
# effnetd daemon. Without --weights it serves the seeded default: untrained
# weights generated once into build/default-v2s.safetensors (nothing is
# downloaded; the classes it names mean nothing). Extra arguments go to
# effnetd, e.g. --weights hf://timm/tf_efficientnetv2_s.in21k_ft_in1k
# --listen 0.0.0.0:8080 --precision auto; see effnetd --help.
set -eu
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build
ninja -C build

weights_args=()
case " $* " in
  *" --weights "* | *" --weights="*) ;;
  *)
    weights=build/default-v2s.safetensors
    if [ ! -f "$weights" ]; then
      echo "effnetd: generating the seeded default weights (untrained) into $weights" >&2
      ./build/src/cli/effnet init-weights --variant s --seed 1 -o "$weights"
    fi
    weights_args=(--weights "$weights")
    ;;
esac
listen="${EFFNETD_LISTEN:-127.0.0.1:8080}"
photo=/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg
echo "effnetd: starting on $listen; open http://$listen/ in a browser, or try:" >&2
echo "  curl -s -H 'Content-Type: image/jpeg' --data-binary @$photo http://$listen/v1/classify" >&2
exec ./build/src/daemon/effnetd "${weights_args[@]}" --listen "$listen" "$@"
