"""Verdicts on quantized models, output by output, each by the metric of its kind.

Numpy only: ``edgenet bench`` runs it on the device. :func:`judge` decides a model;
:func:`detect_kind` says which metric an output gets (:class:`OutputKind`); the thresholds are a
target profile's (:class:`Thresholds`). Modules: ``base`` (records, SQNR, error metrics),
``generic`` (SQNR per output and channel, index agreement), ``tasks`` (classifier, sequence,
dense map), ``topk`` (a TopK's indices: set and order), ``vectors`` ([N, K]: classifier,
embedding or coordinates), ``class_map`` (class
distributions at many positions), ``detection`` (detector heads: YOLO, DETR; NMS), ``kinds`` (kind
detection, overrides, judge).
"""
from edgenet.verdicts.base import (DEGENERATE_MAX_DISTINCT, DEGENERATE_MIN_FLOAT_DISTINCT, OutputKind,
                                   OutputQuality, Status, Thresholds, Verdict, centered_sqnr_db, error_metrics,
                                   headline, level_text, plain_sqnr_db, worst_output)
from edgenet.verdicts.class_map import class_map_quality
from edgenet.verdicts.detection import detection_layout, detection_quality, nms, paired_detection_quality
from edgenet.verdicts.generic import (MIN_INDEX_KEPT, ROWS_PER_CHANNEL, STATIC_VARIATION, axis_name, channel_axis,
                                      channel_view, index_quality, is_classifier_shaped, output_quality)
from edgenet.verdicts.kinds import (KindError, KindSpec, check_output_kinds, detect_kind, detection_pairs, judge,
                                   judge_outputs, output_verdict, unvaried)
from edgenet.verdicts.topk import TopKSource, topk_quality
from edgenet.verdicts.tasks import classifier_quality, ctc_decode, map_quality, otsu_threshold, sequence_quality
from edgenet.verdicts.vectors import embedding_quality, vector_kind

__all__ = ["DEGENERATE_MAX_DISTINCT", "DEGENERATE_MIN_FLOAT_DISTINCT", "MIN_INDEX_KEPT", "ROWS_PER_CHANNEL",
           "STATIC_VARIATION", "KindError", "KindSpec", "OutputKind", "OutputQuality", "Status", "Thresholds",
           "TopKSource", "Verdict", "axis_name", "centered_sqnr_db", "channel_axis", "channel_view", "check_output_kinds",
           "class_map_quality", "classifier_quality", "ctc_decode", "detect_kind", "detection_layout", "detection_pairs",
           "detection_quality", "embedding_quality", "error_metrics", "headline", "judge_outputs",
           "paired_detection_quality", "vector_kind",
           "index_quality", "is_classifier_shaped", "judge", "level_text", "map_quality", "nms", "otsu_threshold",
           "output_quality", "output_verdict", "topk_quality", "plain_sqnr_db", "sequence_quality", "unvaried", "worst_output"]
