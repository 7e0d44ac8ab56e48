"""`ovmine segment` and `ovmine eval-seg`: open-vocabulary semantic segmentation with a trained segmenter
(or teacher masks classified by a CLIP), and its score against COCO-format ground truth."""
from __future__ import annotations

import argparse
import json

from mining.cli.common import add_command, add_json, add_s3_endpoint, location, positive_int, report, s3_options


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _add_clip_args(p: argparse.ArgumentParser, repeatable: bool) -> None:
    p.add_argument("--clip", action="append" if repeatable else "store", default=[] if repeatable else None,
                   metavar="[NAME=]SPEC",
                   help="a (mask-adapted) CLIP whose masked-crop probabilities are ensembled in: local-dir:PATH, "
                        "hf-hub:ORG/REPO or NAME@PRETRAINED" + (" (repeatable; NAME labels its variants)"
                                                                 if repeatable else ""))
    p.add_argument("--ensemble-lambda", type=_unit_float, default=0.7,
                   help="OVSeg A.5's λ in p^(1-λ)·p̂^λ: 0 = segmenter only, 1 = CLIP only")
    p.add_argument("--crop-fit", choices=["pad", "stretch"],
                   help="how a mask's box becomes the CLIP's square input (default: what the CLIP was adapted "
                        "with, else the teacher config's regions.crop_fit, else pad)")
    p.add_argument("--crop-context", type=float, help="box growth of the crops (default: as --crop-fit)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the models run; auto: CUDA when there is a GPU, else the CPU")


def cmd_segment(args: argparse.Namespace) -> int:
    from mining.segmentation.run import inputs_read, parse_classes, segment_inputs
    from mining.sinks.guard import SEGMENTATION, check_folder_output
    from mining.segmentation.variants import build_variants

    names = parse_classes(args.classes)
    # the write guard before the models load (segment_inputs checks again, under the lease)
    check_folder_output(location(args, args.out), SEGMENTATION, inputs_read(args.inputs, s3_options(args)),
                        args.overwrite)
    variants = build_variants(model=args.model, clips=[args.clip] if args.clip else [], lam=args.ensemble_lambda,
                              device=args.device, crop_context=args.crop_context, crop_fit=args.crop_fit,
                              s3=s3_options(args))
    # with --clip, the one ensembled variant (named after the CLIP); without, the segmenter alone
    predictor = next(v for k, v in variants.items() if k != "segmenter") if args.clip else variants["segmenter"]
    summary = segment_inputs(predictor, names, args.inputs, args.out, args.max_size, s3_options(args),
                             overwrite=args.overwrite)
    total = sum(summary["pixels_per_class"].values()) or 1
    report(args, summary, "\n".join(
        [f"segmented {summary['images']} image(s) into {summary['out']} (a PNG label map and a JSON of segments each)"]
        + [f"  {name:<20}{100 * count / total:6.1f}% of pixels"
           for name, count in sorted(summary["pixels_per_class"].items(), key=lambda kv: -kv[1])]))
    return 0


def format_eval_seg(report: dict) -> str:
    lines = [f"evaluated {report['images']} of {report['images_in_ground_truth']} ground-truth images of "
             f"{report['ground_truth']} ({len(report['classes'])} classes; "
             f"{report['images_not_in_ground_truth']} image(s) read are not in it)",
             f"  {'variant':<28}{'mIoU %':>7}{'pixel acc %':>13}"]
    for name, m in report["variants"].items():
        miou = "n/a" if m["miou"] is None else f"{100 * m['miou']:.1f}"
        acc = "n/a" if m["pixel_accuracy"] is None else f"{100 * m['pixel_accuracy']:.1f}"
        lines.append(f"  {name:<28}{miou:>7}{acc:>13}")
    names = list(report["variants"])
    lines.append("  IoU % by class " + "".join(f"{n[:14]:>15}" for n in names))
    for c in report["classes"]:
        cells = [report["variants"][n]["per_class_iou"][c] for n in names]
        lines.append(f"  {c:<15}" + "".join(f"{'-' if v is None else f'{100 * v:.1f}':>15}" for v in cells))
    return "\n".join(lines)


def cmd_eval_seg(args: argparse.Namespace) -> int:
    from mining.evaluation.semantic import evaluate_semantic
    from mining.segmentation.variants import build_variants

    variants = build_variants(model=args.model, teacher_config=args.teacher_config, clips=args.clip,
                              lam=args.ensemble_lambda, device=args.device, crop_context=args.crop_context,
                              crop_fit=args.crop_fit, s3=s3_options(args))
    scores = evaluate_semantic(location(args, args.gt), variants, args.images, args.limit, args.allow_partial)
    scores["ensemble_lambda"] = args.ensemble_lambda
    print(json.dumps(scores) if args.json else format_eval_seg(scores))   # the answer asked for: printed with -q too
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "segment", "segment images into the classes you name (open-vocabulary segmenter)",
                    'ovmine segment --model seg/ --classes "grass,sky,circle" world/shards --output labels/',
                    'ovmine segment --model seg/ --classes "grass,sky" photo.jpg --output labels/ '
                    '--clip local-dir:clip-adapted/ --ensemble-lambda 0.7')
    p.add_argument("--model", required=True, help="a folder written by `ovmine train segmenter`")
    p.add_argument("--classes", required=True, help='comma-separated class names, e.g. "grass,sky,circle"')
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, shards, shard folders or patterns")
    p.add_argument("--output", dest="out", required=True,
                   help="folder (local or s3://) for NAME.png label maps and NAME.json segments; NAME keeps the "
                        "input's path below the inputs' common folder (a shard's image: SHARD_KEY)")
    p.add_argument("--max-size", type=positive_int, default=1024, help="longest image side, in pixels")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder that is no ovmine output (never over inputs or another "
                        "kind of output)")
    _add_clip_args(p, repeatable=False)
    add_s3_endpoint(p)
    add_json(p, "the summary")
    p.set_defaults(func=cmd_segment)

    e = add_command(sub, "eval-seg", "score open-vocabulary semantic segmentation (mIoU) against COCO ground truth",
                    "ovmine eval-seg --model seg/ --gt world/ground_truth.json",
                    "ovmine eval-seg --gt world/ground_truth.json --model seg/ --teacher-config demo "
                    "--clip shipped=local-dir:mining/toyworld/weights/clip --clip adapted=local-dir:clip-adapted/",
                    details="Variants scored: segmenter (--model), segmenter+NAME (--model with --clip), "
                            "teacher+NAME (--teacher-config with --clip: the mining teacher's masks classified by "
                            "the CLIP's masked crops alone). The ground truth's category names are the vocabulary.")
    e.add_argument("--gt", required=True, help="COCO instances JSON, e.g. a toy world's ground_truth.json")
    e.add_argument("--model", help="a folder written by `ovmine train segmenter`")
    e.add_argument("--teacher-config", help="a mining config whose teacher (a Mask2Former) proposes the masks of "
                                            "the teacher+NAME variants, e.g. demo")
    e.add_argument("--images", nargs="+", help="shards or image files holding the ground truth's images "
                                               "(default: the shards/ folder beside --gt)")
    e.add_argument("--limit", type=positive_int, help="score at most this many images")
    e.add_argument("--allow-partial", action="store_true",
                   help="score even when fewer than half of the images read are in the ground truth")
    _add_clip_args(e, repeatable=True)
    add_s3_endpoint(e)
    add_json(e, "the report")
    e.set_defaults(func=cmd_eval_seg)
