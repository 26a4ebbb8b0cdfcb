"""Steps: the plain functions an evolution run, an `ask` tournament and `evoforge score` are made of; Prefect tasks wrap them."""
