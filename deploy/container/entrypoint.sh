#!/bin/sh
# effnetd in a container: picks the weights, then replaces itself with
# effnetd (exec), so that SIGTERM reaches effnetd directly. The image holds
# no weights:
#   EFFNETD_WEIGHTS set                  -> that file, or hf://ORG/NAME (pulled
#                                           into HF_HOME)
#   $EFFNETD_MODEL_DIR/model.safetensors -> the mounted weights (default
#                                           directory /models; KServe's
#                                           storage initializer: /mnt/models)
#   the only *.safetensors there         -> that file
#   otherwise                            -> exit 64 saying what to do
set -eu
dir=${EFFNETD_MODEL_DIR:-/models}
if [ -z "${EFFNETD_WEIGHTS:-}" ]; then
  if [ -r "$dir/model.safetensors" ]; then
    EFFNETD_WEIGHTS=$dir/model.safetensors
  else
    for f in "$dir"/*.safetensors; do
      [ -r "$f" ] || continue
      if [ -n "${EFFNETD_WEIGHTS:-}" ]; then
        echo "effnetd-entrypoint: more than one .safetensors file in $dir; name one with EFFNETD_WEIGHTS" >&2
        exit 64
      fi
      EFFNETD_WEIGHTS=$f
    done
  fi
  if [ -z "${EFFNETD_WEIGHTS:-}" ]; then
    echo "effnetd-entrypoint: no weights: mount a directory holding model.safetensors at $dir," \
         "or set EFFNETD_WEIGHTS to a file or to hf://ORG/NAME" >&2
    exit 64
  fi
  export EFFNETD_WEIGHTS
fi
exec /usr/sbin/effnetd "$@"
