"""OTOv2 as a host (``--host otov2``): the DHSPG optimiser over zero-invariant groups alone, with
Smooth Pruning, and with DPM.

- :mod:`.algorithm` — DHSPG, and where Smooth Pruning and Self-Rectifying enter it;
- :mod:`.method` — the host and its SP/DPM variants as methods of the pipeline;
- :mod:`.recipe` — the host's recipe per profile (paper: one per row of the paper's tables);
- :mod:`.options` — its run options, resolved into the run's configuration.
"""
from ...experiments.host import HostEntry
from .method import OTOv2
from .options import OPTION_GROUP, RUN_OPTIONS, refusals, resolve

ENTRY = HostEntry(host="otov2", methods=dict.fromkeys(("host", "sp", "dpm"), OTOv2),
                  resolve=resolve, refusals=refusals, options=RUN_OPTIONS,
                  option_group=OPTION_GROUP)
