"""Every field of an SSD run, with the paper's defaults (arXiv 2604.01193; ../shared/reference/ssd_paper.md).

The other configs start from this one and change what differs. Any field can be overridden on the command line:
  python -m ssd_jax.main --config=configs/qwen3_4b_instruct.py --config.sample.temperature=1.6 \
      --config.eval.ssd.temperatures='(0.9,1.1,1.3)' --config.workdir=/ckpt/runs/t16
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
  config = config_dict.ConfigDict()
  config.workdir = "/tmp/ssd_jax/run"  # samples/, train/, export/, eval/, report.md, summary.json
  config.seed = 0

  # Several hosts: set the coordinator explicitly, or leave `auto` on for TPU pods and SLURM (jax detects them).
  config.distributed = config_dict.ConfigDict()
  config.distributed.coordinator_address = ""  # "host:port"
  config.distributed.num_processes = config_dict.placeholder(int)
  config.distributed.process_id = config_dict.placeholder(int)
  config.distributed.auto = True
  # How long a process waits at a barrier for the others (end of synthesis, HF export, each T_eval's judging, end
  # of the run). Processes get equal shares of the work, not of its time: judging one share of a large LCB sweep
  # can end hours after another's, and a barrier that times out stops the run. A crashed process is noticed
  # sooner anyway (the coordination service's heartbeat stops everyone after ~100 s), so this is generous: 6 h.
  config.distributed.barrier_timeout_s = 6 * 3600.0

  config.model = config_dict.ConfigDict()
  config.model.checkpoint = ""  # HF directory, .gguf file, orbax directory, or "random" (config.model.arch)
  config.model.tokenizer = ""  # "" = the checkpoint's own; "train_sentencepiece" for a random model
  # Weights as loaded. The trainer keeps its master weights and AdamW state in this dtype: SFT wants float32 (bf16
  # masters round lr-5e-6 updates away); matmuls run in compute_dtype.
  config.model.param_dtype = "float32"
  config.model.compute_dtype = "bfloat16"
  config.model.arch = config_dict.ConfigDict()  # ModelConfig fields of a "random" model (see configs/tiny.py)
  config.model.tokenizer_vocab_size = 0

  # Mesh axis sizes over all devices; -1 takes the rest. The same mesh shards sampling, training and evaluation.
  config.mesh = config_dict.ConfigDict({"data": 1, "fsdp": -1, "expert": 1, "tensor": 1})

  # Prompts for synthesis. The paper: rStar-Coder "seed" problems, de-duplicated, ~10.2k (ssd_paper.md §1.2).
  config.data = config_dict.ConfigDict()
  # rstar_seed | livecodebench | humaneval | jsonl | synthetic | codesuite (its training families)
  config.data.kind = "rstar_seed"
  config.data.path = ""  # local file or directory (.jsonl, .jsonl.gz, .parquet)
  config.data.hub_id = ""  # e.g. "microsoft/rStar-Coder" on an online machine (needs ssd_jax[hub])
  config.data.hub_config = ""  # e.g. "seed_sft"
  config.data.subset = "all"  # all | first_half | second_half (disjoint halves, e.g. HumanEval train vs eval)
  config.data.limit = 0  # 0 = every prompt
  config.data.require_passed = True
  config.data.dedup = True
  config.data.on_bad_row = "skip"  # skip (counted, with ids) | error
  config.data.seed = 0  # the generated problems (synthetic, codesuite; prompts and evaluation)

  # SSD sampling of the frozen model: T_train and truncation (Table 3), one sample per prompt. temperature, top_k,
  # top_p, min_p and max_new_tokens are the sampling operator (sampling.sampler.SamplingConfig), applied as vLLM
  # does: min-p, then top-k with ties kept, then top-p inside the survivors.
  config.sample = config_dict.ConfigDict()
  config.sample.temperature = 1.6
  config.sample.top_k = 20
  config.sample.top_p = 0.8
  config.sample.min_p = 0.0  # not used by the paper (0 = off)
  config.sample.max_new_tokens = 65536  # the released generator's max_tokens; the paper says 128K context
  config.sample.n_per_prompt = 1
  config.sample.seed = 0
  config.sample.shard_size = 256
  config.sample.prompt_style = "ssd"  # the released generator's wording; "lcb" = LiveCodeBench's generic
  config.sample.system_message = ""
  config.sample.chat_template_kwargs = config_dict.ConfigDict()  # passed to the chat template, e.g. enable_thinking
  config.sample.degeneracy = config_dict.ConfigDict()  # "minimal degeneracy filter" (empty, single-line stubs)
  config.sample.degeneracy.min_lines = 2
  config.sample.degeneracy.stub_max_chars = config_dict.placeholder(int)
  config.sample.degeneracy.require_code_block = False
  config.sample.degeneracy.drop_truncated = False
  # The decode engine (sampling/engine.py) shapes the computation only, never the samples. The KV cache is a pool of
  # pages sized from memory (kv_pages, else kv_cache_bytes, else kv_cache_fraction of free accelerator memory); a
  # sequence holds pages for the tokens it has, so batch_size slots are cheap and the pool decides how many run.
  config.sample.engine = config_dict.ConfigDict()
  config.sample.engine.batch_size = 256  # decode slots per process
  config.sample.engine.max_seq_len = 69632  # prompt + answer of one sequence: 65,536 new tokens + prompts up to 4,096
  config.sample.engine.page_size = 16
  config.sample.engine.kv_pages = 0
  config.sample.engine.kv_cache_bytes = 0
  config.sample.engine.kv_cache_fraction = 0.85
  config.sample.engine.kv_dtype = "auto"  # the compute dtype, or "int8" (a scale per token and head)
  config.sample.engine.chunk_steps = 64
  config.sample.engine.prefill_chunk = 2048
  config.sample.engine.prefill_rows = 8
  config.sample.engine.k_max = 64
  config.sample.engine.decode_attention = "auto"  # reference | pallas_gpu | pallas_tpu

  # SFT (ssd_paper.md §3): AdamW 0.9/0.95, wd 0.1, cosine 5e-6 -> 1e-6, 250 warmup / 2,500 steps (instruct),
  # global batch 32, sequence length 65,536.
  config.train = config_dict.ConfigDict()
  config.train.learning_rate = 5e-6
  config.train.min_learning_rate = 1e-6
  config.train.warmup_steps = 250
  config.train.total_steps = 2500
  config.train.global_batch_size = 32
  config.train.grad_accum_steps = 1
  config.train.b1 = 0.9
  config.train.b2 = 0.95
  config.train.weight_decay = 0.1
  config.train.max_grad_norm = 1.0  # not in the paper (not stated); the common choice
  config.train.remat = "full"
  # "auto": splash attention on TPUs; on GPUs cuDNN flash attention for unpacked rows and Pallas GPU flash attention
  # (segment ids) for packed rows; XLA's dense attention (quadratic in seq_len) on CPU. Or name one of them.
  config.train.attention = "auto"
  config.train.loss_chunk_size = 512
  # Where the float32 weights live. "params": float32 params and AdamW state (model.param_dtype). "bf16_params":
  # bf16 params, float32 moments: at lr 5e-6 most updates round away (BUILD_NOTES §14 measures it).
  # "bf16_params_f32_master": bf16 params, a float32 master in the optimizer state (2 more bytes per param).
  config.train.precision = "params"
  config.train.save_interval_steps = 250
  config.train.max_to_keep = 3
  config.train.async_checkpointing = True
  config.train.log_every = 1
  config.train.seq_len = 65536
  config.train.packing = False  # "global batch 32" read as 32 samples per step (packing not stated)
  config.train.too_long = "truncate"  # truncate | drop
  config.train.data_seed = 0
  config.train.export = True  # HF safetensors of the tuned model in workdir/export

  # Evaluation: LiveCodeBench v6 (Feb-May 2025 window), n = 10, base decoding from Table 4, SSD from Table 3.
  config.eval = config_dict.ConfigDict()
  config.eval.benchmark = "lcb"  # lcb | humaneval | synthetic | codesuite (its held-out families)
  config.eval.path = ""  # directory of code_generation_lite shards (test.jsonl ... test6.jsonl)
  config.eval.version = "release_v6"
  config.eval.start_date = "2025-02-01"
  config.eval.end_date = "2025-05-01"
  config.eval.subset = "all"
  config.eval.limit = 0
  config.eval.models = ("base", "ssd")
  config.eval.n = 10
  config.eval.ks = (1, 5)
  config.eval.max_new_tokens = 65536
  config.eval.prompt_style = "lcb"
  config.eval.system_message = ""
  config.eval.chat_template_kwargs = config_dict.ConfigDict()
  config.eval.seed = 0
  # lcb_compat: LiveCodeBench's own grading, quirks included (mocked stdin, captured stdout, its guard; the
  # paper's numbers) | real_io: LCB's rewriting and comparator with a real stdin/stdout per test | plain: as written
  config.eval.mode = "lcb_compat"
  config.eval.timeout_s = 6.0  # per test, LCB's default
  config.eval.workers = 0  # parallel sandboxes; 0 = one per CPU core
  # Model code runs under bubblewrap as root ("auto"/"bwrap"); without it evaluation refuses, unless this opt-in
  # accepts a weaker level ("unshare": root, no bwrap; "bwrap-nouid": no root). The level is in every result.
  config.eval.isolation = "auto"  # auto | bwrap | unshare
  config.eval.allow_weak_isolation = False
  # Each model's decoding: the T_eval sweep and the rest of its SamplingConfig (max_new_tokens is eval.max_new_tokens).
  config.eval.base = config_dict.ConfigDict({"temperatures": (0.7,), "top_k": 20, "top_p": 0.8, "min_p": 0.0})
  config.eval.ssd = config_dict.ConfigDict({"temperatures": (0.9,), "top_k": 20, "top_p": 0.8, "min_p": 0.0})
  # Training steps scored besides the final SSD model (the paper scores every saved checkpoint x T_eval and keeps
  # the best, ssd_paper.md §2.3), e.g. (1000, 1500, 2000): each must be a step train keeps (save_interval_steps,
  # max_to_keep). The report shows the checkpoint x T_eval table and the selected cell.
  config.eval.ssd.checkpoints = ()

  # Fig. 6 diagnostics (base vs SSD on the kept SSD samples, at the SSD eval truncation) in the analyze stage.
  config.analysis = config_dict.ConfigDict()
  config.analysis.diagnostics = True
  config.analysis.max_positions = 4096
  config.analysis.temperatures = (0.5, 0.7, 0.9, 1.1, 1.3, 1.5)
  return config


def hardware_shape(shapes: dict, hardware: str, file_default: str) -> dict:
  """The mesh / engine batch / grad-accum entry for `hardware` (the `--config=file.py:<hw>` argument), else the
  SSD_HARDWARE environment variable, else the file's HARDWARE."""
  import os

  hardware = hardware or os.environ.get("SSD_HARDWARE") or file_default
  if hardware not in shapes:
    raise ValueError(f"unknown hardware {hardware!r}; expected one of {sorted(shapes)}")
  return shapes[hardware]


