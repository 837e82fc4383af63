#!/usr/bin/env bash
# Build Hyperledger Fabric v3.1.5's programs (peer, orderer, configtxgen, osnadmin, cryptogen,
# configtxlator) into a cache keyed by the source's checksum; a second run never rebuilds.
# Prints the install directory (bin/, config/) on stdout; progress goes to stderr.
#
# Usage: install-fabric.sh [CACHE_DIR]   (default: $FABRIC_CACHE or ~/.cache/health-receipts/fabric)
# Source, chosen by FABRIC_SOURCE:
#   a path to fabric-3.1.5-src.tar.xz   (default: ../shared/fabric/ beside the repository; checksum checked)
#   git                                 a clone of the v3.1.5 tag, commit checked (needs a network)
set -euo pipefail

FABRIC_RELEASE=3.1.5
FABRIC_COMMIT=86c1172bec37e6590c6b1ae6f847833df48d65fc
FABRIC_ARCHIVE_SHA256=8dd20639ed80529444b986d81267f22a8dc2f7f77e487e0be33cbd0b7e520877
FABRIC_GIT_URL=${FABRIC_GIT_URL:-https://github.com/hyperledger/fabric}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source_setting=${FABRIC_SOURCE:-$repo/../shared/fabric/fabric-$FABRIC_RELEASE-src.tar.xz}
cache=${1:-${FABRIC_CACHE:-$HOME/.cache/health-receipts/fabric}}

log() { printf 'install-fabric: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

command -v go >/dev/null || die "Go is required to build Fabric (go 1.26.4 or newer on PATH)"

if [[ "$source_setting" == git ]]; then
  key="git-${FABRIC_COMMIT:0:16}"
else
  [[ -f "$source_setting" ]] || die "no Fabric source archive at $source_setting (set FABRIC_SOURCE to the archive, or to 'git')"
  key="src-${FABRIC_ARCHIVE_SHA256:0:16}"
fi
dest="$cache/$FABRIC_RELEASE-$key"
if [[ -f "$dest/.complete" ]]; then
  echo "$dest"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fabric-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [[ "$source_setting" == git ]]; then
  log "cloning Fabric v$FABRIC_RELEASE"
  git clone --quiet --depth 1 --branch "v$FABRIC_RELEASE" "$FABRIC_GIT_URL" "$work/fabric-$FABRIC_RELEASE"
  got=$(git -C "$work/fabric-$FABRIC_RELEASE" rev-parse HEAD)
  [[ "$got" == "$FABRIC_COMMIT" ]] || die "tag v$FABRIC_RELEASE is at $got, expected $FABRIC_COMMIT"
else
  log "checking $source_setting"
  got=$(sha256sum "$source_setting" | cut -d' ' -f1)
  [[ "$got" == "$FABRIC_ARCHIVE_SHA256" ]] || die "checksum mismatch for $source_setting: $got, expected $FABRIC_ARCHIVE_SHA256"
  tar -xJf "$source_setting" -C "$work"
fi
src="$work/fabric-$FABRIC_RELEASE"

staging="$dest.partial"
rm -rf "$staging"
mkdir -p "$staging/bin" "$staging/config"
log "building peer orderer configtxgen osnadmin cryptogen configtxlator (about 2 min cold on 2 cores)"
start=$(date +%s)
(
  cd "$src"
  export GOTOOLCHAIN=${GOTOOLCHAIN:-auto} GOFLAGS=-mod=vendor
  go build -trimpath \
    -ldflags "-X github.com/hyperledger/fabric/common/metadata.Version=$FABRIC_RELEASE" \
    -o "$staging/bin/" ./cmd/peer ./cmd/orderer ./cmd/configtxgen ./cmd/osnadmin ./cmd/cryptogen ./cmd/configtxlator
) >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; die "go build failed (last lines above)"; }
cp "$src"/sampleconfig/{core,orderer,configtx}.yaml "$staging/config/"
chmod u+w "$staging"/config/*
echo "$FABRIC_RELEASE $key" >"$staging/VERSION"
rm -rf "$dest"
mv "$staging" "$dest"
touch "$dest/.complete"
log "built in $(($(date +%s) - start)) s into $dest"
echo "$dest"
