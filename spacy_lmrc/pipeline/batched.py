"""The shape every spacy-lmrc component shares: ``predict`` + ``set_annotations`` over batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from spacy.pipeline import Pipe
from spacy.tokens import Doc
from spacy.util import minibatch


class BatchedPipe(Pipe):
    """A ``Pipe`` whose ``__call__`` and ``pipe`` run ``predict`` then ``set_annotations``
    (as spaCy's ``TrainablePipe`` does), ``pipe`` in batches of ``cfg["batch_size"]``, errors
    going to spaCy's error handler."""

    cfg: dict

    def __call__(self, doc: Doc) -> Doc:
        """Annotate one Doc."""
        try:
            self.set_annotations([doc], self.predict([doc]))
        except Exception as err:
            self.get_error_handler()(self.name, self, [doc], err)
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int | None = None) -> Iterator[Doc]:
        """Annotate Docs in batches of ``batch_size`` (default: the component's
        ``cfg["batch_size"]``); a batch goes to ``predict`` together."""
        for batch in minibatch(stream, size=batch_size or self.cfg["batch_size"]):
            batch = list(batch)
            try:
                self.set_annotations(batch, self.predict(batch))
            except Exception as err:
                self.get_error_handler()(self.name, self, batch, err)
            yield from batch
