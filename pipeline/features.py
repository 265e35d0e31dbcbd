"""Single source of truth for labels, feature keys, signature and tensor names.

Everything that names an emotion, a tf.Example feature, a transformed feature,
a serving signature or one of its tensors imports it from here: ingestion,
Transform, the Trainer, TFMA configuration, serving clients and tests.
"""
import hashlib
from typing import List, Sequence, Tuple

# FER2013 emotions in the order of the integer codes of the original CSV
# release (fer2013.csv column `emotion`: 0 angry ... 6 neutral).
EMOTIONS: Tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

IMAGE_SIZE = 48  # FER2013 faces are 48x48 grayscale.
IMAGE_CHANNELS = 1
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE

# FER2013 `Usage` values and the pipeline split each one feeds.
USAGE_TRAINING = "Training"
USAGE_PUBLIC_TEST = "PublicTest"
USAGE_PRIVATE_TEST = "PrivateTest"
SPLIT_BY_USAGE = {USAGE_TRAINING: "train", USAGE_PUBLIC_TEST: "eval", USAGE_PRIVATE_TEST: "test"}
SPLITS: Tuple[str, ...] = ("train", "eval", "test")
# Kaggle folder layout (train/<emotion>/, test/<emotion>/): test/ files named
# PrivateTest_* are the PrivateTest half; the rest of test/ is PublicTest.
PRIVATE_TEST_FILE_PREFIX = USAGE_PRIVATE_TEST + "_"


def folder_split(folder: str, file_name: str) -> str:
    """The split a file of the folder layout feeds: everything in train/ feeds train;
    in test/, PrivateTest_* files feed test and the others (PublicTest) eval."""
    if folder == "train":
        return "train"
    return "test" if file_name.startswith(PRIVATE_TEST_FILE_PREFIX) else "eval"

# Raw tf.Example features written by the ExampleGen.
IMAGE_KEY = "image"              # encoded image bytes (JPEG as downloaded, or PNG)
LABEL_KEY = "label"              # FER2013 integer code of the emotion (index into EMOTIONS)
LABEL_NAME_KEY = "label_name"    # emotion name
SOURCE_SPLIT_KEY = "source_split"  # FER2013 Usage the record came from
IMAGE_ID_KEY = "image_id"        # stable id: file stem, or <Usage>_<row> for CSV rows
BRIGHTNESS_KEY = "brightness"    # mean pixel value / 255, computed once at ingestion
CONTRAST_KEY = "contrast"        # standard deviation of the pixels / 255, likewise
# Proxy slices from the image itself (NOT demographics): brightness and contrast
# bands, cut at the tertiles of the FER2013 train split (0.45/0.56 and 0.19/0.23).
BRIGHTNESS_BAND_KEY = "brightness_band"   # dark | medium | bright
CONTRAST_BAND_KEY = "contrast_band"       # low | medium | high
BRIGHTNESS_BANDS = ((0.45, "dark"), (0.56, "medium"), (float("inf"), "bright"))
CONTRAST_BANDS = ((0.19, "low"), (0.23, "medium"), (float("inf"), "high"))
RAW_FEATURE_KEYS = (IMAGE_KEY, LABEL_KEY, LABEL_NAME_KEY, SOURCE_SPLIT_KEY, IMAGE_ID_KEY,
                    BRIGHTNESS_KEY, CONTRAST_KEY, BRIGHTNESS_BAND_KEY, CONTRAST_BAND_KEY)


def band(value: float, bands) -> str:
    """The name of the first band whose upper bound exceeds `value`."""
    return next(name for upper, name in bands if value < upper)

# Transformed features written by Transform.
PIXELS_KEY = "pixels"            # float32 [48, 48, 1] in [0, 1]
CLASS_ID_KEY = "class_id"        # int64 index into the configured class list

