"""TPP (Trainability Preserving Pruning; Wang & Fu, ICLR 2023) and TPP × DPM, which is new
(neither paper has it); both run under ``--host core``.

- :mod:`.algorithm` — TPP's regulariser and layer-wise filter selection (training hooks);
- :mod:`.method` — TPP and TPP × DPM as methods of the pipeline;
- :mod:`.recipe` — TPP's recipe per profile;
- :mod:`.options` — their run options, resolved into the run's configuration.
"""
from ...experiments.host import HostEntry
from .method import TPP
from .options import refusals, resolve

# TPP's methods are their own comparison (configs/*/tpp_*.toml): a sweep runs them when named
ENTRY = HostEntry(host="core", methods={"tpp": TPP, "tpp+dpm": TPP}, resolve=resolve,
                  refusals=refusals, in_default_sweep=False)
