"""Heavy imports are race-free: the embedder and the local model, loaded in parallel threads of a fresh
process (as ``steer serve``'s warm-up and ``steer eval align`` do), import torch, transformers and
sentence-transformers one thread at a time (``retrieval.embeddings.import_heavy``), and both load (the
local model up to its weights: ``steer.upstreams.local.import_libraries``, its loader's imports).

transformers binds its names lazily and is not safe to import for the first time from two threads at
once: the failure ("cannot import name 'AutoModelForCausalLM' from 'transformers'") needs two import
chains to meet in a circle of its modules, so it shows only now and then. What is checked is what
prevents it: a meta-path hook records which thread first imports each module, and the modules of
the heavy libraries' own import (measured in another fresh process) must come from one thread at a
time (at most one hand-over between the two threads), in every run.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO

RUNS = 2

# the imports the heavy libraries make: the libraries, and the classes of transformers steer's loaders use
HEAVY = textwrap.dedent(
    """
    import json, sys
    import torch, transformers, sentence_transformers
    for name in ("AutoConfig", "AutoModel", "AutoTokenizer", "AutoModelForCausalLM"):
        getattr(transformers, name)
    heavy = ("torch", "transformers", "sentence_transformers")
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
    """
)

PARALLEL = textwrap.dedent(
    """
    import json, sys, threading

    events = []  # (thread name, module) in the order modules are first looked for

    class Recorder:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "sentence_transformers"):
                events.append((threading.current_thread().name, name))
            return None

    sys.meta_path.insert(0, Recorder())
    start = threading.Barrier(2)
    errors = []

    def embedder():
        start.wait()
        from retrieval.embeddings import SentenceTransformerEmbedder
        SentenceTransformerEmbedder(graph=False)

    def generator():  # the local model's loader, up to its weights (their loading imports nothing more here)
        start.wait()
        from steer.upstreams.local import import_libraries
        import_libraries()

    def run(fn):
        try:
            fn()
        except BaseException as exc:
            errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(fn,), name=fn.__name__) for fn in (embedder, generator)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"errors": errors, "events": events}))
    """
)


def _python(code: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_embedder_and_the_local_model_load_in_parallel_importing_heavy_libraries_one_thread_at_a_time():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("transformers")
    heavy = set(json.loads(_python(HEAVY)))
    for _ in range(RUNS):
        out = json.loads(_python(PARALLEL))
        assert out["errors"] == []
        threads = [thread for thread, module in out["events"] if module in heavy]
        assert set(threads) <= {"embedder", "generator"} and threads
        handovers = sum(a != b for a, b in itertools.pairwise(threads))
        assert handovers <= 1, f"the heavy libraries were imported by both threads at once ({handovers} hand-overs)"
