"""``reward-model``: a multi-objective reward model from Hugging Face, one score per objective.

Presets (``preset`` option):

* ``armorm``: RLHFlow/ArmoRM-Llama3-8B-v0.1, 19 objectives (HelpSteer, UltraFeedback,
  BeaverTails, Prometheus, Argilla, code). The model's own ``rewards`` output is read.
* ``dpa``: Haoxiang-Wang/RewardModel-Mistral-7B-for-DPA-v1 (Directional Preference Alignment),
  10 regression outputs; steer exposes its ``helpfulness`` and ``verbosity``, the two axes of
  DPA's preference direction (set ``objectives`` to expose more).

Backends (``backend`` option):

* ``transformers`` (default): the model loaded in this process (bf16 on a GPU when there is one),
  on first use, in a worker thread; requests are scored one candidate at a time, under a lock.
* ``http``: a vLLM server running the model as a reward model (``vllm serve MODEL --task reward``
  / ``--runner pooling``); steer posts ``{"model", "messages"}`` to ``{api_base}/pooling`` and
  reads ``data[0].data`` (the reward vector). Options ``api_base``, ``served_model``, ``timeout``.

Other options: ``model`` (a path or name in the local HF cache, replacing the preset's),
``device``, ``max_tokens`` (default 4096; longer conversations are cut from the left).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from steer.protocol import message_text
from steer.scorers import Conversation, scorers

if TYPE_CHECKING:
    from steer.pipeline.ports import ScorerDeps

ARMORM_OBJECTIVES = (
    "helpsteer-helpfulness",
    "helpsteer-correctness",
    "helpsteer-coherence",
    "helpsteer-complexity",
    "helpsteer-verbosity",
    "ultrafeedback-overall_score",
    "ultrafeedback-instruction_following",
    "ultrafeedback-truthfulness",
    "ultrafeedback-honesty",
    "ultrafeedback-helpfulness",
    "beavertails-is_safe",
    "prometheus-score",
    "argilla-overall_quality",
    "argilla-judge_lm",
    "code-complexity",
    "code-style",
    "code-explanation",
    "code-instruction-following",
    "code-readability",
)
# The DPA reward model's 10 outputs, in order (HelpSteer 5, UltraFeedback 5).
DPA_OUTPUTS = ARMORM_OBJECTIVES[:10]
DPA_NAMES = {"helpfulness": "helpsteer-helpfulness", "verbosity": "helpsteer-verbosity"}

PRESETS: dict[str, dict[str, Any]] = {
    "armorm": {"model": "RLHFlow/ArmoRM-Llama3-8B-v0.1", "outputs": ARMORM_OBJECTIVES, "range": (-1.0, 1.0)},
    "dpa": {"model": "Haoxiang-Wang/RewardModel-Mistral-7B-for-DPA-v1", "outputs": DPA_OUTPUTS, "range": (0.0, 100.0)},
}
DPA_TEMPLATE = (
    "[INST] You must read the following conversation carefully and rate the assistant's response from "
    "score 0-100 in these aspects: helpfulness, correctness, coherence, honesty, complexity, verbosity\n\n"
    "{conversation} [/INST]"
)


class RewardModelScorer:
    def __init__(self, deps: ScorerDeps | None, options: dict[str, Any]) -> None:
        known = {
            "preset",
            "backend",
            "model",
            "objectives",
            "device",
            "max_tokens",
            "api_base",
            "served_model",
            "timeout",
        }
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"reward-model scorer: unknown option(s) {', '.join(sorted(unknown))}")
        self.preset = str(options.get("preset", "armorm"))
        if self.preset not in PRESETS:
            raise ValueError(f"reward-model scorer: unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        spec = PRESETS[self.preset]
        self.model_name = str(options.get("model", spec["model"]))
        self.outputs: tuple[str, ...] = spec["outputs"]
        default_objectives = tuple(DPA_NAMES) if self.preset == "dpa" else self.outputs
        self.attributes: tuple[str, ...] = tuple(options.get("objectives") or default_objectives)
        self._columns = [self.outputs.index(DPA_NAMES.get(a, a)) for a in self._checked(self.attributes)]
        lo, hi = spec["range"]
        self.ranges: dict[str, tuple[float, float]] = {a: (lo, hi) for a in self.attributes}
        self.backend = str(options.get("backend", "transformers"))
        if self.backend not in ("transformers", "http"):
            raise ValueError("reward-model scorer: backend must be transformers or http")
        self.device: str | None = options.get("device")
        self.max_tokens = int(options.get("max_tokens", 4096))
        self.api_base = str(options.get("api_base", "http://127.0.0.1:8000/v1")).rstrip("/")
        self.served_model = str(options.get("served_model", self.model_name))
        self.timeout = float(options.get("timeout", 60.0))
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _checked(self, names: Sequence[str]) -> Sequence[str]:
        for a in names:
            if DPA_NAMES.get(a, a) not in self.outputs:
                raise ValueError(f"reward-model scorer: {self.preset} has no objective {a!r}")
        return names

    # -- transformers ------------------------------------------------------------------------
    def _load(self) -> None:
        from retrieval.embeddings import import_heavy

        import_heavy("numpy", "torch", "transformers")  # once, on one thread: see import_heavy
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        self._model = AutoModelForSequenceClassification.from_pretrained(
            self.model_name, trust_remote_code=True, torch_dtype=dtype
        ).to(device)
        self._model.eval()

    def _input_ids(self, conversation: Conversation, candidate: str) -> Any:
        messages = [
            {"role": m.get("role"), "content": message_text(m.get("content"))}
            for m in conversation
            if m.get("role") in ("system", "user", "assistant")
        ] + [{"role": "assistant", "content": candidate}]
        if self.preset == "dpa":
            text = "\n\n".join(
                f"{'User' if m['role'] != 'assistant' else 'Assistant'}: {m['content']}" for m in messages
            )
            ids = self._tokenizer(DPA_TEMPLATE.format(conversation=text), return_tensors="pt").input_ids
        else:
            # return_dict: transformers 5 returns a BatchEncoding here whatever the flag, 4.x a tensor without it
            ids = self._tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)["input_ids"]
        return ids[:, -self.max_tokens :].to(self._model.device)

    def _outputs(self, result: Any) -> list[float]:
        rewards = getattr(result, "rewards", None)  # ArmoRM: the 19 objectives
        tensor = rewards if rewards is not None else result.logits
        return [float(v) for v in tensor[0].float().cpu().tolist()]

    def _score_local(self, conversation: Conversation, candidates: Sequence[str]) -> list[list[float]]:
        import torch

        with self._lock:
            if self._model is None:
                self._load()
            rows = []
            with torch.no_grad():
                for candidate in candidates:
                    out = self._outputs(self._model(self._input_ids(conversation, candidate)))
                    rows.append([out[c] for c in self._columns])
        return rows

    # -- http (vLLM pooling) -----------------------------------------------------------------
    async def _score_http(self, conversation: Conversation, candidates: Sequence[str]) -> list[list[float]]:
        import aiohttp

        async def one(session: aiohttp.ClientSession, candidate: str) -> list[float]:
            messages = [*conversation, {"role": "assistant", "content": candidate}]
            async with session.post(
                self.api_base + "/pooling", json={"model": self.served_model, "messages": messages}
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"reward model server answered {resp.status}: {(await resp.text())[:200]}")
                body = await resp.json()
            data = body["data"][0]["data"]
            while data and isinstance(data[0], list):  # per-token outputs: the last token's
                data = data[-1]
            return [float(data[c]) for c in self._columns]

        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return list(await asyncio.gather(*(one(session, c) for c in candidates)))

    async def score(self, conversation: Conversation, candidates: Sequence[str]) -> list[list[float]]:
        if self.backend == "http":
            return await self._score_http(conversation, candidates)
        return await asyncio.to_thread(self._score_local, conversation, candidates)


@scorers.register("reward-model")
def reward_model(deps: ScorerDeps, options: dict[str, Any]) -> RewardModelScorer:
    return RewardModelScorer(deps, options)
