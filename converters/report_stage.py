"""The conversion report (report.json / report.md) assembled from what every stage found."""
from __future__ import annotations

from edgenet.config import Precision
from edgenet.report import ConvertReport, Sizes


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("edgenet", "torch", "onnx", "onnxruntime", "tensorflow-cpu", "tensorflow", "ai-edge-litert",
                 "litert-quantizer"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def conversion_report(opts, profile, source, model, built, checked, data, pass_stats, per_channel, staging, files,
            target_report, stages, notes, fit, layers, repair, split, float_ops) -> ConvertReport:
    from edgenet.inference import op_counts

    graph = built.graph
    clean_stats, bn = pass_stats["cleanup"], pass_stats["bn_fold"]
    int8 = built.quantized.get(Precision.INT8)
    quant = int8 or built.quantized.get(Precision.INT16X8)
    deployed = Precision.INT8 if Precision.INT8 in built.models else None
    ops_float = op_counts(built.models[Precision.FLOAT32])
    acc = checked.accuracy
    sizes = {p: (staging / p.file_name).stat().st_size for p in built.models}   # as written, with metadata
    precisions = [{"precision": p.value, "file": p.file_name, "bytes": sizes[p],
                   "verdict": None if p is Precision.FLOAT32 else checked.verdicts[p].to_dict(),
                   "ops_in_other_precision": float_ops.get(p.value, [])} for p in built.models]
    return ConvertReport(
        model={**source.info, "name": source.name, "input_shape": list(source.input_shape),
               "tflite_input_shape": list(graph.inputs[0].tf_shape),
               "inputs": [{"name": spec.name, "shape": list(spec.shape), "tflite_shape": list(info.tf_shape),
                           "image": spec.image} for spec, info in zip(source.inputs, graph.inputs)],
               "onnx_ops": dict(sorted(graph.op_counts.items()))},
        target={"name": profile.name, **target_report.to_dict(), "summary": target_report.summary_line()},
        bn_folded=bn.folded, bn_to_mul_add=bn.to_mul_add, bn_fold_max_abs_diff=bn.max_abs_diff,
        cleanup={"constants_folded": clean_stats.constants_folded, "nodes_removed": clean_stats.nodes_removed,
                 "initializer_inputs_dropped": clean_stats.initializer_inputs_dropped,
                 "split_pieces_read": clean_stats.split_pieces_read},
        export_max_abs_err=source.export_max_abs_err,
        data=data.info,
        calibration=None if quant is None else {
            **data.info, "method": opts.calib_method.value, "batch_size": quant.calibration.batch_size,
            "tensors": quant.calibration.tensors, "seconds": round(quant.calibration.seconds, 3),
            "io_type": (opts.io_type or profile.input_type).value, "per_channel": per_channel,
            "equalization": None if built.equalized is None else built.equalized.to_dict(),
            **({"qdq": built.qdq} if built.qdq else {})},
        validation=checked.validation,
        accuracy=None if acc is None else {
            "float_top1": acc.float_top1, "int8_top1": acc.int8_top1, "float_top5": acc.float_top5,
            "int8_top5": acc.int8_top5, "n_eval": acc.n_eval, "top1_drop_points": acc.top1_drop_points},
        sizes=Sizes(len(model.SerializeToString()), sizes[Precision.FLOAT32], sizes.get(Precision.INT8)),
        ops=op_counts(built.models[deployed]) if deployed else ops_float, ops_float=ops_float,
        stages=tuple(stages.times),
        files=tuple(sorted({*files, *(p.name for p in staging.iterdir()), "report.json", "report.md"})),
        versions=versions(), notes=tuple(notes),
        fit=None if fit is None else {**fit.to_dict(), "lines": fit.report_lines()},
        layers=None if layers is None else [layer.to_dict() for layer in layers],
        precisions=tuple(precisions),
        mixed_precision=None if repair is None else repair.to_dict(),
        split_outputs=None if split is None else {"output": split.output, "parts": list(split.parts),
                                                  "axis": split.axis, "sizes": list(split.sizes),
                                                  # where `edgenet bench` finds the parts to join them back
                                                  "position": split.joined(built.graph.outputs).first,
                                                  "array_axis": split.joined(built.graph.outputs).axis})