# Exported SavedModel signatures and their tensors.
SERVING_DEFAULT_SIGNATURE = "serving_default"   # serialized tf.Example -> predictions
PREDICT_IMAGE_SIGNATURE = "predict_image"       # encoded JPEG/PNG bytes -> predictions
TRANSFORM_FEATURES_SIGNATURE = "transform_features"  # serialized tf.Example -> transformed
# predict_image_<views>: as predict_image, each face asked in the test-time views of that
# name (components.trainer.model.TEST_TIME_VIEWS), the answer their mean probability.
# As predict_image_flip for the faces the model is unsure of (top one-view probability
# under a threshold fitted at export), as predict_image for the others: most of the flip's
# accuracy for a fraction of its work.
# `fer-pipeline predict --tta flip_when_unsure` names it by the part after predict_image_.
FLIP_WHEN_UNSURE = "flip_when_unsure"
FLIP_WHEN_UNSURE_SIGNATURE = f"{PREDICT_IMAGE_SIGNATURE}_{FLIP_WHEN_UNSURE}"
EXAMPLES_INPUT = "examples"
IMAGES_INPUT = "images"
PROBABILITIES_OUTPUT = "probabilities"
LABEL_OUTPUT = "label"
CLASSES_OUTPUT = "classes"       # [N, C] class names in the order of `probabilities`
# Beside a SavedModel exported with a prior correction: its strength, counts and bias.
PRIOR_CORRECTION_ASSET = "assets.extra/prior_correction.json"
# Beside a SavedModel exported with a calibration temperature other than 1: the temperature.
CALIBRATION_ASSET = "assets.extra/calibration.json"
# Beside every SavedModel since 2026-12-07: the threshold of FLIP_WHEN_UNSURE_SIGNATURE and its fit.
FLIP_WHEN_UNSURE_ASSET = "assets.extra/flip_when_unsure.json"
# How the served probabilities follow from the network's (both assets state it): the
# temperature is 1 and the bias 0 when the model has no such asset.
OUTPUT_RULE = "probabilities = softmax((log(network probabilities) + log_bias) / temperature)"
# The Trainer's records in its model_run folder (components.trainer.run writes them,
# pipeline.summary reads them).
HISTORY_JSON = "history.json"
TRAINING_CONFIG_JSON = "training_config.json"
CLASS_BALANCE_JSON = "class_balance.json"
# Beside a SavedModel of an ensemble (TrainingConfig.ensemble): its members and their rules.
ENSEMBLE_ASSET = "assets.extra/ensemble.json"
ENSEMBLE_RULE = ("probabilities = the mean of the members' probabilities, each member's by its own "
                 "rule: " + OUTPUT_RULE)


def views_signature(views: str) -> str:
    """The exported signature that answers with the test-time views named `views`."""
    return f"{PREDICT_IMAGE_SIGNATURE}_{views}"


# The validation carve-out: early-stopping data taken out of train by an MD5 bucket of
# each face's id and emotion. The Trainer and the standalone trainer carve out the same
# faces, so weights trained by one are never validated (or calibrated) by the other on
# faces they were trained on.
CARVE_OUT_BUCKETS = 1000


def carve_out_key(image_id: str, emotion: str) -> str:
    """The string the carve-out hashes: the id with '-<emotion>' appended (an id that
    ingestion already made unique that way is kept as it is)."""
    suffix = f"-{emotion}"
    return image_id if image_id.endswith(suffix) else image_id + suffix


def in_carve_out(keys: Sequence[str], fraction: float) -> List[bool]:
    """For each `carve_out_key`: whether its face belongs to the validation carve-out
    (its MD5 falls in the first `fraction` of CARVE_OUT_BUCKETS buckets)."""
    limit = int(round(fraction * CARVE_OUT_BUCKETS))
    return [int(hashlib.md5(k.encode()).hexdigest()[:8], 16) % CARVE_OUT_BUCKETS < limit for k in keys]


def validate_classes(classes: Sequence[str]) -> Tuple[str, ...]:
    """Returns `classes` as a tuple in FER2013 code order, or raises ValueError."""
    names = [c.strip().lower() for c in classes if c.strip()]
    unknown = sorted(set(names) - set(EMOTIONS))
    if unknown:
        raise ValueError(f"unknown emotion(s) {', '.join(unknown)}; choose from {', '.join(EMOTIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate emotion in classes: {', '.join(names)}")
    if len(names) < 2:
        raise ValueError("at least two classes are needed")
    return tuple(e for e in EMOTIONS if e in names)
