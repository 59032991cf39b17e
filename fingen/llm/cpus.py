"""How many threads a CPU model server should use, and whether another one competes for them.

Rules (Linux; elsewhere the fallbacks are ``os.cpu_count()`` and "no competitor known"):

* ``usable_cpus()`` is what this process may really run on: the CPUs of its affinity mask
  (``taskset``, cpusets), capped at the cgroup CPU quota (v2 ``cpu.max`` of the cgroup and its
  ancestors, v1 ``cpu.cfs_quota_us``), rounded up, and, by default, at the number of distinct
  physical cores behind those CPUs (llama.cpp gains nothing from SMT siblings).
  ``os.cpu_count()`` describes the whole machine and ignores all three.
* ``other_llama_servers()`` lists the llama.cpp servers already running on the machine
  (``llama_cpp.server``, fingen's wrapper, the C++ ``llama-server``), found by reading
  ``/proc/*/cmdline``. llama.cpp worker threads busy-wait between steps, so two servers on the
  same cores slow each other down far more than twofold: measured on 2 cores, SmolLM2 with 2
  threads beside a busy 2-thread Qwen server took 225.6 s for 64 tokens, with 1 thread 3.3 s.
* ``default_threads()`` is therefore ``usable_cpus()`` shared with the servers already running:
  ``usable // (1 + others)``, at least 1.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

__all__ = ["competing_servers_warning", "default_threads", "other_llama_servers", "usable_cpus"]

_SERVER_MARKERS = ("llama_cpp.server", "fingen.llm.serve_local")
_SERVER_BINARIES = {"llama-server", "llama-cli"}


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _cgroup_quota_cpus(
    proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup"
) -> float | None:
    """CPU bandwidth limit (quota / period) of this process's cgroup and its ancestors, in CPUs;
    None when unlimited or unknown."""
    text = _read(proc_cgroup)
    if text is None:
        return None
    limits: list[float] = []
    for line in text.splitlines():
        try:
            hierarchy, controllers, path = line.split(":", 2)
        except ValueError:
            continue
        if hierarchy == "0" and controllers == "":  # cgroup v2: a parent's cpu.max limits too
            for base in (root, root + "/unified"):
                p = os.path.normpath(base + path)
                while p.startswith(base):
                    fields = (_read(os.path.join(p, "cpu.max")) or "").split()
                    if len(fields) == 2 and fields[0] != "max":
                        with contextlib.suppress(ValueError, ZeroDivisionError):
                            limits.append(int(fields[0]) / int(fields[1]))
                    if p == base:
                        break
                    p = os.path.dirname(p)
        elif "cpu" in controllers.split(","):  # cgroup v1
            for base in (root + "/cpu", root + "/cpu,cpuacct", root + "/cpuacct,cpu"):
                for p in (os.path.normpath(base + path), base):  # in containers often "/"
                    quota, period = (
                        _read(os.path.join(p, "cpu.cfs_quota_us")),
                        _read(os.path.join(p, "cpu.cfs_period_us")),
                    )
                    if quota is None or period is None:
                        continue
                    try:
                        q, per = int(quota), int(period)
                    except ValueError:
                        continue
                    if q > 0 and per > 0:
                        limits.append(q / per)
                    break
    return min(limits) if limits else None


def _physical_cores(cpus: set[int], sysfs: str = "/sys/devices/system/cpu") -> int | None:
    """Distinct (package, core) pairs among the allowed logical CPUs; None when unknown."""
    cores = set()
    for cpu in cpus:
        core = _read(f"{sysfs}/cpu{cpu}/topology/core_id")
        package = _read(f"{sysfs}/cpu{cpu}/topology/physical_package_id")
        if core is None or package is None:
            return None
        cores.add((package.strip(), core.strip()))
    return len(cores) or None


def usable_cpus(physical: bool = True) -> int:
    """Threads worth running in parallel: min(affinity, ceil(cgroup quota)), and with
    ``physical`` at most the physical cores behind the allowed CPUs; at least 1."""
    cpus = _affinity()
    n = len(cpus)
    quota = _cgroup_quota_cpus()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    if physical:
        cores = _physical_cores(cpus)
        if cores:
            n = min(n, cores)
    return max(1, n)


def other_llama_servers(exclude: set[int] | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of the llama.cpp servers running on this machine, except ``exclude``
    and this process."""
    skip = {os.getpid(), *(exclude or set())}
    found: list[tuple[int, str]] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        if not args:
            continue
        modules = {args[i + 1] for i in range(len(args) - 1) if args[i] == "-m"}
        is_server = bool(modules.intersection(_SERVER_MARKERS)) or (
            os.path.basename(args[0]) in _SERVER_BINARIES
        )
        if is_server:
            found.append((int(entry), " ".join(args)[:200]))
    return sorted(found)


def default_threads(others: int) -> int:
    """Threads for a new server beside ``others`` running ones: an equal share of the usable
    cores (busy-waiting threads on a shared core stall each other's steps)."""
    return max(1, usable_cpus() // (1 + max(0, others)))


def competing_servers_warning(
    exclude: set[int] | None = None, threads: int | None = None
) -> str | None:
    """A one-line warning naming the other llama.cpp servers on this machine, or None;
    ``threads``: the share this server takes (said in the line)."""
    others = other_llama_servers(exclude)
    if not others:
        return None
    pids = ", ".join(str(pid) for pid, _ in others[:5])
    share = f"this one uses {threads} of {usable_cpus()} cores; " if threads else ""
    return (
        f"another llama.cpp server is running on this machine (pid {pids}); llama.cpp threads "
        f"busy-wait, so servers sharing the cores slow each other down 3x or more: {share}"
        "let one run finish first, or give each its own cores (taskset, llm.local.n_threads)"
    )
