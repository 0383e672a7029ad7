"""The experiment machinery: what a run is (:mod:`.runspec`, :mod:`.identity`), what a host
gives it (:mod:`.host`, :mod:`.method`), how runs are asked for (:mod:`.cli`,
:mod:`.experiment_file`), run (:mod:`.runner`, :mod:`.main_job`) and recorded
(:mod:`.results`).

Nothing is imported here: the host folders import :mod:`.host`, :mod:`.method` and
:mod:`.identity` from below the run spec, which reads them back through the registry.
"""
