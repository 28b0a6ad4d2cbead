"""The host's TSC frequency, for the guest's command line: a microvm guest
under TCG has no HPET or PM timer to calibrate its TSC against and hangs
about 3 boots in 5 without ``tsc_early_khz=`` (vm-facts.md)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import EngineError

TSC_FREQ = Path("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
CPUINFO = Path("/proc/cpuinfo")
_CPU_MHZ = re.compile(r"^cpu MHz\s*:\s*([0-9.]+)", re.MULTILINE)


def host_tsc_khz() -> int:
    """The TSC frequency in kHz: the kernel's own figure where it exports
    one (some kernels do), else the first CPU's "cpu MHz", which is the TSC
    rate on CPUs with a constant TSC (every x86-64 QEMU runs on today)."""
    try:
        return int(TSC_FREQ.read_text().strip())
    except (OSError, ValueError):
        pass
    try:
        found = _CPU_MHZ.search(CPUINFO.read_text())
    except OSError as e:
        raise EngineError(f"cannot read {CPUINFO} for the host's TSC frequency: {e}") from e
    if found is None:
        raise EngineError(f"{CPUINFO} names no 'cpu MHz': the host's TSC frequency is unknown")
    return round(float(found[1]) * 1000)
