"""What runs a training: :func:`.fit.fit` and what it stands on.

Machinery the notebooks never need to open: the formatting cache (:mod:`.cache`), how batches
reach the device (:mod:`.batches`), a run's parts (:mod:`.parts`), torchrun's processes
(:mod:`.distributed`), folds trained side by side (:mod:`.jobs`) and the CPU allocator setting
(:mod:`.allocator`); :mod:`.fit` is the run itself. Notebook 5 writes the training loop itself;
``fit`` runs the same step and epoch functions (:mod:`us8k_lib.train`) with run folders,
resuming and torchrun around them.
"""
