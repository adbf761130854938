#!/bin/sh
# effnetd in a container: picks the weights, then runs effnetd as PID 1's
# child-free replacement (exec), so that SIGTERM reaches it directly.
#   EFFNETD_WEIGHTS set            -> that file
#   /models/model.safetensors      -> the mounted weights
#   otherwise                      -> the built-in seeded EfficientNetV2-S
set -eu
if [ -z "${EFFNETD_WEIGHTS:-}" ]; then
  if [ -r /models/model.safetensors ]; then
    EFFNETD_WEIGHTS=/models/model.safetensors
  else
    EFFNETD_WEIGHTS=/usr/share/effnetd/default-v2s.safetensors
    echo "effnetd-entrypoint: no /models/model.safetensors; serving the built-in seeded weights" >&2
  fi
  export EFFNETD_WEIGHTS
fi
exec /usr/sbin/effnetd "$@"
