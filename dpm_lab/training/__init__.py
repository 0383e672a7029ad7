"""The training substrate every other folder builds on: models (:mod:`.models`), data
(:mod:`.data`), the training loop and its hooks (:mod:`.engine`), MACs and accuracy
(:mod:`.metrics`), a training phase's recipe (:mod:`.config`), and the files and processes a
training runs in: checkpoints (:mod:`.checkpoint`), atomic writes and run claims (:mod:`.claims`), where
files go (:mod:`.paths`) and DDP (:mod:`.distributed`).

It imports nothing from the pruning, the hosts or the experiment machinery.
"""
