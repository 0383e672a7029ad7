"""DepGraph as a host (``--host depgraph``): Torch-Pruning's ``group_sl`` (sparse learning +
progressive global pruning) alone, with Smooth Pruning, and with DPM.

- :mod:`.algorithm` — sparse learning, progressive pruning, and the selector that hands
  Torch-Pruning's choices to Smooth Pruning;
- :mod:`.method` — the host and its SP/DPM variants as methods of the pipeline;
- :mod:`.recipe` — the host's recipe per profile;
- :mod:`.options` — its run options, resolved into the run's configuration.
"""
from ...experiments.host import HostEntry
from .method import DepGraph
from .options import OPTION_GROUP, RUN_OPTIONS, refusals, resolve

ENTRY = HostEntry(host="depgraph", methods=dict.fromkeys(("host", "sp", "dpm"), DepGraph),
                  resolve=resolve, refusals=refusals, options=RUN_OPTIONS,
                  option_group=OPTION_GROUP)
