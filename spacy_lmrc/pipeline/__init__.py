"""The spaCy pipeline components. Each is a :class:`spacy.pipeline.Pipe` with spaCy's shape
(factory, ``__call__`` and ``pipe`` (over ``predict`` / ``set_annotations`` where a model
predicts), ``initialize``, ``score`` through its ``scorer``, ``to_disk`` / ``from_disk``
honouring ``exclude``) and stays thin: it wires a model / task / backend module into that
protocol."""
