"""Supervised fine-tuning on self-distilled samples: grain pipeline, chunked loss, trainer, checkpoints."""
