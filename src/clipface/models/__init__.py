"""Models: the encoder interface, the face front end, the encoders and their backends.

Looking a model up is three modules, as open_clip separates a model from its weights:
:mod:`.archs` says what each CLIP architecture is (its config), :mod:`.registry` which models
exist and where their weights come from (names, aliases, presets, availability, the
``clipface models`` table), and :mod:`.runtime` how a registered model is loaded with a run's
choices (:class:`~.runtime.LoadOptions`, :func:`~.runtime.load_encoder`).
"""
