"""Judges: the panel of log-prob judges, their calibration, ensembles and measures, the guards against gaming, and the selection of one answer among many."""
