"""What the data validation found, read from the outputs of TFX's own validators.

Nothing here computes a statistic from the data: class counts come from the
TFDV statistics of the string label (StatisticsGen), distances and their
thresholds from the DistributionValidator's anomalies (`drift_skew_info`),
schema problems from the ExampleValidator's anomalies. This module only turns
them into `Finding`s (one per breached bound, naming the feature, where it was
measured, the measured value and the threshold) and decides which block.
"""
import dataclasses
import math
import os
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from pipeline import features
from pipeline.config import ValidationConfig

SCHEMA, IMBALANCE, SKEW, DRIFT = "schema", "imbalance", "skew", "drift"
CHECKS = (SCHEMA, IMBALANCE, SKEW, DRIFT)
_MEASURES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity distance",
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE:
        "Jensen-Shannon divergence",
    anomalies_pb2.DriftSkewInfo.Measurement.NORMALIZED_ABSOLUTE_DIFFERENCE:
        "normalized absolute difference",
}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One breached bound. `where`: the split ('train'), or the compared pair
    ('eval vs train', 'span-2 train vs span-1 train')."""
    check: str
    feature: str
    where: str
    message: str
    blocking: bool
    measured: Optional[float] = None
    threshold: Optional[float] = None

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Distance:
    """One distribution comparison, breached or not."""
    check: str          # skew or drift
    feature: str
    where: str
    measure: str
    value: float
    threshold: float
    detail: str = ""    # TFDV's description of a breach (names the value that moved most)

    @property
    def breached(self) -> bool:
        """Above the threshold (on the unrounded value); a NaN distance counts as breached."""
        return not self.value <= self.threshold

    def to_dict(self) -> Dict:
        finite = math.isfinite(self.value)
        return {**dataclasses.asdict(self), "value": round(self.value, 4) if finite else None,
                "breached": self.breached}


def span_name(span: int, default: str = "data") -> str:
    """'span-N', or `default` for data without span folders."""
    return f"span-{span}" if span else default


def pair_name(pair: str, check: str, current: str = "", baseline: str = "") -> str:
    """'<tested> vs <baseline split>' for a DistributionValidator split pair '<a>_<b>',
    with span names for drift ('span-2 train vs span-1 train') and, when the data has
    spans, for skew ('span-2 eval vs train')."""
    tested, base = pair.split("_", 1)
    if check == DRIFT:
        return f"{current} {tested} vs {baseline} {base}".strip()
    return f"{current} {tested} vs {base}".strip()


# ----------------------------------------------------------------------------
# Class distribution and imbalance (from TFDV statistics)
# ----------------------------------------------------------------------------

def class_counts(stats: statistics_pb2.DatasetFeatureStatisticsList,
                 classes: Sequence[str]) -> Dict[str, int]:
    """Per class (every configured class, 0 if absent, plus any unexpected label) the number
    of examples, from the rank histogram TFDV computes for the string label."""
    counts = {c: 0 for c in classes}
    for dataset in stats.datasets:
        for feature in dataset.features:
            if ".".join(feature.path.step) != features.LABEL_NAME_KEY:
                continue
            for bucket in feature.string_stats.rank_histogram.buckets:
                counts[bucket.label] = counts.get(bucket.label, 0) + int(round(bucket.sample_count))
    return counts


def numeric_means(stats: statistics_pb2.DatasetFeatureStatisticsList,
                  names: Iterable[str] = (features.BRIGHTNESS_KEY, features.CONTRAST_KEY)
                  ) -> Dict[str, float]:
    """Mean of each numeric feature in `names`, from TFDV statistics (for the report)."""
    names = set(names)
    out = {}
    for dataset in stats.datasets:
        for feature in dataset.features:
            name = ".".join(feature.path.step)
            if name in names and feature.HasField("num_stats"):
                out[name] = round(feature.num_stats.mean, 4)
    return out


def imbalance_findings(counts: Mapping[str, int], where: str,
                       config: ValidationConfig) -> List[Finding]:
    """Classes below the minimum share, and a largest/smallest ratio above the maximum."""
    total = sum(counts.values())
    if not total:
        return []
    blocking = config.imbalance_action == "block"
    found = []
    for name, count in counts.items():
        share = count / total
        if share < config.min_class_share:
            found.append(Finding(
                IMBALANCE, features.LABEL_NAME_KEY, where,
                f"class '{name}' is {share:.1%} of {where} ({count:,} of {total:,}), below the "
                f"minimum share {config.min_class_share:.1%}",
                blocking, round(share, 4), config.min_class_share))
    largest = max(counts, key=counts.get)
    smallest = min(counts, key=counts.get)
    ratio = counts[largest] / counts[smallest] if counts[smallest] else float("inf")
    if ratio > config.max_imbalance_ratio:
        found.append(Finding(
            IMBALANCE, features.LABEL_NAME_KEY, where,
            f"imbalance ratio {largest}/{smallest} in {where} is {ratio:.1f} "
            f"({counts[largest]:,} / {counts[smallest]:,}), above the maximum "
            f"{config.max_imbalance_ratio:g}",
            blocking, round(ratio, 2) if ratio != float("inf") else None,
            config.max_imbalance_ratio))
    return found


# ----------------------------------------------------------------------------
# Anomalies artifacts (ExampleValidator, DistributionValidator)
# ----------------------------------------------------------------------------

def load_anomalies(uri: str) -> Dict[str, anomalies_pb2.Anomalies]:
    """{split or split pair: Anomalies} from an ExampleAnomalies artifact directory
    (ExampleValidator writes Split-<split>/, DistributionValidator SplitPair-<a>_<b>/)."""
    found = {}
    for prefix in ("Split-", "SplitPair-"):
        for split_dir in sorted(tf.io.gfile.glob(os.path.join(uri, prefix + "*"))):
            path = os.path.join(split_dir, "SchemaDiff.pb")
            if tf.io.gfile.exists(path):
                with tf.io.gfile.GFile(path, "rb") as f:
                    found[os.path.basename(split_dir.rstrip("/"))[len(prefix):]] = (
                        anomalies_pb2.Anomalies.FromString(f.read()))
    return found


def schema_findings(anomalies: Mapping[str, anomalies_pb2.Anomalies],
                    config: ValidationConfig, prefix: str = "") -> List[Finding]:
    """One finding per feature and split the ExampleValidator flagged against the schema."""
    found = []
    for split, proto in anomalies.items():
        for name, info in sorted(proto.anomaly_info.items()):
            text = info.description or info.short_description
            found.append(Finding(SCHEMA, name, prefix + split,
                                 f"{name} in {prefix}{split}: {text}",
                                 config.schema_action == "block"))
        if proto.HasField("dataset_anomaly_info"):
            info = proto.dataset_anomaly_info
            found.append(Finding(SCHEMA, "(dataset)", prefix + split,
                                 f"{prefix}{split}: {info.description or info.short_description}",
                                 config.schema_action == "block"))
    return found


def distances(anomalies: Mapping[str, anomalies_pb2.Anomalies], check: str,
              current: str = "", baseline: str = "") -> List[Distance]:
    """Every measured distance of a DistributionValidator run, with its threshold.
    `current`/`baseline` name the spans compared (see `pair_name`)."""
    out = []
    for pair, proto in anomalies.items():
        where = pair_name(pair, check, current, baseline)
        details = {name: " ".join(r.description for r in info.reason if r.type in _DISTANCE_REASONS)
                   for name, info in proto.anomaly_info.items()}
        for info in proto.drift_skew_info:
            feature = ".".join(info.path.step)
            for measurement in [*info.drift_measurements, *info.skew_measurements]:
                out.append(Distance(check, feature, where,
                                    _MEASURES.get(measurement.type, "distance"),
                                    measurement.value, measurement.threshold,
                                    details.get(feature, "")))
    return out


_DISTANCE_REASONS = (anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH,
                     anomalies_pb2.AnomalyInfo.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH,
                     anomalies_pb2.AnomalyInfo.COMPARATOR_NORMALIZED_ABSOLUTE_DIFFERENCE_HIGH)


def comparison_problems(anomalies: Mapping[str, anomalies_pb2.Anomalies], check: str,
                        config: ValidationConfig, current: str = "", baseline: str = ""
                        ) -> List[Finding]:
    """Comparisons that could not be made (a feature missing from one side, say): these
    are reported as findings too, since a check that did not run proves nothing."""
    found = []
    for pair, proto in anomalies.items():
        where = pair_name(pair, check, current, baseline)
        for name, info in sorted(proto.anomaly_info.items()):
            for reason in info.reason:
                if reason.type not in _DISTANCE_REASONS:
                    found.append(Finding(check, name, where,
                                         f"{check} of {name} ({where}): {reason.description}",
                                         config.drift_action == "block"))
    return found


_MOST_CHANGED = re.compile(r"maximum difference is: (.+?)\.?$")


def distance_findings(measured: Sequence[Distance], config: ValidationConfig) -> List[Finding]:
    """A finding per breached threshold, naming the feature, the distance and the threshold
    (and, for the label, the value whose share moved most, as TFDV reports it)."""
    found = []
    for d in measured:
        if not d.breached:
            continue
        most = _MOST_CHANGED.search(d.detail)
        found.append(Finding(
            d.check, d.feature, d.where,
            f"{d.check} of {d.feature} ({d.where}): {d.measure} {d.value:.4f} above the threshold "
            f"{d.threshold:g}" + (f"; largest change: {most.group(1)}" if most else ""),
            config.drift_action == "block",
            round(d.value, 4) if math.isfinite(d.value) else None, d.threshold))
    return found
