#!/bin/sh
# Installs what the build, the tests and the benchmarks need on Debian 12.
# Idempotent; uses sudo when not run as root.
set -eu
cd "$(dirname "$0")/.."
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
packages="fio etcd-server etcd-client protobuf-compiler libnbd-bin fonts-dejavu-core busybox-static cpio libglib2.0-dev pkg-config python3 python3-venv nvme-cli libjerasure-dev libgf-complete-dev libisal-dev"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi
# QEMU 10.0.2 (qemu-utils and qemu-system-x86 of the same version, for the QEMU driver and
# the guest tests) comes from Debian's bookworm-backports (deb, and deb-src for its headers);
# bookworm itself has 7.2.
installed() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | grep -q "install ok installed 1:10\..*bpo12"; }
if ! installed qemu-utils || ! installed qemu-system-x86; then
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        $sudo tee /etc/apt/sources.list.d/vitastor-rs-backports.sources >/dev/null <<'SOURCES'
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        -t bookworm-backports qemu-utils qemu-system-x86
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing; install Rust with rustup first" >&2; exit 1; }
# fio's headers for the fio engine (fio-engine/build.rs).
./scripts/fetch-fio-source.sh
# QEMU's headers for the QEMU driver (qemu-driver/build.rs).
./scripts/fetch-qemu-source.sh
# A Debian kernel for the guest tests (testkit/src/guest/): downloaded, unpacked, not installed.
./scripts/fetch-guest-kernel.sh
# SPDK's JSON-RPC client (PyPI package spdk: rpc.py as spdk-rpc) for the NVMe-oF gateway's
# RPC tests, in a virtual environment (Debian's python3 refuses system-wide pip installs).
if [ ! -x target/spdk-venv/bin/spdk-rpc ]; then
    python3 -m venv target/spdk-venv
    target/spdk-venv/bin/pip install --quiet spdk==26.9
fi
