"""SSD data: prompt sources, LiveCodeBench-style prompt rendering, and the resumable synthesis stage."""

from ssd_jax.data.prompts import LCB_SYSTEM_MESSAGE, RenderedPrompt, build_messages, render_prompts, user_prompt
from ssd_jax.data.sources import (BadRow, BadRowError, PromptRecord, SourceError, SourceReport, SourceSpec,
                                  load_source)
from ssd_jax.data.synthesis import DegeneracyRule, SynthesisConfig, SynthesisError, read_samples, synthesize

__all__ = ["BadRow", "BadRowError", "DegeneracyRule", "LCB_SYSTEM_MESSAGE", "PromptRecord", "RenderedPrompt",
           "SourceError", "SourceReport", "SourceSpec", "SynthesisConfig", "SynthesisError", "build_messages",
           "load_source", "read_samples", "render_prompts", "synthesize", "user_prompt"]
