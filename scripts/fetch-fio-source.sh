#!/bin/sh
# Fetches the source of the installed fio (Debian's fio source package) into
# target/fio-src/ and configures it, so the fio engine (fio-engine/) compiles against fio's own
# headers. Enables deb-src for bookworm main if fio has no source entry. Idempotent.
set -eu
cd "$(dirname "$0")/.."
dest=target/fio-src
if ls "$dest"/fio-*/config-host.h >/dev/null 2>&1; then
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! apt-cache showsrc fio 2>/dev/null | grep -q "^Package: fio"; then
    $sudo tee /etc/apt/sources.list.d/vitastor-rs-debian-src.sources >/dev/null <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    $sudo apt-get update -qq
fi
dpkg-query -W -f='${Status}' dpkg-dev 2>/dev/null | grep -q "install ok installed" \
    || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dpkg-dev
mkdir -p "$dest"
version=$(dpkg-query -W -f='${Version}' fio)
(cd "$dest" && apt-get source -qq "fio=$version" >/dev/null 2>&1 || apt-get source -qq fio >/dev/null)
source_dir=$(ls -d "$dest"/fio-*/ | head -n 1)
(cd "$source_dir" && ./configure --disable-native >/dev/null)
echo "fio source ready in $source_dir"
