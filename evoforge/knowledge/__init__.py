"""A knowledge base: documents, run elites and rated `ask` answers, chunked, embedded with MiniLM and kept in an
embedded LanceDB folder per base (`.state/kb/<name>`), searched by cosine similarity with metadata filters.

    chunking   overlapping word windows, each with its position and content hash
    sources    what can be ingested: .txt/.md/.html/.pdf files, runs' archive.parquet, ask runs' answers.parquet
    cache      a persisted LRU cache (SQLite) of query embeddings and summaries
    base       the store: ingest (changed sources replaced, unchanged skipped), search, stats
    summarize  extractive condensing of retrieved passages to a character budget, with [n] citations
    records    query / sources / answer / reward records as JSONL (for fine-tuning)

A peer of evoforge.judges and evoforge.search: it imports only evoforge.core and models.
"""


class KnowledgeError(ValueError):
    """Bad input to the knowledge base: the message names the path and the fix."""
