#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: system packages, the
# package itself, native unit tests (plain and under ASan/UBSan), lint, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
for pkg in gcc make libc6-dev libseccomp-dev python3-dev python3-pip busybox-static bubblewrap \
	slirp4netns docker-registry skopeo umoci openssl tmux; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	as_root apt-get update -q
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

PY=${PYTHON:-python3}
# Debian marks its Python externally managed; a pyenv or venv Python is not.
PIP_FLAGS=()
if "$PY" -m pip install --help | grep -q -- --break-system-packages; then
	PIP_FLAGS+=(--break-system-packages)
fi
"$PY" -m pip install -q "${PIP_FLAGS[@]}" ".[test]"

echo "== native unit tests"
make -s -C tests/native
echo "== native unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
make -s -C tests/native SANITIZE=1

echo "== ruff"
"$PY" -m ruff check boxlite_ffi tests benchmarks build_ffi.py setup.py
"$PY" -m ruff format --check boxlite_ffi tests benchmarks build_ffi.py setup.py

echo "== mypy (strict) on the package"
"$PY" -m mypy boxlite_ffi

echo "== pytest"
# Run from tests/ so the installed package is imported, not the source tree.
cd tests && exec "$PY" -m pytest -p no:cacheprovider "$@"
