"""TFX Trainer module: train a pwiser-tf model inside a TFX pipeline.

TFX is an optional extra (`pip install "pwiser-tf[tfx]"`) and this module does
not import it: the Trainer's generic executor calls `run_fn(fn_args)`, and only
the attributes of `fn_args` are read. Feed the Trainer the converted records
(for example through `ImportExampleGen` on the shards `pwiser-tf convert`
writes: plain `tf.train.Example`, GZIP or not) and name the dataset's
`metadata.json` in `custom_config`:

    trainer = tfx.components.Trainer(
        run_fn="pwiser_tf.tfx_trainer.run_fn",
        examples=example_gen.outputs["examples"],
        train_args=tfx.proto.TrainArgs(num_steps=5000),
        eval_args=tfx.proto.EvalArgs(num_steps=200),
        custom_config={"metadata": "data/aliexpress_nl/metadata.json",
                       "model": "mmoe", "loss": "pwiser",
                       "model_config": {"pwiser_weight": 1.0},
                       "train": {"batch_size": 2048}})

The Trainer's `serving_model_dir` receives the SavedModel with the
`serving_default` signature (serialized examples in, `pctr`, `pcvr`, `pctcvr`
out), which TFX's Evaluator and Pusher use as is.
"""
import os
from typing import Dict

from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import Metadata


def _pattern(files, role: str) -> str:
    files = [files] if isinstance(files, str) else list(files or [])
    if len(files) != 1:
        raise InputError(f"fn_args.{role}: expected one file pattern, got {files!r}")
    return files[0]


def run_fn(fn_args) -> Dict[str, float]:
    """Trains `custom_config["model"]` on `fn_args.train_files`, evaluates on
    `fn_args.eval_files` and exports to `fn_args.serving_model_dir`.

    Returns the evaluation metrics (TFX ignores the value; tests read it).
    """
    from pwiser_tf import models, training
    from pwiser_tf.pipelines import make_dataset

    config = dict(fn_args.custom_config or {})
    if "metadata" not in config:
        raise InputError("custom_config['metadata']: the path of the dataset's "
                         "metadata.json is required (it holds the record schema)")
    schema = Metadata.load(os.path.dirname(config["metadata"]) or ".").schema
    train_config = dict(config.get("train") or {})
    batch_size = int(train_config.get("batch_size", 2048))
    loss = config.get("loss", "pwiser")
    model_config = dict(config.get("model_config") or {}, loss=loss)
    model = training.build_compiled(config.get("model", "mmoe"), schema, model_config,
                                    train_config)
    train_ds = make_dataset(_pattern(fn_args.train_files, "train_files"), batch_size,
                            schema=schema, shuffle=True, repeat=True,
                            seed=int(config.get("seed", 0)))
    eval_ds = make_dataset(_pattern(fn_args.eval_files, "eval_files"), batch_size,
                           schema=schema, repeat=True)
    model.fit(train_ds, steps_per_epoch=int(fn_args.train_steps), epochs=1, verbose=2)
    result = model.evaluate(eval_ds, steps=int(fn_args.eval_steps), return_dict=True,
                            verbose=0)
    models.export_saved_model(model, fn_args.serving_model_dir, schema)
    return {k: float(v) for k, v in result.items()}
