"""PWiseR's options: each choice and each default, written once, without TensorFlow.

The kernel, `PWiseRLoss`, the models' task and the configuration schema
(`pwiser_tf.config`, which `pwiser-tf synth` loads without TensorFlow) all take
their choices and defaults from here, so a value the configuration accepts is
one the loss accepts, and a default the loss uses is the one a run records.

Each choice is a `typing.Literal` (what the schema and the command line check)
and the tuple of its values (what the kernel and the loss check); the default
of each is listed first. The converter shares one policy with the loss,
`conversion_without_click`: what to do with a row whose conversion label is set but
whose click label is not (the funnel rules it out, yet the public releases hold a few):
`"error"` refuses it, naming where it is (the loss's default); `"as_click"` counts it as
a converted click; `"drop"` drops the row (the converter's default, as every public
pipeline does; a loss cannot drop a row of its batch).

Example:

>>> HEADS
('ctr', 'cvr', 'ctcvr')
>>> PWISER_WEIGHT
0.03
>>> CONVERSION_WITHOUT_CLICK_IN_LOSS, CONVERSION_WITHOUT_CLICK_IN_CONVERT
(('error', 'as_click'), ('drop', 'as_click', 'error'))
"""
from typing import Literal, get_args

LossName = Literal["bce", "pwiser"]
PwiserHead = Literal["ctr", "cvr", "ctcvr"]
PwiserScores = Literal["probability", "logit"]
Normalization = Literal["anchor", "pair"]
Pairs = Literal["global", "replica"]

# The validation metrics a sweep may select by (`sweep.select`): each one is better
# higher. The group AUCs need data converted with its group column.
SelectMetric = Literal["ctcvr_auc", "ctr_auc", "cvr_auc", "s3_s2_auc", "intent_auc",
                       "intent_ctcvr_auc", "ctcvr_gauc", "ctr_gauc", "cvr_gauc"]

LOSSES = get_args(LossName)
SELECT_METRICS = get_args(SelectMetric)
HEADS = get_args(PwiserHead)
SCORES = get_args(PwiserScores)
NORMALIZATIONS = get_args(Normalization)
PAIRS = get_args(Pairs)

# Defaults of the papers' open constants, chosen by `pwiser-tf sweep` (docs/sweep.md):
# the best validation CTCVR AUC on the built-in *synthetic* AliExpress-like data (small
# MMoE, batch 512, the loss BCE(ctr) + BCE(ctcvr) + lambda * PWiseR, PWiseR on pCTR
# probabilities, anchor normalisation). Tune them on your own data's validation split;
# under anchor normalisation lambda's strength grows with the batch size
# (docs/batch_size.md): about lambda / 4 at batch 2048.
PWISER_WEIGHT = 0.03
MARGIN_CLICK = 0.1
MARGIN_NONCLICK = 0.1
SQUARED = True  # the squared hinge
PWISER_HEAD: PwiserHead = HEADS[0]
PWISER_SCORES: PwiserScores = SCORES[0]
NORMALIZATION: Normalization = NORMALIZATIONS[0]
PAIRS_DEFAULT: Pairs = PAIRS[0]

# `conversion_without_click`, one vocabulary for the loss and the converter.
ERROR = "error"
AS_CLICK = "as_click"
DROP = "drop"
CONVERSION_WITHOUT_CLICK = (ERROR, AS_CLICK, DROP)  # the whole vocabulary
LossConversionWithoutClick = Literal["error", "as_click"]  # `pwiser(...)`, `PWiseRLoss`
ConvertConversionWithoutClick = Literal["drop", "as_click", "error"]  # `convert`, readers
CONVERSION_WITHOUT_CLICK_IN_LOSS = get_args(LossConversionWithoutClick)
CONVERSION_WITHOUT_CLICK_IN_CONVERT = get_args(ConvertConversionWithoutClick)

__all__ = ["LossName", "SelectMetric", "SELECT_METRICS", "PwiserHead", "PwiserScores",
           "Normalization", "Pairs", "LOSSES",
           "HEADS", "SCORES", "NORMALIZATIONS", "PAIRS", "PWISER_WEIGHT", "MARGIN_CLICK",
           "MARGIN_NONCLICK", "SQUARED", "PWISER_HEAD", "PWISER_SCORES", "NORMALIZATION",
           "PAIRS_DEFAULT", "ERROR", "AS_CLICK", "DROP", "CONVERSION_WITHOUT_CLICK",
           "LossConversionWithoutClick", "ConvertConversionWithoutClick",
           "CONVERSION_WITHOUT_CLICK_IN_LOSS", "CONVERSION_WITHOUT_CLICK_IN_CONVERT"]
