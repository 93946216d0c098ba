#!/usr/bin/env python
r"""Build a WebPerson-style pedestrian image-text dataset from your own images (docs/method.md §10).

Two commands:

    # 1. (optional) caption templates from a benchmark's train captions, with an instruction LLM
    python scripts/curate_webperson.py templates --seed_captions CUHK-PEDES/reid_raw.json \
        --output_file templates.json --template_model Qwen/Qwen2.5-72B-Instruct

    # 2. person filter + two captions per person -> Parquet shards in WebPerson's Hub form
    python scripts/curate_webperson.py curate --input images/ --output_dir my_webperson \
        --templates templates.json [--shard_index $SLURM_ARRAY_TASK_ID --num_shards $SLURM_ARRAY_TASK_COUNT]

Every argument: `python scripts/curate_webperson.py {templates,curate} --help`. Rerunning a
`curate` command resumes it. Setup problems (missing input, a model that cannot be loaded)
end the run with one `error:` line and exit status 2 before any image is processed; a finished
run that kept no person at all ends with one `error:` line and exit status 1.
"""

from __future__ import annotations

import json
import logging
import sys

from transformers import HfArgumentParser

from gadms_hf.curation import (
    CaptionerConfig,
    CurationSetupError,
    PersonFilterConfig,
    PipelineArguments,
    TemplateArguments,
    format_report,
    run_curation,
    write_templates,
)

COMMANDS = ("templates", "curate")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        given = f", got {argv[0]!r}" if argv else ""
        print(f"error: the first argument must be a sub-command, one of {', '.join(COMMANDS)}{given}", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if command == "templates":
            (args,) = HfArgumentParser(TemplateArguments).parse_args_into_dataclasses(rest)
        else:
            parser = HfArgumentParser((PipelineArguments, PersonFilterConfig, CaptionerConfig))
            pipeline_args, filter_config, caption_config = parser.parse_args_into_dataclasses(rest)
    except ValueError as exc:  # the argument dataclasses validate their values
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if command == "templates":
            report = write_templates(args)
            summary = {k: v for k, v in report.items() if k != "templates"}
            print(json.dumps(summary, indent=1))
            if not report["templates"]:
                print("error: the model produced no usable template", file=sys.stderr)
                return 1
            print(f"wrote {len(report['templates'])} templates to {args.output_file}")
            return 0
        report = run_curation(pipeline_args, filter_config, caption_config)
    except CurationSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"report: {report['output_dir']}/curation_report.json")
    complete = report["units_finished"] == report["units_total"]
    for warning in report["warnings"]:
        print(f"{'error' if complete else 'warning'}: {warning}", file=sys.stderr)
    return 1 if complete and report["warnings"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
