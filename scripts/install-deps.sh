#!/usr/bin/env bash
# Installs every Debian package that the build, the tests and the benchmarks
# need. Idempotent: safe to run again; skips apt when everything is present.
set -eu

pkgs=(
  # build (scdoc: the man pages; GnuTLS: the listeners' certificates, with
  # the TLS of libmicrohttpd)
  build-essential meson ninja-build pkg-config cmake
  libdnnl-dev libjansson-dev libmicrohttpd-dev libgnutls28-dev libturbojpeg0-dev libjpeg62-turbo-dev
  libpng-dev libsystemd-dev libssl-dev libcurl4-openssl-dev scdoc
  # gRPC: HTTP/2 (nghttp2), the protobuf messages (protoc-c generates
  # them from src/server/kserve.proto at build time) and zlib (requests
  # compressed with grpc-encoding gzip or deflate)
  libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev
  # tests: references and tools
  python3 python3-numpy python3-torch python3-torchvision python3-pil
  python3-matplotlib python3-skimage libjpeg-turbo-progs  # sample photos, cjpeg
  curl ca-certificates
  # gRPC tests: a real gRPC client, with stubs generated from the same .proto
  python3-grpcio python3-grpc-tools
  # TLS tests: certificates made with openssl req, s_client and s_server
  openssl
  # operations tests: systemd-analyze and systemd-socket-activate, promtool,
  # YAML (Kubernetes manifests, OpenAPI); podman and debootstrap for the
  # container image test (meson test --setup container --suite container)
  systemd prometheus python3-yaml podman debootstrap
  # hostile suite: slow-header, slow-body and slow-read clients
  slowhttptest
  # scale-out: the rolling-restart test behind HAProxy (suite rollout) and
  # the schema checks of deploy/kubernetes and deploy/kserve (JSON Schema;
  # Debian's kubectl needs a cluster even for --dry-run=client)
  haproxy python3-jsonschema
  # the try-it page in a headless browser (integration/ui-browser)
  chromium chromium-driver python3-selenium
  # benchmarks (tests/bench): ONNX Runtime peer from npm, and python3-onnx
  # to write its int8 (QDQ) model; load generator and the FastAPI + PyTorch
  # peer server for serve-peers.sh
  nodejs python3-onnx
  wrk python3-fastapi python3-uvicorn
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Some nodejs builds carry npm inside; Debian's ships it as its own package.
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi
