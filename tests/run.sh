#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: system packages, the
# package itself, native unit tests (plain and under ASan/UBSan), the C example
# against the installed library (plain, and both under ASan/UBSan), lint, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
for pkg in gcc make libc6-dev libseccomp-dev python3-dev python3-pip busybox-static bubblewrap \
	slirp4netns passt docker-registry skopeo umoci openssl tmux qemu-system-x86 cpio kmod e2fsprogs pkgconf; do
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
"$PY" -m pip install -q "${PIP_FLAGS[@]}" ".[test,server]"

# The vm engine's guest kernel (Debian's cloud kernel), fetched through apt
# and recorded by the package itself (a verified cache is kept).  As root: the
# cache is the machine's; PYTHONPATH finds a package pip put in a user site.
site=$(cd tests && "$PY" -c 'import boxlite_ffi, pathlib; print(pathlib.Path(boxlite_ffi.__file__).parents[1])')
(cd tests && as_root env PYTHONPATH="$site" "$PY" -m boxlite_ffi.vm fetch-kernel)

echo "== native unit tests"
make -s -C tests/native PYTHON="$PY"
echo "== native unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
make -s -C tests/native SANITIZE=1 PYTHON="$PY"

# The installed package, not the source tree: from tests/ (no boxlite_ffi there).
installed() { (cd tests && "$PY" "$@"); }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
installed -c 'import sys, pathlib; from boxlite_ffi.image.busybox import busybox_rootfs
busybox_rootfs(pathlib.Path(sys.argv[1]))' "$work/rootfs"
# run_example BIN: a command's output and status come through the program
# (and nothing else: a sanitizer's report fails it).
run_example() {
	local out err rc=0
	out=$("$1" "$work/rootfs" sh -c 'echo hello; echo to stderr >&2; exit 3' 2>"$work/stderr") || rc=$?
	err=$(cat "$work/stderr")
	if [ "$out" != hello ] || [ "$err" != "to stderr" ] || [ "$rc" != 3 ]; then
		printf '%s: exited %s, printed:\n%s\nstderr:\n%s\n' "$1" "$rc" "$out" "$err" >&2
		exit 1
	fi
}
echo "== examples/c built against the installed library (pkg-config)"
PKG_CONFIG_PATH=$(installed -m boxlite_ffi.paths --pkg-config-path) \
	make -s -C examples/c BIN="$work/boxlite-run"
run_example "$work/boxlite-run"
echo "== the library and examples/c under AddressSanitizer + UndefinedBehaviorSanitizer"
"$PY" build_ffi.py --library "$work/asan" \
	--cflags "-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -g -O1" >/dev/null
PKG_CONFIG_PATH="$work/asan/lib/pkgconfig" make -s -C examples/c SANITIZE=1 BIN="$work/asan/boxlite-run"
# Its shim and agent are the installed ones (static: no sanitizer runtime).
BOXLITE_LIBEXEC=$(installed -m boxlite_ffi.paths --libexec-dir) run_example "$work/asan/boxlite-run"
rm -rf "$work"
trap - EXIT

echo "== ruff"
"$PY" -m ruff check boxlite_ffi tests benchmarks build_ffi.py setup.py
"$PY" -m ruff format --check boxlite_ffi tests benchmarks build_ffi.py setup.py

echo "== mypy (strict) on the package"
"$PY" -m mypy boxlite_ffi

echo "== pytest"
# Run from tests/ so the installed package is imported, not the source tree.
cd tests && exec "$PY" -m pytest -p no:cacheprovider "$@"
