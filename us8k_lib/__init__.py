"""us8k_lib: the small, tested library behind the UrbanSound8K audio-classification notebooks.

Modules follow the notebooks: ``metadata`` (1, explore), ``listen`` (2, widgets), ``audio`` and
``dataset`` (3, format the data), ``model`` (4, M5), ``train`` (5, train and test). ``mini``
generates the offline dataset; ``download`` and ``validate`` handle the real one.
"""

__version__ = "0.1.0"
