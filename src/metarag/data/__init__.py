"""Task data: schema, loaders, chunking, splits, episodes and the synthetic suite."""

from metarag.data.schema import Passage, QAExample, Task

__all__ = ["Passage", "QAExample", "Task"]
