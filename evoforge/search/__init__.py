"""Search: how candidates are planned (which expert, which few-shot items, which niche) and written by the backends."""
