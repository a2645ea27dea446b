"""A TFX pipeline around pwiser-tf: ExampleGen, StatisticsGen, SchemaGen, Trainer
(`pwiser_tf.tfx_trainer.run_fn`), Evaluator (AUC of CTR and CTCVR) and Pusher, on
`LocalDagRunner`.

    pip install "pwiser-tf[tfx]"            # TFX: Linux with glibc >= 2.39 (ml-metadata)
    python examples/tfx_pipeline.py --data nl/ --dataset aliexpress --output tfx_out/
    python examples/tfx_pipeline.py --converted data/aliexpress_nl --output tfx_out/

Two ways in:

- `--data DIR`: the public processed CSVs (AliExpress's 82 columns, `train*.csv`
  and `test*.csv`; or torch-rechub's Ali-CCP CSVs with `--dataset ali-ccp`),
  read by `CsvExampleGen` (one feature per column). The Trainer gets
  `custom_config["dataset"]` and SchemaGen's schema; the exported model's
  `serving_default` parses the same per-column records, which is what the
  Evaluator feeds it.
- `--converted DIR`: a directory written by `pwiser-tf convert` (packed records,
  any of the formats, e.g. Ali-CCP raw with `--remap-ids`), read by
  `ImportExampleGen`; its `metadata.json` is named in `custom_config`.

`eval_config()` builds the Evaluator's configuration as a plain dict (parsed
into `tfma.EvalConfig`), so that it can be checked without TFX.
"""
import argparse
import os
from typing import Dict, List, Optional, Sequence

CONVERSION_COLUMN = {"aliexpress": "conversion", "ali-ccp": "purchase"}


def eval_config(conversion_label: str = "conversion", slice_columns: Sequence[str] = (),
                min_ctcvr_auc: float = 0.5) -> Dict:
    """The Evaluator's `tfma.EvalConfig` as a dict: AUC of `pctr` against `click` and
    of `pctcvr` against the conversion label, overall and per value of each
    `slice_columns` feature; a candidate is blessed when its CTCVR AUC is at least
    `min_ctcvr_auc` and not below the last blessed model's.

    `conversion_label`: the label feature of the records (`conversion` in the
    converter's records and AliExpress CSVs, `purchase` in Ali-CCP's). In the
    per-column records the CTCVR label is click AND conversion; the public CSVs
    carry no conversion without a click (the converter drops such rows).
    """
    def auc(output: str, min_value: Optional[float] = None) -> Dict:
        metric = {"class_name": "AUC"}
        if min_value is not None:
            metric["threshold"] = {
                "value_threshold": {"lower_bound": {"value": min_value}},
                "change_threshold": {"direction": "HIGHER_IS_BETTER",
                                     "absolute": {"value": -1e-10}}}
        return {"output_names": [output], "metrics": [
            metric, {"class_name": "ExampleCount"}]}

    return {
        "model_specs": [{"signature_name": "serving_default",
                         "label_keys": {"pctr": "click", "pctcvr": conversion_label}}],
        "slicing_specs": [{}] + [{"feature_keys": [column]} for column in slice_columns],
        "metrics_specs": [auc("pctr"), auc("pctcvr", min_ctcvr_auc)],
    }


def trainer_config(dataset: Optional[str], converted: Optional[str], model: str = "mmoe",
                   loss: str = "pwiser", batch_size: int = 2048,
                   model_config: Optional[Dict] = None) -> Dict:
    """The Trainer's `custom_config` (read by `pwiser_tf.tfx_trainer.run_fn`)."""
    if bool(dataset) == bool(converted):
        raise ValueError("give the CSV's dataset or a converted directory, not both")
    config = {"model": model, "loss": loss, "train": {"batch_size": batch_size},
              "model_config": dict(model_config or {})}
    if converted:
        config["metadata"] = os.path.join(os.path.abspath(converted), "metadata.json")
    else:
        config["dataset"] = dataset
    return config


def create_pipeline(pipeline_root: str, serving_model_dir: str, metadata_path: str, *,
                    data: Optional[str] = None, dataset: str = "aliexpress",
                    converted: Optional[str] = None, train_steps: Optional[int] = None,
                    eval_steps: Optional[int] = None, model: str = "mmoe",
                    loss: str = "pwiser", slice_columns: Sequence[str] = (),
                    beam_pipeline_args: Sequence[str] = (),
                    pipeline_name: str = "pwiser_tf"):
    """The TFX pipeline (needs `tfx` and `tensorflow_model_analysis`)."""
    import tensorflow_model_analysis as tfma
    from google.protobuf import json_format
    from tfx import v1 as tfx

    splits = tfx.proto.Input(splits=[
        tfx.proto.Input.Split(name="train", pattern="train*" if converted is None
                              else "train-*"),
        tfx.proto.Input.Split(name="eval", pattern="test*" if converted is None
                              else "test-*")])
    if converted is None:
        example_gen = tfx.components.CsvExampleGen(input_base=data, input_config=splits)
    else:
        example_gen = tfx.components.ImportExampleGen(input_base=converted,
                                                      input_config=splits)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                          infer_feature_shape=True)
    trainer = tfx.components.Trainer(
        run_fn="pwiser_tf.tfx_trainer.run_fn",
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=eval_steps),
        custom_config=trainer_config(None if converted else dataset, converted, model, loss))
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    config = eval_config("conversion" if converted else CONVERSION_COLUMN[dataset],
                         slice_columns)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        eval_config=json_format.ParseDict(config, tfma.EvalConfig()))
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=serving_model_dir)))
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name, pipeline_root=pipeline_root,
        components=[example_gen, statistics_gen, schema_gen, trainer, baseline, evaluator,
                    pusher],
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata
        .sqlite_metadata_connection_config(metadata_path),
        beam_pipeline_args=list(beam_pipeline_args))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder of the processed CSVs (train*.csv, test*.csv)")
    source.add_argument("--converted", help="a `pwiser-tf convert` output directory")
    parser.add_argument("--dataset", default="aliexpress", choices=sorted(CONVERSION_COLUMN))
    parser.add_argument("--output", required=True, help="pipeline root, metadata, pushed models")
    parser.add_argument("--model", default="mmoe")
    parser.add_argument("--loss", default="pwiser", choices=("bce", "pwiser"))
    parser.add_argument("--train-steps", type=int,
                        help="default: whole epochs (train.epochs) with early stopping on "
                             "the eval split (TrainArgs())")
    parser.add_argument("--eval-steps", type=int, help="default: all eval records")
    parser.add_argument("--slice", action="append", default=[], metavar="COLUMN",
                        help="also report the AUCs per value of this feature")
    args = parser.parse_args(argv)
    from tfx import v1 as tfx

    out = os.path.abspath(args.output)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(
        os.path.join(out, "pipeline"), os.path.join(out, "serving_model"),
        os.path.join(out, "metadata.db"), data=args.data, dataset=args.dataset,
        converted=args.converted, train_steps=args.train_steps, eval_steps=args.eval_steps,
        model=args.model, loss=args.loss, slice_columns=args.slice))


if __name__ == "__main__":
    main()
