#!/usr/bin/env bash
# Builds the citadel OCI image without Docker or a registry: a single layer
# holding the binary, exactly the shared libraries it links (from this
# Debian system), the CA roots and a passwd entry for the non-root user;
# no shell, no package manager. umoci (Debian's package) writes the OCI
# layout; skopeo or `podman load` can push or load it.
#
#   scripts/build-image.sh [OUT_DIR]        (default target/image)
#   CITADEL_BIN=path/to/citadel             use this binary (default: cargo build --release)
#
# Writes OUT_DIR/oci (OCI image layout, tag citadel:VERSION) and
# OUT_DIR/citadel-image.cdx.json (CycloneDX 1.6 SBOM: the binary with its
# SHA-256, each linked library's Debian package and version, the CA roots'
# package, and the Rust crates compiled in). The image runs as uid 65532,
# works with a read-only root filesystem (scratch space is /workspace/tmp,
# a volume), and its entrypoint is the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/image}
log() { echo "build-image: $*" >&2; }

command -v umoci >/dev/null || { apt-get update -qq && apt-get install -y -qq umoci; }
if [ -z "${CITADEL_BIN:-}" ]; then
  log "building the release binary"
  cargo build --release -p citadel -q
  CITADEL_BIN=target/release/citadel
fi
VERSION=$("$CITADEL_BIN" --version | awk '{print $2}')
UID_GID=65532

rm -rf "$OUT"; mkdir -p "$OUT"
ROOT="$OUT/rootfs"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/ssl/certs" "$ROOT/workspace/tmp"
install -m 0755 "$CITADEL_BIN" "$ROOT/usr/local/bin/citadel"

# The libraries the binary links, at the paths the loader looks for them.
libs=$(ldd "$CITADEL_BIN" | awk '/=>/ {print $3} /^[ \t]*\/lib/ {print $1}' | sort -u)
for lib in $libs; do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/nonexistent:/nonexistent\ncitadel:x:%s:%s:citadel:/workspace:/nonexistent\n' $UID_GID $UID_GID >"$ROOT/etc/passwd"
printf 'root:x:0:\ncitadel:x:%s:\n' $UID_GID >"$ROOT/etc/group"

log "writing the OCI layout (umoci)"
umoci init --layout "$OUT/oci"
umoci new --image "$OUT/oci:$VERSION"
umoci unpack --image "$OUT/oci:$VERSION" "$OUT/bundle" >/dev/null
cp -a "$ROOT/." "$OUT/bundle/rootfs/"
chown -R $UID_GID:$UID_GID "$OUT/bundle/rootfs/workspace/tmp"
umoci repack --image "$OUT/oci:$VERSION" "$OUT/bundle"
umoci config --image "$OUT/oci:$VERSION" \
  --config.user "$UID_GID:$UID_GID" \
  --config.entrypoint /usr/local/bin/citadel \
  --config.workingdir /workspace \
  --config.env CITADEL_WORKSPACE=/workspace \
  --config.env TMPDIR=/workspace/tmp \
  --config.exposedports 8443/tcp --config.exposedports 8444/tcp \
  --config.volume /workspace/tmp \
  --config.label org.opencontainers.image.title=citadel \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label org.opencontainers.image.description="Citadel secure MLOps platform" \
  --history.created_by "scripts/build-image.sh"
umoci gc --layout "$OUT/oci"
rm -rf "$OUT/bundle" "$ROOT"

log "writing the SBOM"
crates=$(cargo tree -p citadel -e normal --prefix none --locked --offline 2>/dev/null | awk '{print $1" "$2}' | sort -u || true)
[ -n "$crates" ] || { log "cargo tree listed no crates; the SBOM would be incomplete"; exit 1; }
python3 - "$OUT/citadel-image.cdx.json" "$CITADEL_BIN" "$VERSION" "$crates" $libs <<'PY'
import hashlib, json, subprocess, sys, uuid, datetime
out, binary, version, crates, libs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
import os
def deb(path):
    # dpkg knows a file under the path it was installed at: on a merged-/usr
    # system that may be /lib/... or /usr/lib/..., or the link's target.
    real = os.path.realpath(path)
    for p in dict.fromkeys([path, real, "/usr" + path, "/usr" + real, real.removeprefix("/usr")]):
        owner = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True).stdout
        if owner:
            pkg = owner.split(":")[0].strip()
            ver = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True).stdout.strip()
            if pkg and ver:
                return pkg, ver
    sys.exit(f"build-image: no Debian package owns {path}; the SBOM would be incomplete")
components, seen = [], set()
for lib in libs:
    pkg, ver = deb(lib)
    if pkg in seen:
        continue
    seen.add(pkg)
    components.append({"type": "library", "name": pkg, "version": ver, "bom-ref": f"deb:{pkg}",
                       "purl": f"pkg:deb/debian/{pkg}@{ver}?arch=amd64",
                       "properties": [{"name": "citadel:linked-file", "value": l} for l in libs if deb(l)[0] == pkg]})
ver = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ca-certificates"], capture_output=True, text=True).stdout.strip()
components.append({"type": "data", "name": "ca-certificates", "version": ver, "bom-ref": "deb:ca-certificates",
                   "purl": f"pkg:deb/debian/ca-certificates@{ver}?arch=all"})
for line in crates.splitlines():
    name, v = line.split()[:2]
    v = v.lstrip("v")
    if name == "citadel" or name.startswith("citadel-"):
        continue
    components.append({"type": "library", "name": name, "version": v, "bom-ref": f"cargo:{name}@{v}",
                       "purl": f"pkg:cargo/{name}@{v}"})
digest = hashlib.sha256(open(binary, "rb").read()).hexdigest()
bom = {
    "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
    "serialNumber": f"urn:uuid:{uuid.uuid4()}",
    "metadata": {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "tools": {"components": [{"type": "application", "name": "scripts/build-image.sh"}]},
                 "component": {"type": "container", "name": "citadel", "version": version, "bom-ref": "image"}},
    "components": [{"type": "application", "name": "citadel", "version": version, "bom-ref": "citadel-binary",
                    "hashes": [{"alg": "SHA-256", "content": digest}]}] + components,
    "dependencies": [{"ref": "image", "dependsOn": ["citadel-binary"] + [c["bom-ref"] for c in components if c["bom-ref"].startswith("deb:")]}],
}
json.dump(bom, open(out, "w"), indent=1)
PY
log "image: $OUT/oci:$VERSION ($(du -sh "$OUT/oci" | cut -f1)); SBOM: $OUT/citadel-image.cdx.json"
