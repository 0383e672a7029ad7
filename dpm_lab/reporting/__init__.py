"""Reporting, from recorded results only: tables and figures (:mod:`.figures`), the committed
paper figures (:mod:`.paper_figures`), the statistics behind every claimed difference
(:mod:`.stats`), the paper's published numbers (:mod:`.paper`), and the notebooks' setup
(:mod:`.notebook`)."""
