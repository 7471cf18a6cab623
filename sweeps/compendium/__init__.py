"""Results compendium: markdown pages and PNG plots generated from the Arrow tables.

    python -m sweeps.compendium runs/sweeps/hisso_wave --out docs/results
"""

from ._pages import build_compendium

__all__ = ["build_compendium"]
