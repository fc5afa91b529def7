"""`edgenet predict`: a converted model's top classes (or raw outputs) for a few images."""
from __future__ import annotations

import click

from edgenet.cli._common import debug_option, echo_out, json_option, print_json


@click.command("predict")
@click.argument("model")
@click.argument("images", nargs=-1)
@click.option("--top", "top_k", type=int, default=5, show_default=True, help="Classes shown per image.")
@click.option("--threads", type=int, default=None, help="LiteRT threads (default: all cores).")
@json_option
@debug_option
def command(model, images, top_k, threads, as_json, debug):
    """Run a converted model on images: the top-5 class names, or each output's shape and range.

    MODEL is a `convert` output folder (its int8 model, else the float one) or a .tflite file beside its
    preprocess.json; class names come from labels.txt. Images are resized and normalized as
    preprocess.json says.

    \b
    Examples:
      edgenet predict out/ cat.jpg dog.png
      edgenet predict out/model_float.tflite cat.jpg --top 3
      edgenet predict out/ cat.jpg --json          # with every output's values
    """
    from edgenet.predict import predict

    result = predict(model, images, top_k=top_k, num_threads=threads)
    if as_json:
        print_json({"model": result.model, "input_type": result.precision, "labels": result.labels,
                    "images": [{"image": p.image, "outputs": [o.to_dict(True) for o in p.outputs]}
                               for p in result.images]})
        return
    lines = [f"{result.model} ({result.precision} input)"]
    for p in result.images:
        lines.append(p.image)
        for o in p.outputs:
            if o.top is not None:
                for c in o.top:
                    name = c.label if c.label is not None else f"class {c.index}"
                    lines.append(f"  {c.score:9.4f}  {name}" + ("" if c.label is None else f"  ({c.index})"))
                if o.scores_are != "probabilities":
                    lines.append(f"  (scores are {o.scores_are}, not probabilities that sum to 1)")
            else:
                lines.append(f"  {o.name}: shape {list(o.shape)}, values {o.minimum:.4g} .. {o.maximum:.4g}")
    echo_out("\n".join(lines))
