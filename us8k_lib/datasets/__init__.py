"""Where datasets come from: the folder layouts (:mod:`.layout`), the real UrbanSound8K downloaded
(:mod:`.download`) and checked (:mod:`.validate`), and the generated mini dataset (:mod:`.mini`,
its sounds from :mod:`.synth`). Machinery: the notebooks find their dataset through
:mod:`us8k_lib.paths`.
"""
