"""The spaCy pipeline components. Each is thin: it wires a model / task / backend module into
spaCy's component protocol (factory, ``__call__``, ``pipe``, ``initialize``, ``to_disk`` /
``from_disk``, ``scorer``)."""
