"""What is true of a transformer whatever runs it: Llama configs, the work of each op, and
the pass that crosses a pipeline. Imports none of wafer/, gpu/, interconnect/, cluster/."""

from llm.config import LlamaConfig, resolve_model
from llm.ops import LayerShape, OpWork
from llm.passes import TOKEN_ID_BYTES, Pass

__all__ = ["LayerShape", "LlamaConfig", "OpWork", "Pass", "TOKEN_ID_BYTES", "resolve_model"]
