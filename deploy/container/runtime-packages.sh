#!/bin/sh
# Prints the Debian packages that hold the shared libraries the programs
# under ROOT link to (ldd, then dpkg -S), one a line: the runtime stage of
# the image installs exactly these, so the list follows the release
# (libdnnl2 on Debian 12, oneDNN 3's package on Debian 13, the t64 names)
# with no table of package names to keep.
#   runtime-packages.sh ROOT
set -eu
root=$1
libdir=$(find "$root" -name 'libeffnet.so.*' -printf '%h\n' | head -n 1)
find "$root" -type f \( -perm -u+x -o -name '*.so*' \) | while read -r f; do
  head -c 4 "$f" | grep -q ELF || continue
  LD_LIBRARY_PATH=$libdir ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
done | sort -u | while read -r lib; do
  case $lib in "$root"/*) continue ;; esac
  # usrmerge: dpkg may know a library by its /lib or its /usr/lib name.
  for p in "$lib" "$(readlink -f "$lib")" "/usr$lib" "${lib#/usr}"; do
    if pkg=$(dpkg -S "$p" 2>/dev/null); then
      echo "${pkg%%:*}"
      break
    fi
  done || true
done | sort -u
