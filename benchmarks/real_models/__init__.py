"""Pieces of ``benchmarks/int8_real_models.py``: rendered evaluation data, task metrics, model specs.

Kept out of ``edgenet/`` on purpose: this is the independent check of edgenet's int8 verdicts on real
trained models (PaddleOCR through rapidocr, YOLOv8n through nudenet), so it shares no verdict code.
"""
