"""An ensemble of exported models, served as one model (`model.Ensemble`).

    fer-pipeline run --data FER2013 --output runs/ensemble --model ensemble --epochs 0 \\
        --ensemble models/fer2013-resnet18 models/fer2013-dcnn models/fer2013-compact

The Trainer reads each member's network out of its SavedModel (`saved_weights`), with
the output rule it serves by (prior correction, calibration temperature: its assets),
and exports their mean through the pipeline's own Transform and signatures, so the
Evaluator, the fairness audit and the Pusher see one model. A member is a model
directory (a version folder or its parent) of this pipeline's export; its architecture
comes from the `recipe` of the shipped `metadata.json` beside it or, for a pushed model
without one, from whichever architecture its variables fit.
"""
import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np

from components.trainer import model as model_lib
from pipeline.ship import METADATA_JSON


@dataclasses.dataclass
class Member:
    path: str                 # the version folder
    architecture: str
    network: keras.Model
    log_bias: np.ndarray
    temperature: float
    prior_strength: float
    shipped: Optional[Dict]   # a shipped member's PublicTest accuracy and macro-F1

    def describe(self) -> Dict:
        """What the exported ensemble records of this member (no folder of this machine)."""
        described = {"model": os.path.basename(os.path.dirname(self.path)),
                     "version": os.path.basename(self.path), "architecture": self.architecture,
                     "parameters": int(self.network.count_params()),
                     "prior_correction": self.prior_strength, "calibration_temperature": self.temperature}
        if self.shipped:
            described.update(self.shipped)
        return described


def _shipped_metadata(version_dir: str) -> Optional[Dict]:
    path = os.path.join(os.path.dirname(version_dir), METADATA_JSON)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        metadata = json.load(f)
    if str(metadata.get("version")) != os.path.basename(version_dir):
        return None   # it describes another version
    return metadata


def checked_member(path: str, classes: Sequence[str], what: str = "") -> Tuple[str, List[str]]:
    """(the version folder at `path`, a version folder or its parent, and the classes its
    `predict_image` serves); a ValueError naming the member (as `what`, when given) unless
    those are `classes`, in that order. The command line runs it before any data is read,
    the Trainer again."""
    from pipeline.ship import served_predictor
    from serving.photos import resolve_model_dir

    version_dir = resolve_model_dir(path, what=what or f"ensemble member {path}")
    served = served_predictor(version_dir)[1]
    if list(served) != list(classes):
        raise ValueError(f"ensemble member {version_dir}: predicts {', '.join(served)}; the pipeline "
                         f"trains on {', '.join(classes)} (same classes in the same order)")
    return version_dir, list(served)


def read_member(path: str, classes: Sequence[str]) -> Member:
    """The member at `path` (a version folder or its parent), checked to predict `classes`
    in that order."""
    from components.trainer.saved_weights import network_from_saved_model
    from pipeline.prior import applied

    version_dir, served = checked_member(path, classes)
    metadata = _shipped_metadata(version_dir)
    architecture = ((metadata or {}).get("recipe") or {}).get("model")
    if architecture:
        network = network_from_saved_model(version_dir, architecture, len(served))
    else:
        network, architecture = _fitting_network(version_dir, len(served))
    rule = applied(version_dir, classes)
    shipped = None
    if metadata:
        shipped = {"publictest_accuracy": metadata["metrics_publictest"]["accuracy"],
                   "publictest_macro_f1": metadata["metrics_publictest"]["macro_f1"]}
    return Member(version_dir, architecture, network, np.asarray(rule.log_bias, np.float32),
                  float(rule.temperature), float(rule.strength), shipped)


def _fitting_network(version_dir: str, num_classes: int):
    from components.trainer.saved_weights import network_from_saved_model

    for architecture in sorted(model_lib.BUILDERS):
        try:
            return network_from_saved_model(version_dir, architecture, num_classes), architecture
        except ValueError:
            continue
    raise ValueError(f"ensemble member {version_dir}: its variables fit none of the architectures "
                     f"{', '.join(sorted(model_lib.BUILDERS))}, and no {METADATA_JSON} beside it names one")


def read_members(paths: Sequence[str], classes: Sequence[str]) -> List[Member]:
    return [read_member(path, classes) for path in paths]


def build(members: Sequence[Member]) -> model_lib.Ensemble:
    """The ensemble network of `members`, built (called once on a blank face)."""
    network = model_lib.Ensemble([m.network for m in members], [m.log_bias for m in members],
                                 [m.temperature for m in members])
    network(np.zeros((1,) + model_lib.INPUT_SHAPE, np.float32))
    return network


def description(members: Sequence[Member]) -> Dict:
    """The record exported beside the ensemble (`features.ENSEMBLE_ASSET`)."""
    from pipeline import features

    return {"rule": features.ENSEMBLE_RULE, "members": [m.describe() for m in members]}
