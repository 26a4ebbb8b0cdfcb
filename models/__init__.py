"""Model backends (transformers), the sentence embedder, and how model names resolve to local files."""
