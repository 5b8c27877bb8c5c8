"""Text sampled from the teacher model itself, cached on disk in deterministic shards.

Attention transfer wants many tokens of text the teacher finds natural. Offline, the shipped training text is
small (~2M tokens), so the teacher writes more: prompts of ``prompt_tokens`` tokens cut from the training
documents, continued by temperature (and nucleus) sampling for up to ``max_new_tokens`` tokens, cut at the
end-of-sequence token. Each document is the prompt followed by its continuation.

Shard ``s`` draws its prompts and its sampling noise from ``(seed, s)`` alone, so the samples do not depend on
how many shards were made before an interruption, and asking for more ``tokens`` later only appends shards.
Shards live in ``<cache_dir>/teacher-<key>/``; the key hashes the teacher, the prompts and the settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherSampling:
    """How to sample: ``tokens`` new tokens in all, in shards of ``batch_size`` prompts."""

    model: str
    tokens: int
    prompt_tokens: int = 32
    max_new_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("tokens", "prompt_tokens", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "tokens" else 1):
                raise ValueError(f"teacher sampling: {name} must be a positive int, got {value!r}")
        if not self.temperature > 0:
            raise ValueError(f"teacher sampling: temperature must be > 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"teacher sampling: top_p must be in (0, 1], got {self.top_p!r}")

    def key(self, prompt_pool: list[list[int]]) -> str:
        """Cache key: everything that changes a shard's content (not ``tokens``, not ``device``)."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("tokens", "device")}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for prompt in prompt_pool:
            digest.update(torch.tensor(prompt, dtype=torch.int32).numpy().tobytes())
        return digest.hexdigest()[:16]


def prompt_pool(documents: list[list[int]], prompt_tokens: int, stride: int = 512) -> list[list[int]]:
    """Prompts of exactly ``prompt_tokens`` tokens: one every ``stride`` tokens of each long-enough document."""
    pool = []
    for doc in documents:
        for start in range(0, len(doc) - prompt_tokens + 1, stride):
            pool.append(list(doc[start : start + prompt_tokens]))
    if not pool:
        raise ValueError(f"no training document has {prompt_tokens} tokens to prompt the teacher with; lower prompt_tokens")
    return pool


def _shard_seed(seed: int, shard: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{shard}".encode()).digest()[:6], "little")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def sample_shard(model, sampling: TeacherSampling, pool: list[list[int]], shard: int, eos_id: int | None) -> list[list[int]]:
    """One shard: ``batch_size`` prompts drawn (seeded) from ``pool`` and their sampled continuations."""
    seed = _shard_seed(sampling.seed, shard)
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(pool), (sampling.batch_size,), generator=g).tolist()
    device = next(model.parameters()).device
    prompts = torch.tensor([pool[i] for i in picks], dtype=torch.long, device=device)  # [B, P]
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
        temperature=sampling.temperature, top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens,
        pad_token_id=eos_id, eos_token_id=eos_id,
    )
    docs = []
    for row, new in zip(prompts.tolist(), out[:, prompts.shape[1]:].tolist()):
        if eos_id is not None and eos_id in new:
            new = new[: new.index(eos_id)]
        docs.append(row + new)
    return docs


def load_teacher(sampling: TeacherSampling):
    """The teacher as a causal LM on the sampling device (bf16 on CUDA), in eval mode."""
    from hedgehog.models.pretrained import load_pretrained

    device = _device(sampling.device)
    model = load_pretrained(sampling.model, task="causal_lm", dtype="bfloat16" if device.type == "cuda" else None)
    return model.to(device).eval()


def teacher_documents(
    sampling: TeacherSampling, pool: list[list[int]], cache_dir: str | Path, eos_id: int | None, model: Any = None,
) -> tuple[list[list[int]], dict[str, Any]]:
    """Documents (prompt + sampled continuation, token ids) until ``sampling.tokens`` new tokens exist.

    Reuses the shards already in the cache and makes only the missing ones (loading the teacher, or using
    ``model``, only then). Returns the documents and a summary (shards, new tokens, cache folder).
    """
    folder = Path(cache_dir).expanduser() / f"teacher-{sampling.key(pool)}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(asdict(sampling), indent=2) + "\n")
    docs: list[list[int]] = []
    new_tokens, shard = 0, 0
    prompt = sampling.prompt_tokens
    while new_tokens < sampling.tokens:
        path = folder / f"shard-{shard:05d}.pt"
        if path.is_file():
            shard_docs = torch.load(path, weights_only=True)["documents"]
        else:
            if model is None:
                log.info("loading the teacher %s to sample %d tokens", sampling.model, sampling.tokens - new_tokens)
                model = load_teacher(sampling)
            shard_docs = sample_shard(model, sampling, pool, shard, eos_id)
            tmp = path.with_suffix(".tmp")
            torch.save({"documents": shard_docs}, tmp)
            tmp.replace(path)
            log.info("teacher samples: shard %d, %d new tokens so far", shard, new_tokens + sum(len(d) - prompt for d in shard_docs))
        docs.extend(shard_docs)
        new_tokens += sum(len(d) - prompt for d in shard_docs)
        shard += 1
    return docs, {"shards": shard, "new_tokens": new_tokens, "documents": len(docs), "cache": str(folder)}