def paper_config(*, checkpoint: str, sample: dict, base_eval: dict, ssd_eval: dict, thinking: bool, shape: dict,
                 data_path: str = "/data/rStar-Coder/seed_sft",
                 lcb_path: str = "/data/livecodebench/code_generation_lite") -> config_dict.ConfigDict:
  """A paper run (ssd_paper.md Table 3, Table 4, §3, §4) of one model: what the configs/<model>.py files share.

  Args:
    checkpoint: a local HF directory (config.json, *.safetensors, tokenizer.json).
    sample: SSD sampling, Table 3 ({"temperature", "top_k", "top_p"}; no top-k is 0, no top-p is 1.0).
    base_eval, ssd_eval: {"temperatures", "top_k", "top_p"}: Table 4 (base) and Table 3 (SSD) decoding.
    thinking: the thinking-model schedule (50 warmup / 300 steps, checkpoint every 50) instead of the instruct one
      (250 / 2,500, every 250).
    shape: {"mesh", "engine_batch", "grad_accum"} for the hardware (see each file's SHAPES).
    data_path: rStar-Coder `seed_sft` parquet files (`hf download microsoft/rStar-Coder --repo-type dataset
      --include 'seed_sft/*'`); is_passed + de-dup gives the paper's ~10.2k prompts (§1.2).
    lcb_path: a local copy of livecodebench/code_generation_lite (test.jsonl ... test6.jsonl).
  """
  config = get_config()
  config.lock()  # a misspelt field below is an error, not a silently added key
  config.model.checkpoint = checkpoint
  config.model.param_dtype = "float32"  # AdamW at lr 5e-6 moves a weight by ~1e-4 of its size: below bf16's 2^-8
  config.model.compute_dtype = "bfloat16"
  config.mesh.update(shape["mesh"])
  config.data.kind = "rstar_seed"
  config.data.path = data_path
  config.sample.update(sample)
  config.sample.n_per_prompt = 1
  config.sample.engine.batch_size = shape["engine_batch"]  # decode slots per process (each file's KV arithmetic)
  warmup, steps = (50, 300) if thinking else (250, 2500)
  config.train.update({"warmup_steps": warmup, "total_steps": steps, "save_interval_steps": warmup,
                       "grad_accum_steps": shape["grad_accum"]})
  # The paper's 65,536, unpacked (one sample per row, "global batch 32" read as 32 samples) or packed with
  # --config.train.packing=True. train.attention "auto" is fused on both accelerators, so attention memory is linear
  # in S: splash attention on TPU, cuDNN (unpacked) / Pallas flash attention with segment ids (packed) on GPU
  # (BUILD_NOTES §14; a Qwen3-4B unpacked step at 32,768 ran on one H200, §5).
  config.train.seq_len = 65536
  config.eval.path = lcb_path
  config.eval.base.update(base_eval)
  config.eval.ssd.update(ssd_eval)
  return config
