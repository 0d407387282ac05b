#!/usr/bin/env bash
# Container check: build the project image from the Containerfile with podman, on a
# Debian 12 base made with debootstrap (no registry is reachable in CI), then run one pair's
# steps inside it and compare the products with a local run, file by file.
#
# The steps run through Snakemake's own container support (`--software-deployment-method
# apptainer` and each rule's `container:`); Apptainer is not installable here, so
# .ci/apptainer-podman-shim stands in for `apptainer exec` and runs each job with
# `podman run --network none`, the working directory bind-mounted.
#
# Needs root and podman/buildah/debootstrap/runc (installed with apt when absent). When it
# cannot run it prints "SKIP" with the reason and exits 77, never 0.
#
# Cache (PSFMATCH_CI_CACHE, default /var/cache/psfmatch-ci): the debootstrap root file
# system as a tarball (~75 MB; saves ~90 s) and the containers.conf; podman's own image
# store keeps the base and the dependency layer between runs on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${PSFMATCH_CI_CACHE:-/var/cache/psfmatch-ci}
VERSION=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
IMAGE=localhost/psfmatch:$VERSION
BASE=localhost/psfmatch-base:bookworm
t0=$(date +%s)
phase() { echo "[container-check +$(( $(date +%s) - t0 ))s] $*"; }
skip() { echo; echo "######## SKIP: container check not run: $* ########"; echo; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "needs root (apt, debootstrap, podman)"
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || skip "no project venv at $REPO/.venv (run .ci/run, or set PYTHON)"

# ---------------------------------------------------------------- packages
need=()
for tool in podman buildah debootstrap runc; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ "${#need[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null || skip "${need[*]} absent and no apt-get to install them"
    phase "installing ${need[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        podman buildah debootstrap runc fuse-overlayfs uidmap slirp4netns netavark \
        containernetworking-plugins ca-certificates >/dev/null; } \
        || skip "apt-get could not install podman buildah debootstrap runc"
fi
phase "podman $(podman --version | awk '{print $3}'), buildah $(buildah --version | awk '{print $3}')"

# Sandbox workarounds (../shared/docs/containers-on-ci.md): runc (crun rejects the hybrid
# cgroup layout), ulimits root can actually grant, no systemd.
mkdir -p "$CACHE"
export CONTAINERS_CONF=$CACHE/containers.conf
cat > "$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

WORK=$(mktemp -d /tmp/psfmatch-container.XXXXXX)
cleanup() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
        echo "[container-check] scratch directory kept for inspection: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------- base image
if ! podman image exists "$BASE"; then
    ROOTFS_TAR=$CACHE/debian-bookworm-python3.tar
    if [ ! -s "$ROOTFS_TAR" ]; then
        MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        MIRROR=${MIRROR:-$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
        [ -n "$MIRROR" ] || skip "no Debian mirror found in the apt sources for debootstrap"
        phase "debootstrap bookworm (minbase + python3) from $MIRROR"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
            || { tail -n 20 "$WORK/debootstrap.log"; skip "debootstrap failed (mirror unreachable?)"; }
        chroot "$WORK/rootfs" apt-get clean
        rm -rf "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/etc/apt/sources.list.d/"*
        : > "$WORK/rootfs/etc/apt/sources.list"   # the CI mirror is not the image's business
        tar -C "$WORK/rootfs" -cf "$ROOTFS_TAR.tmp" . && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
        rm -rf "$WORK/rootfs"
    fi
    podman import -q "$ROOTFS_TAR" "$BASE" >/dev/null
    phase "base image $BASE imported"
else
    phase "base image $BASE cached"
fi

# ---------------------------------------------------------------- build
b0=$(date +%s)
CA_MOUNT=()
[ -f /etc/ssl/certs/ca-certificates.crt ] && CA_MOUNT=(--volume /etc/ssl/certs:/host-certs:ro)
if ! podman build --quiet --build-arg "BASE=$BASE" "${CA_MOUNT[@]}" -t "$IMAGE" \
        -f "$REPO/Containerfile" "$REPO" > "$WORK/build.log" 2>&1; then
    tail -n 40 "$WORK/build.log"
    echo "FAIL: the image does not build"
    exit 1
fi
BUILD_S=$(( $(date +%s) - b0 ))
phase "built $IMAGE in ${BUILD_S} s ($(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"
podman run --rm --network none "$IMAGE" python -c \
    "import psfmatch, numpy, scipy, astropy; print('in the image: psfmatch', psfmatch.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'astropy', astropy.__version__)"

# ---------------------------------------------------------------- one pair, local vs image
"$PY" "$REPO/.ci/make_workdir.py" "$WORK/local" --pairs 1
"$PY" "$REPO/.ci/make_workdir.py" "$WORK/image" --pairs 1
SMK=("$PY" -m snakemake --snakefile "$REPO/Snakefile" --cores 2 --workflow-profile none)
r0=$(date +%s)
"${SMK[@]}" --directory "$WORK/local" > "$WORK/local.log" 2>&1 \
    || { tail -n 40 "$WORK/local.log"; echo "FAIL: local run"; exit 1; }
LOCAL_S=$(( $(date +%s) - r0 ))
phase "local run: ${LOCAL_S} s"

mkdir -p "$WORK/bin"
install -m 0755 "$REPO/.ci/apptainer-podman-shim" "$WORK/bin/apptainer"
echo "podman-image $IMAGE" > "$WORK/psfmatch.image"
r0=$(date +%s)
PATH=$WORK/bin:$PATH PSFMATCH_CONTAINER=$WORK/psfmatch.image \
    "${SMK[@]}" --directory "$WORK/image" --software-deployment-method apptainer \
    > "$WORK/image.log" 2>&1 \
    || { tail -n 60 "$WORK/image.log"; echo "FAIL: run in the image"; exit 1; }
IMAGE_S=$(( $(date +%s) - r0 ))
n_container=$(grep -c "^Activating singularity image" "$WORK/image.log" || true)
grep -m 3 "^Activating singularity image" "$WORK/image.log" | sed 's/^/    /'
phase "run in the image: ${IMAGE_S} s, ${n_container} jobs started in the container"
[ "$n_container" -ge 10 ] || { echo "FAIL: the steps did not run in the container"; exit 1; }

"$PY" "$REPO/.ci/compare_products.py" "$WORK/local/results" "$WORK/image/results" \
    || { echo "FAIL: products made in the image differ from the local run's"; exit 1; }
phase "PASS: image built in ${BUILD_S} s; one pair's products from the image equal the local run's"
