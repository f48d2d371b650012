#!/usr/bin/env bash
# One-command, idempotent installer for mmdopq.
#
#   VENV=.venv             where the virtual environment lives (default: <repo>/.venv)
#   MMCV_WHEEL=/path.whl   use this mmcv wheel instead of building one
#   MMDOPQ_CACHE=dir       wheel cache (default: ~/.cache/mmdopq/wheels)
#   MAX_JOBS=N             parallel compile jobs for the mmcv build (default: nproc)
#
# mmcv 2.1.0 (the newest mmcv that mmdet 3.3.0 accepts) has no prebuilt wheel
# for torch 2.14, so it is built from its source distribution once and cached,
# keyed by mmcv, torch, python and CPU/CUDA flavour. Every download goes through
# pip, so pip's index settings apply (pip.conf, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL,
# --proxy via PIP_PROXY / HTTPS_PROXY): a package mirror or proxy works.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
CACHE="${MMDOPQ_CACHE:-$HOME/.cache/mmdopq/wheels}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
PYTHON="${PYTHON:-python3}"

STEP="start"
T0=$SECONDS
step() {
  STEP="$1"
  printf '\n==> [mmdopq install %4ds] %s\n' "$((SECONDS - T0))" "$STEP"
}
fail() {
  printf '\nmmdopq install FAILED at step: %s\n' "$STEP" >&2
  [ -n "${1:-}" ] && printf '%s\n' "$1" >&2
  exit 1
}
trap 'fail "command exited with status $? (see the output above)"' ERR

step "create virtual environment at $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" || fail "python -m venv failed (is python3-venv installed?)"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip "setuptools>=77.0.3,<81" wheel ninja psutil \
  || fail "could not reach a package registry to install pip/setuptools (network?)"

have() {  # have <dist> <version>: is exactly this version installed?
  "$PY" - "$1" "$2" <<'PYEOF'
import sys
from importlib import metadata
try:
    sys.exit(0 if metadata.version(sys.argv[1]).split('+')[0] == sys.argv[2] else 1)
except metadata.PackageNotFoundError:
    sys.exit(1)
PYEOF
}

step "install torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
if have torch "$TORCH_VERSION" && have torchvision "$TORCHVISION_VERSION"; then
  echo "already installed"
else
  "${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
    || fail "pip could not install torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
fi

step "install mmcv==$MMCV_VERSION with compiled ops"
if have mmcv "$MMCV_VERSION" && "$PY" -c "import mmcv.ops" 2>/dev/null; then
  echo "already installed (mmcv.ops imports)"
else
  if [ -z "${MMCV_WHEEL:-}" ]; then
    flavour=$("$PY" - <<'PYEOF'
import shutil, torch
cuda = torch.cuda.is_available() and torch.version.cuda and shutil.which('nvcc')
print(f'cu{torch.version.cuda.replace(".", "")}' if cuda else 'cpu')
PYEOF
)
    pytag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    key="mmcv${MMCV_VERSION}-torch${TORCH_VERSION}-${pytag}-${flavour}"
    mkdir -p "$CACHE/$key"
    MMCV_WHEEL=$(ls "$CACHE/$key"/mmcv-*.whl 2>/dev/null | head -n 1 || true)
    if [ -n "$MMCV_WHEEL" ]; then
      echo "using cached wheel $MMCV_WHEEL"
    else
      echo "no cached wheel for $key: building from source (about 18 minutes on 2 cores)"
      build=$(mktemp -d)
      # mmcv 2.1.0's setup.py builds with setuptools < 70 (measured; it relies on
      # pkg_resources and old setuptools internals); torch pulls in a newer one, so pin
      # it back before pip reads the sdist (the requirements step restores the runtime pin).
      "${PIP[@]}" install -q "setuptools<70" || fail "could not install setuptools<70 for the mmcv build"
      # The source distribution, from the index pip is configured to use (no fixed URL).
      # pip prepares its metadata to check name and version (runs mmcv's setup.py, which
      # imports torch: hence no build isolation; MMCV_WITH_OPS=1 keeps the name "mmcv",
      # not "mmcv-lite"); it compiles nothing.
      MMCV_WITH_OPS=1 "${PIP[@]}" download -q --no-binary :all: --no-deps --no-build-isolation \
        -d "$build" "mmcv==$MMCV_VERSION" \
        || fail "pip could not download the mmcv $MMCV_VERSION source distribution (pip's index settings: \`$PY -m pip config list\`)"
      sdist="$build/mmcv-$MMCV_VERSION.tar.gz"
      [ -f "$sdist" ] || fail "pip download did not leave $sdist (got: $(ls "$build"))"
      echo "$MMCV_SDIST_SHA256  $sdist" | sha256sum -c --quiet \
        || fail "mmcv source distribution checksum mismatch: $sdist is not mmcv $MMCV_VERSION's sdist on PyPI (sha256 $MMCV_SDIST_SHA256)"
      tar -xzf "$sdist" -C "$build"
      src="$build/mmcv-$MMCV_VERSION"
      # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes C++17.
      sed -i 's/-std=c++17/-std=c++20/g; s#/std:c++17#/std:c++20#g' "$src/setup.py"
      grep -q -- '-std=c++20' "$src/setup.py" || fail "could not patch mmcv setup.py to C++20"
      force_cuda=0
      [ "$flavour" != cpu ] && force_cuda=1
      (cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA=$force_cuda MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$build/dist" . ) \
        || fail "building mmcv $MMCV_VERSION from source failed"
      built=$(ls "$build"/dist/mmcv-*.whl | head -n 1)
      # Copy then rename so an interrupted copy never looks like a cached wheel.
      cp "$built" "$CACHE/$key/.partial.whl"
      mv "$CACHE/$key/.partial.whl" "$CACHE/$key/$(basename "$built")"
      MMCV_WHEEL="$CACHE/$key/$(basename "$built")"
      rm -rf "$build"
      echo "cached $MMCV_WHEEL ($(du -h "$MMCV_WHEEL" | cut -f1))"
    fi
  fi
  [ -f "$MMCV_WHEEL" ] || fail "MMCV_WHEEL=$MMCV_WHEEL does not exist"
  "${PIP[@]}" install --no-deps --force-reinstall "$MMCV_WHEEL" || fail "pip could not install $MMCV_WHEEL"
fi

step "install mmengine, mmdet, timm, pycocotools and test tools (requirements/*.txt)"
"${PIP[@]}" install -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/mminstall.txt" \
  -r "$ROOT/requirements/tests.txt" || fail "pip could not install requirements/runtime.txt, mminstall.txt and tests.txt"
"$PY" -c "import mmcv.ops" || fail "mmcv.ops does not import (mmcv wheel: ${MMCV_WHEEL:-installed})"

step "install mmdopq (pip install -e .)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT" || fail "pip install -e . failed"

step "check imports"
"$PY" -c "import mmcv.ops, mmdet, timm, pycocotools, mmdopq; print('mmdopq', mmdopq.__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__)" \
  || fail "an import failed after installation"
printf '\nmmdopq install done in %ds (venv: %s)\n' "$((SECONDS - T0))" "$VENV"
