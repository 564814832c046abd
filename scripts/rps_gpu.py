"""Driver of ``scripts/rps_gpu.sh``: the paper's RPS vs best-of-N comparison on one GPU.

The generator is a vLLM server (OpenAI-compatible), reached through steer's own router and RPS
code (:mod:`steer.methods.rps.geometry`, :func:`steer.evals.rps.evaluate`): the same requests the ``sample``
stage sends. The reward model is the DPA multi-attribute reward model
(``Haoxiang-Wang/RewardModel-Mistral-7B-for-DPA-v1``), loaded here with transformers on the same
GPU; its helpfulness and verbosity outputs are the two attributes (``--rm-outputs``), projected
raw on v = (cos t, sin t) as in the paper.

UNTESTED: written without a GPU; the reward model's prompt template and output indices follow
its model card as far as known, and are options (``--rm-template``, ``--rm-outputs``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from steer.evals.prompts import prompt_source
from steer.evals.rps import DEFAULT_ANGLES, evaluate, load_prompts, report
from steer.scorers import Conversation
from steer.server.metrics import Metrics
from steer.settings import load_settings
from steer.upstreams.router import Router

RM_TEMPLATE = (
    "[INST] You must read the following conversation carefully and rate the assistant's response from "
    "score 0-100 in these aspects: helpfulness, correctness, coherence, honesty, complexity, verbosity"
    "\n\nUser: {prompt}\n\nAssistant: {response} [/INST]"
)


class RewardModelScorer:
    """A multi-attribute sequence-classification reward model as a steer ``Scorer`` (2 attributes)."""

    attributes: tuple[str, ...] = ("helpfulness", "verbosity")

    def __init__(self, name: str, outputs: Sequence[int], template: str, batch: int, max_len: int) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(name)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            name, torch_dtype=torch.bfloat16, device_map="cuda", trust_remote_code=True
        ).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tok.pad_token_id
        self.outputs = list(outputs)
        self.template = template
        self.batch = batch
        self.max_len = max_len
        # the comparison projects the raw outputs (cfg raw=True), as the paper; ranges are not used
        self.ranges: dict[str, tuple[float, float]] = {a: (-1e6, 1e6) for a in self.attributes}
        self.lock = threading.Lock()

    def _score(self, prompt: str, texts: Sequence[str]) -> list[list[float]]:
        rows: list[list[float]] = []
        with self.lock, self.torch.inference_mode():
            for i in range(0, len(texts), self.batch):
                inputs = [self.template.format(prompt=prompt, response=t) for t in texts[i : i + self.batch]]
                enc = self.tok(inputs, return_tensors="pt", padding=True, truncation=True, max_length=self.max_len)
                logits = self.model(**enc.to("cuda")).logits.float().cpu()
                rows += [[float(r[j]) for j in self.outputs] for r in logits]
        return rows

    async def score(self, conversation: Conversation, candidates: Sequence[str]) -> list[list[float]]:
        prompt = next((str(m.get("content")) for m in reversed(conversation) if m.get("role") == "user"), "")
        return await asyncio.to_thread(self._score, prompt, list(candidates))


async def main(a: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(
        None,
        models=[{"name": "gen", "model": a.model, "api_base": a.vllm_url, "backend": "openai", "retries": 1}],
    )
    router = Router(settings, Metrics())
    print(f"[{time.strftime('%H:%M:%S')}] loading the reward model {a.rm}", file=sys.stderr, flush=True)
    scorer = RewardModelScorer(a.rm, [int(x) for x in a.rm_outputs.split(",")], a.rm_template, a.batch, a.max_len)
    prompts = load_prompts(prompt_source(a.prompts, a.data), a.limit)
    cfg = {
        "k": a.k,
        "t_max": a.t_max,
        "conditioning": a.conditioning,
        "placement": a.placement,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": a.max_tokens,
        "timeout": 300.0,
        "use_n": True,
        "concurrency": a.concurrency,
        "raw": True,
    }

    async def complete(body: dict[str, Any]) -> dict[str, Any]:
        return await router.complete("gen", body)

    def progress(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    angles = [float(x) for x in a.angles.split(",")]
    try:
        result = await evaluate(complete, scorer, prompts, "gen", ("helpfulness", "verbosity"), angles, cfg, progress)
    finally:
        await router.aclose()
    result["config"] = {**cfg, "model": a.model, "scorer": a.rm, "attributes": ["helpfulness", "verbosity"]}
    result["config"]["prompts"] = len(prompts)
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--vllm-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="the model name vLLM serves")
    p.add_argument("--rm", default="Haoxiang-Wang/RewardModel-Mistral-7B-for-DPA-v1")
    p.add_argument("--rm-outputs", default="0,4", help="output indices of helpfulness and verbosity")
    p.add_argument("--rm-template", default=RM_TEMPLATE)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--prompts", help="prompt file or folder")
    p.add_argument("--data", help="PrefEval's folder: its explicit-preference questions are the prompts")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--angles", default=",".join(map(str, DEFAULT_ANGLES)))
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--t-max", type=float, default=30.0)
    p.add_argument("--conditioning", choices=["dpa", "natural"], default="dpa")
    p.add_argument("--placement", choices=["before_last_user", "system"], default="system")
    p.add_argument("--max-tokens", type=int, default=384)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--json", default="rps_gpu.json")
    p.add_argument("--png", default="rps_gpu.png")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    out = asyncio.run(main(args))
    report(out, args.json, args.png)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "per_prompt"} for k, v in out["angles"].items()}))
