#!/usr/bin/env bash
# Runs the whole suite (scripts/test.sh) on Debian 13 "trixie", whose oneDNN
# is 3.x, in a fresh root file system: the engine builds on 2.x (Debian 12)
# and 3.x, and a change to it must pass on both. Tests what is committed
# (a clone of HEAD), as CI does.
#   usage: scripts/test-debian13.sh [scripts/test.sh arguments]
# Needs root (debootstrap, chroot, mounts) and the network (a Debian mirror:
# this machine's, else deb.debian.org; DEBIAN_MIRROR overrides). The minimal
# base system is made once and kept in $EFFNET_DEBIAN13_DIR (default
# /var/tmp/effnet-debian13/base); each run copies it afresh, installs the
# packages (scripts/install-deps.sh) and runs the suite: about 35 minutes
# on 2 CPUs.
set -eu
cd "$(dirname "$0")/.."
src=$PWD
dir=${EFFNET_DEBIAN13_DIR:-/var/tmp/effnet-debian13}
base=$dir/base
root=$dir/root

if [ "$(id -u)" != 0 ]; then
  echo "test-debian13: needs root (debootstrap, chroot)" >&2
  exit 2
fi
command -v debootstrap >/dev/null || apt-get install -y debootstrap >/dev/null

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
fi
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

mkdir -p "$dir"
if [ ! -f "$base/.done" ]; then
  rm -rf "$base"
  debootstrap --variant=minbase trixie "$base" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
    { echo "test-debian13: debootstrap failed, see $dir/debootstrap.log" >&2; exit 1; }
  rm -f "$base/etc/apt/sources.list"
  cat >"$base/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  touch "$base/.done"
fi

unmount() {
  for m in dev/pts dev proc sys; do
    ! mountpoint -q "$root/$m" || umount "$root/$m"
  done
}
unmount
# Never remove a tree that still has a file system mounted in it.
if findmnt -rno TARGET | grep -q "^$root/"; then
  echo "test-debian13: something is still mounted under $root" >&2
  exit 1
fi
rm -rf "$root"
cp -a "$base" "$root"
git clone -q "$src" "$root/src"
cp /etc/resolv.conf "$root/etc/resolv.conf"
trap unmount EXIT
mount --bind /dev "$root/dev"
# Private, so that the root's own pseudo-terminal instance (the tests that
# need a terminal) stays in the root instead of propagating to this
# machine's /dev/pts where mounts are shared (systemd's default).
mount --make-private "$root/dev"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin CI=true \
  bash -c 'cd /src && bash scripts/test.sh "$@"' test-debian13 "$@"
