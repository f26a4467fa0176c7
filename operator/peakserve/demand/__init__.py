"""Demand: the load a model will see (a seasonal forecast) and what one replica serves (its capacity).

Pure Python, no numpy: the operator image runs it, and so does `peakserve plan` on a trace.
"""
