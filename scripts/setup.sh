#!/bin/sh
# Installs what the build, the tests and the benchmarks need on Debian 12.
# Idempotent; uses sudo when not run as root.
set -eu
packages="fio etcd-server etcd-client protobuf-compiler qemu-utils libnbd-bin fonts-dejavu-core"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing; install Rust with rustup first" >&2; exit 1; }
# fio's headers for the fio engine (fio-engine/build.rs).
"$(dirname "$0")/fetch-fio-source.sh"
