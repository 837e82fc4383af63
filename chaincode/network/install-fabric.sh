#!/usr/bin/env bash
# Build Hyperledger Fabric's programs with `go install` at a pinned release commit (v3.1.5),
# into a cache shared by later runs. Prints the bin directory on success.
# Usage: install-fabric.sh [CACHE_DIR]   (default: $FABRIC_CACHE or ~/.cache/health-receipts/fabric)
set -euo pipefail

FABRIC_RELEASE=3.1.5
FABRIC_COMMIT=86c1172bec37e6590c6b1ae6f847833df48d65fc
# Fabric's go.mod says `module github.com/hyperledger/fabric` (no /v3), so release tags are not
# valid module versions: use the canonical pseudo-version of the release commit. Never @latest
# (that resolves to the 1.4 tree).
FABRIC_PSEUDO=v1.4.0-rc1.0.20260618074816-86c1172bec37

cache=${1:-${FABRIC_CACHE:-$HOME/.cache/health-receipts/fabric}}
dest="$cache/$FABRIC_RELEASE-${FABRIC_COMMIT:0:12}"
stamp="$dest/.complete"
if [[ -f "$stamp" ]]; then
  echo "$dest"
  exit 0
fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$dest/bin" "$dest/builders/ccaas/bin" "$dest/config"
log="$dest/build.log"
echo "building Fabric $FABRIC_RELEASE (${FABRIC_COMMIT:0:12}) into $dest; log: $log" >&2
start=$(date +%s)
for cmd in peer orderer configtxgen cryptogen osnadmin; do
  echo "  go install cmd/$cmd ..." >&2
  GOBIN="$dest/bin" go install \
    -ldflags "-X github.com/hyperledger/fabric/common/metadata.Version=$FABRIC_RELEASE" \
    "github.com/hyperledger/fabric/cmd/$cmd@$FABRIC_PSEUDO" >>"$log" 2>&1 \
    || { echo "go install $cmd failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
done
for cmd in detect build release; do
  echo "  go install ccaas_builder/cmd/$cmd ..." >&2
  GOBIN="$dest/builders/ccaas/bin" go install \
    "github.com/hyperledger/fabric/ccaas_builder/cmd/$cmd@$FABRIC_COMMIT" >>"$log" 2>&1 \
    || { echo "go install ccaas $cmd failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
done
src="$(go env GOMODCACHE)/github.com/hyperledger/fabric@$FABRIC_PSEUDO"
cp "$src"/sampleconfig/{core,orderer,configtx}.yaml "$dest/config/"
chmod u+w "$dest"/config/*
touch "$stamp"
echo "Fabric built in $(( $(date +%s) - start )) s" >&2
echo "$dest"
