"""metarag: meta-learned retrieval-augmented generation for fast domain adaptation."""

__version__ = "0.1.0"
