"""Run folders: what a training run writes, continues from and is refused by.

Machinery the notebooks never need to open: atomic file writes (:mod:`.files`), the folder's lock
(:mod:`.lock`), the dataset a run belongs to (:mod:`.identity`), the checkpoint format, saved and
loaded (:mod:`.checkpoint`), the result files and the epoch validation selects (:mod:`.results`),
and the rule that decides what a new run does with a folder that holds one (:mod:`.folder`).
"""
