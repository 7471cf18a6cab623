"""Shared test settings.

Tiny networks gain nothing from intra-op threads, and on a 2-core machine shared with Ray workers
the thread pool's contention makes them many times slower, so tests run torch single-threaded.
"""

import torch

torch.set_num_threads(1)
