#!/usr/bin/env bash
# GPU check of the in-process vLLM backend (backend: vllm, fingen/llm/vllm_engine.py).
#
# 1. runs the demo pipeline (fingen/_demo/demo.yaml, larger limits) on `backend: vllm` with a
#    small instruct model, recording every request fingen sends and its reply;
# 2. sends the same prompts (same messages, sampling and JSON schema) through raw
#    `vllm.LLM.chat` in one batch;
# 3. prints both throughputs (requests/s, output tokens/s) and the share of replies that are
#    identical under greedy decoding.
#
# Needs: a CUDA GPU, vllm (the `vllm` extra; vLLM 0.33 wants torch 2.14, so not in the CPU venv),
# the model in the local HF cache or as a folder (MODEL=/path), the embedder (minilm, packaged).
# Usage:   MODEL=Qwen/Qwen2.5-0.5B-Instruct bash bench/gpu_check.sh
# Exit 0 and one table when it ran; exit 2 with one line when something it needs is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
export GPU_UTIL=${GPU_UTIL:-0.40}          # each engine; the two run one after the other
export OUT=${OUT:-$(mktemp -d)}
export VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING}

"$PY" - <<'EOF' || exit 2
import importlib.util, sys
missing = [m for m in ("vllm", "torch") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: not installed: {', '.join(missing)} (pip install 'fingen[vllm]' on a GPU host)")
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible")
EOF

timeout "${TIMEOUT_S:-540}" "$PY" - <<'EOF'
import gc, json, os, sys, time
from pathlib import Path

import torch

from fingen.config import load_pipeline
from fingen.llm import vllm_engine
from fingen.pipeline import run_pipeline

model, out, util = os.environ["MODEL"], Path(os.environ["OUT"]), float(os.environ["GPU_UTIL"])
engine_args = {"max_model_len": 4096, "gpu_memory_utilization": util, "seed": 0,
               "enforce_eager": False}
records = []  # (request, completion) of every request fingen sent
original = vllm_engine.VLLMEngineBackend.complete

async def recording(self, request):
    completion = await original(self, request)
    records.append((request, completion))
    return completion

vllm_engine.VLLMEngineBackend.complete = recording
overrides = [
    "llm.backend=vllm", f"llm.model={model}", f"llm.vllm_engine={json.dumps(engine_args)}",
    "llm.concurrency=64", "llm.temperature=0", "llm.cache=false",
    "stages.bottom_up.params.limit=null", "stages.top_down.params.limit=null",
    "stages.mine.params.limit=null", "stages.qa_source.params.limit=null",
    "stages.distill.params.n=4",
]
config = load_pipeline("fingen/_demo/demo.yaml", overrides)
t0 = time.perf_counter()
result = run_pipeline(config, out / "run")
wall = time.perf_counter() - t0
llm_s = sum(e.get("usage", {}).get("llm_s", 0.0) for e in result.stages.values())
fingen_out = sum(c.usage.completion_tokens for _, c in records)
print(f"demo on backend vllm: status {result.status}, {len(records)} requests, "
      f"wall {wall:.1f} s (LLM busy {llm_s:.1f} s)", flush=True)
if not records:
    sys.exit("gpu_check: the demo sent no request")
gc.collect()
torch.cuda.empty_cache()  # fingen's engine is closed with the run

from vllm import LLM, SamplingParams
from vllm.sampling_params import StructuredOutputsParams

llm = LLM(model=model, **engine_args)
params = []
for req, _ in records:
    kw = {"temperature": req.temperature, "max_tokens": req.max_tokens, "seed": req.seed}
    if req.top_p is not None:
        kw["top_p"] = req.top_p
    if req.stop:
        kw["stop"] = req.stop
    if req.json_schema is not None:
        kw["structured_outputs"] = StructuredOutputsParams(json=req.json_schema)
    params.append(SamplingParams(**kw))
t0 = time.perf_counter()
outs = llm.chat([req.messages for req, _ in records], params, use_tqdm=False)
raw_s = time.perf_counter() - t0
raw_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
greedy = [i for i, (req, _) in enumerate(records) if req.temperature == 0]
same = sum(records[i][1].text == outs[i].outputs[0].text for i in greedy)

print()
print("| path | requests | seconds | requests/s | output tokens/s |")
print("|---|---:|---:|---:|---:|")
busy = llm_s or wall
print(f"| fingen backend vllm (LLM busy time) | {len(records)} | {busy:.2f} | "
      f"{len(records) / busy:.1f} | {fingen_out / busy:.0f} |")
print(f"| raw vllm.LLM.chat (one batch) | {len(outs)} | {raw_s:.2f} | "
      f"{len(outs) / raw_s:.1f} | {raw_tokens / raw_s:.0f} |")
print()
share = same / len(greedy) if greedy else float("nan")
print(f"identical replies under greedy decoding: {same}/{len(greedy)} ({share:.1%}); "
      f"sampled requests (T>0, distill) not compared: {len(records) - len(greedy)}")
EOF
