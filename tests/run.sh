#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: system packages, the
# package itself, native unit tests (plain and under ASan/UBSan), lint, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
for pkg in gcc make libc6-dev libseccomp-dev python3-dev python3-pip busybox-static bubblewrap \
	slirp4netns docker-registry skopeo umoci openssl tmux qemu-system-x86 cpio kmod e2fsprogs; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	as_root apt-get update -q
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

# The guest kernel of the cgroup layout tests (tests/guest_vm.py): Debian's,
# unpacked, not installed.
KERNEL_DIR=${BOXLITE_TEST_KERNEL:-/var/cache/boxlite-test/kernel}
if ! compgen -G "$KERNEL_DIR/boot/vmlinuz-*" >/dev/null; then
	kernel_pkg() { apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}'; }
	[ -n "$(kernel_pkg)" ] || as_root apt-get update -q
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$(kernel_pkg)")
	as_root mkdir -p "$KERNEL_DIR"
	as_root dpkg-deb -x "$tmp"/*.deb "$KERNEL_DIR"
	as_root depmod -b "$KERNEL_DIR" "$(ls "$KERNEL_DIR/lib/modules")"
	rm -rf "$tmp"
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
