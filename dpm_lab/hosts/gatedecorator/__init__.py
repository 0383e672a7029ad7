"""Gate Decorator as a host (``--host gatedecorator``): gated BN, Taylor gate scores and the
Tick-Tock schedule alone, with Smooth Pruning, and with DPM.

- :mod:`.algorithm` — gated BN, Taylor scores, Tick-Tock, and the gates' Smooth Pruning;
- :mod:`.method` — the host and its SP/DPM variants as methods of the pipeline;
- :mod:`.recipe` — the host's recipe per profile;
- :mod:`.options` — its run options, resolved into the run's configuration.
"""
from ...experiments.host import HostEntry
from .method import GateDecorator
from .options import OPTION_GROUP, RUN_OPTIONS, refusals, resolve

ENTRY = HostEntry(host="gatedecorator",
                  methods=dict.fromkeys(("host", "sp", "dpm"), GateDecorator), resolve=resolve,
                  refusals=refusals, options=RUN_OPTIONS, option_group=OPTION_GROUP)
