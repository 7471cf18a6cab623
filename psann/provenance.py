"""Where a result came from: code version, software stack and machine, as one flat JSON dict.

``collect_provenance()`` is what ``metrics.json`` (each run, each trial) and ``sweep.json`` (each
sweep) record under ``"provenance"``; the results store flattens it into ``prov_<field>`` columns of
the ``trials`` table. Every value is a JSON scalar (str, int, bool or None)::

    psann_version   the project's version (psann.__version__)
    git_commit      HEAD of the project's git checkout; None when the code is not a checkout
                    (an installed wheel, a cluster worker that received only the package)
    git_dirty       True when tracked files differ from HEAD; None when git_commit is None
    python_version  e.g. "3.11.9"
    torch_version   torch.__version__; None when torch is not importable
    cuda_version    the CUDA torch was built with (torch.version.cuda); None on a CPU build
    cudnn_version   torch.backends.cudnn.version() (an int such as 90100); None without cuDNN
    gpu_name        the GPU the process runs on (``device``), or the current GPU when ``device``
                    is None; None on a CPU device or a machine without a visible GPU
    gpu_count       how many GPUs this process sees (0 without CUDA)
    ray_version     the installed Ray's version; None when Ray is not installed
    host            socket.gethostname()
    platform        platform.platform(), e.g. "Linux-6.8.0-x86_64-with-glibc2.39"

Where the facts come from matters on a cluster: git facts belong to the driver (a worker usually
has no checkout), so a sweep collects them once and a trial may pass them in with ``git=``; the
per-process facts (GPU, host, torch, CUDA) are always read where the code runs.

Importing this module costs only the standard library; torch is imported inside
``collect_provenance`` (inside a try block), Ray is never imported (its version comes from the
installed package's metadata).
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

__all__ = ["PROVENANCE_FIELDS", "PROVENANCE_KEYS", "collect_provenance", "git_facts"]

# The keys of collect_provenance() and their value kinds (psann.contract's kind names; spelled out
# here because the contract cannot import this module's importers). Readers (the results store,
# the compendium) import these rather than writing the names again.
PROVENANCE_FIELDS: tuple[tuple[str, str], ...] = (
    ("psann_version", "str"),
    ("git_commit", "str"),
    ("git_dirty", "bool"),
    ("python_version", "str"),
    ("torch_version", "str"),
    ("cuda_version", "str"),
    ("cudnn_version", "int"),
    ("gpu_name", "str"),
    ("gpu_count", "int"),
    ("ray_version", "str"),
    ("host", "str"),
    ("platform", "str"),
)
PROVENANCE_KEYS: tuple[str, ...] = tuple(name for name, _ in PROVENANCE_FIELDS)

_GIT_TIMEOUT_S = 5.0
# The folder holding the psann package: the project's root in a checkout or an editable install.
_PROJECT_DIR = Path(__file__).resolve().parent.parent


def _git(args: list[str], cwd: Path) -> str | None:
    """Stdout of ``git <args>`` in ``cwd``; None when git is missing, fails or times out."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout


def git_facts(project_dir: str | Path | None = None) -> dict[str, Any]:
    """``{"git_commit", "git_dirty"}`` of the project's checkout, both None when it is not one.

    ``project_dir`` defaults to the folder holding the psann package. The checkout must be that
    folder itself: a wheel installed into some other repository's virtual environment must not
    report that repository's commit. Untracked files do not make a checkout dirty (as
    ``git describe --dirty``); modified, staged or deleted tracked files do.
    """
    root = Path(project_dir).resolve() if project_dir is not None else _PROJECT_DIR
    none: dict[str, Any] = {"git_commit": None, "git_dirty": None}
    if not root.is_dir():
        return none
    top = _git(["rev-parse", "--show-toplevel"], root)
    if top is None or Path(top.strip()).resolve() != root:
        return none
    head = _git(["rev-parse", "HEAD"], root)
    if head is None or not head.strip():
        return none
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    return {
        "git_commit": head.strip(),
        "git_dirty": None if status is None else bool(status.strip()),
    }


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_facts(device: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "torch_version": None,
        "cuda_version": None,
        "cudnn_version": None,
        "gpu_name": None,
        "gpu_count": 0,
    }
    try:
        import torch
    except Exception:  # noqa: BLE001 - a broken torch install is a fact to record, not a crash
        return facts
    facts["torch_version"] = str(torch.__version__)
    cuda = getattr(torch.version, "cuda", None)
    facts["cuda_version"] = None if cuda is None else str(cuda)
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001 - cuDNN probing fails on some CPU builds
        cudnn = None
    facts["cudnn_version"] = None if cudnn is None else int(cudnn)
    try:
        available = bool(torch.cuda.is_available())
        facts["gpu_count"] = int(torch.cuda.device_count()) if available else 0
    except Exception:  # noqa: BLE001 - a driver problem leaves the GPU facts unknown
        available = False
    if available:
        try:
            target = torch.device(device) if device is not None else None
        except (RuntimeError, TypeError, ValueError):  # "auto" or another name torch does not know
            target = None
        try:
            if target is None:
                facts["gpu_name"] = str(torch.cuda.get_device_name(torch.cuda.current_device()))
            elif target.type == "cuda":
                index = target.index if target.index is not None else torch.cuda.current_device()
                facts["gpu_name"] = str(torch.cuda.get_device_name(index))
        except Exception:  # noqa: BLE001
            pass
    return facts


def collect_provenance(
    device: Any = None, *, git: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The provenance of this process as a flat dict of JSON scalars (keys: PROVENANCE_KEYS).

    Args:
        device: the torch device (or its string, ``"cuda:1"``, ``"cpu"``) the run uses; its GPU is
            ``gpu_name``. None names the current GPU when one is visible.
        git: git facts collected elsewhere (the sweep driver's ``git_facts()``), used instead of
            asking git here; only its ``git_commit``/``git_dirty`` keys are read.

    Example::

        >>> prov = collect_provenance("cpu")
        >>> sorted(prov) == sorted(PROVENANCE_KEYS)
        True
    """
    import psann

    if git is None:
        git_part = git_facts()
    else:
        git_part = {"git_commit": git.get("git_commit"), "git_dirty": git.get("git_dirty")}
        if git_part["git_commit"] is not None:
            git_part["git_commit"] = str(git_part["git_commit"])
        if git_part["git_dirty"] is not None:
            git_part["git_dirty"] = bool(git_part["git_dirty"])
    facts: dict[str, Any] = {
        "psann_version": str(psann.__version__),
        **git_part,
        "python_version": platform.python_version(),
        **_torch_facts(device),
        "ray_version": _ray_version(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }
    return {key: facts[key] for key in PROVENANCE_KEYS}


def _ray_version() -> str | None:
    ray = sys.modules.get("ray")
    version = getattr(ray, "__version__", None) if ray is not None else None
    return str(version) if version else _package_version("ray")
