"""The per-layer error as a Model Explorer overlay: ``model_int8.node_data.json``.

Google's Model Explorer (``pip install ai-edge-model-explorer``) colours a graph's nodes from a
node-data file: ``model-explorer model_int8.tflite --node_data_paths=model_int8.node_data.json``.
The file is one graph's node data as Model Explorer's ``node_data_builder.GraphNodeData`` defines
it: ``results`` keyed by each op's output tensor name in the int8 model (what Model Explorer matches
against a node's outputs), each ``{"value": SQNR in dB}``, and ``thresholds`` mapping value ranges to
background colours (a value <= a threshold's value takes its colour): red where an op's output keeps
less than 10 dB of signal against the float model, orange below 20 dB, yellow below 30 dB, green
above. The SQNR is the per-layer report's (:mod:`edgenet.converters.layer_error`): error inherited
from earlier layers included, so the first red node along a path is where the damage starts.
"""
from __future__ import annotations

import math
from typing import Sequence

FILE_NAME = "model_int8.node_data.json"
# (upper bound in dB, colour): Model Explorer applies the first threshold the value is <= to
BANDS = ((10.0, "#d7301f"), (20.0, "#fc8d59"), (30.0, "#fee08b"), (1000.0, "#91cf60"))
IDENTICAL_DB = 999.0     # an op whose int8 output equals float's (SQNR inf): shown green, JSON-safe


def node_data(layers: Sequence, name: str = "int8 vs float SQNR (dB)") -> dict:
    """Model Explorer graph node data from per-layer errors (objects with ``name`` and ``sqnr_db``).
    Layers with no figure (``sqnr_db`` None: nothing to compare) are left out."""
    results = {}
    for layer in layers:
        db = layer.sqnr_db
        if db is None or (isinstance(db, float) and math.isnan(db)):
            continue
        value = IDENTICAL_DB if db == math.inf else max(round(float(db), 2), -IDENTICAL_DB)
        results[layer.name] = {"value": value}
    return {"name": name, "results": results,
            "thresholds": [{"value": bound, "bgColor": colour} for bound, colour in BANDS]}
