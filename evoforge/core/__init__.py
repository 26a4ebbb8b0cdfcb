"""The core: a domain and its niches, the archive, experts and mutation, configuration, budgets, and where a run is kept (Parquet store, MLflow tracking, plots)."""
