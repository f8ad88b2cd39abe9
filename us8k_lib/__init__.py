"""us8k_lib: the small, tested library behind the UrbanSound8K audio-classification notebooks.

Modules by the notebook that teaches them (a module serves the later notebooks too):

1. explore the metadata: ``metadata``; the generated offline dataset: ``mini`` (its audio from
   ``synth``), in the folder layout of ``layout``, chosen by ``paths``.
2. listen to clips: ``listen`` (players and the clip browser), ``plots``.
3. format the data: ``audio`` (decode, mono, 8 kHz, 4 s; torchaudio loaded by ``_compat``),
   ``dataset`` (the cache), ``allocator`` (keeps freed memory in the process on a CPU).
4. define M5: ``model`` (the whole family, by name), ``model_input`` (the input rule every model
   shares), ``logmel`` (the log-mel CNN, also notebook 8).
5. train and test: ``recipe`` (what decides a run), ``training_setup`` (data, model, optimizer),
   ``batches``, ``train`` (``fit``), ``evaluate``, ``devices``, ``checkpoint``, ``runfolder`` (what a
   run writes, its lock and its rule), ``notebook_settings`` (the sizes notebooks 5-8 use),
   ``predict`` and ``real_sounds`` (real recordings and your own sound).
6. evaluate like a paper: ``crossval``, ``distributed`` (torchrun).
7. augment: ``augment`` and ``augment_settings``.
8. raw waveform or spectrogram: ``logmel``, ``crossval``.

The command line (``python -m us8k_lib``): ``cli``, with ``flags`` (each flag's value checked as
it is parsed) and ``train_command``; ``download`` and ``validate`` get and check the real data;
``errors`` holds the errors every module raises on bad input.
"""

__version__ = "0.1.0"
