"""us8k_lib: the small, tested library behind the UrbanSound8K audio-classification notebooks.

The top-level modules are what the notebooks teach: read them beside the notebook that uses them.
By notebook (a module serves the later notebooks too):

1. explore the metadata: ``metadata`` (the CSV, its classes and leakage check), ``folds`` (the
   official folds and the role each plays in a run), ``paths`` (which dataset is in use),
   ``formats`` (the audio formats the files are in).
2. listen to clips: ``listen`` (players and the clip browser), ``plots``.
3. format the data: ``audio`` (decode, mono, 8 kHz, 4 s; torchaudio loaded by ``_compat``),
   ``dataset`` (the PyTorch ``Dataset``).
4. define M5: ``model`` (M5 written out, its deeper siblings), ``layers`` (the layer-by-layer
   tables), ``model_input`` (the input rule every model shares), ``logmel`` (the log-mel CNN,
   also notebook 8).
5. train and test: ``train`` (the optimizer step, the epoch, the optimizer and schedule),
   ``evaluate`` (accuracy, per class, confusion), ``devices`` (GPU or CPU), ``recipe`` (the
   settings that decide a run), ``settings`` (the sizes each training notebook uses),
   ``predict`` and ``real_sounds`` (real recordings and your own sound).
6. evaluate like a paper: ``crossval`` (10-fold cross-validation, model comparison).
7. augment: ``augment`` (the augmentations, on the training device) and ``augment_settings``.
8. raw waveform or spectrogram: ``logmel``, ``crossval``.

``errors`` holds the errors every module raises on bad input; ``hosted`` makes every notebook's
first cell work on Colab and Kaggle; ``source`` shows this package's code on a notebook's page
(the PyTorch a notebook teaches, never a copy).

The sub-packages are machinery a learner never needs to open: ``engine`` (``fit``, the whole run,
and what it stands on: the formatting cache, batches, torchrun), ``runs`` (run folders,
checkpoints, locks), ``datasets`` (downloading and validating the real data, generating the mini
dataset) and ``cli`` (the command line, ``python -m us8k_lib``).
"""

__version__ = "0.1.0"
