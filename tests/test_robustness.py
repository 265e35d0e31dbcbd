"""pipeline.robustness: the corruptions themselves, and a shipped model scored under them."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from pipeline import robustness, ship
from pipeline.scoring import probability_metrics
from tests.conftest import FER2013, REPO

COMPACT = str(REPO / "models" / "fer2013-compact")


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), np.float32)


@pytest.fixture(scope="module")
def faces():
    """Two smooth 'faces' (48 px and 96 px), as PNG bytes and pixels."""
    rows, cols = np.mgrid[0:48, 0:48]
    small = 60 + 120 * (rows / 47) * (0.5 + 0.5 * np.cos(cols / 6))
    large = np.kron(small, np.ones((2, 2)))
    return [_png(small), _png(large)], [small, large]


@pytest.mark.parametrize("name", list(robustness.CORRUPTIONS))
def test_each_corruption_keeps_the_face_size_and_grows_with_its_severity(faces, name):
    images, pixels = faces
    distances = []
    for severity in robustness.SEVERITIES:
        out = robustness.corrupt(images, name, severity, ["small.png", "large.png"])
        again = robustness.corrupt(images, name, severity, ["small.png", "large.png"])
        assert out == again  # reproducible, noise included
        seen = [_decoded(data) for data in out]
        assert [s.shape for s in seen] == [p.shape for p in pixels]
        assert out[0][:3] == (b"\xff\xd8\xff" if name == "jpeg" else b"\x89PN")
        distances.append(float(np.mean(np.abs(seen[0] - np.rint(pixels[0])))))
    assert 0 < distances[0] < distances[2], distances
    # a band at a fraction of the height covers the same share of a larger face
    if name in ("eyes_covered", "mouth_covered"):
        small, large = (_decoded(d) for d in robustness.corrupt(images, name, 2, ["a", "b"]))
        assert np.mean(small != np.rint(faces[1][0])) == pytest.approx(np.mean(large != np.rint(faces[1][1])), abs=0.03)


def test_corrupt_names_what_it_cannot_do(faces):
    images, _ = faces
    with pytest.raises(ValueError, match="corruption 'fog': choose from darker, brighter"):
        robustness.corrupt(images, "fog", 1, ["a", "b"])
    with pytest.raises(ValueError, match="severity 4: choose from 1, 2, 3"):
        robustness.corrupt(images, "noise", 4, ["a", "b"])
    with pytest.raises(ValueError, match="broken.jpg: not a readable image"):
        robustness.corrupt([b"not an image"], "noise", 1, ["test/happy/broken.jpg"])


def test_the_shipped_compact_model_under_corruption_through_its_served_signature(tmp_path, capsys):
    if not (FER2013 / "test").is_dir():
        pytest.skip("FER2013 not found")
    report_path = tmp_path / "robustness.json"
    assert robustness.main(["--data", str(FER2013), "--model", COMPACT, "--per-class", "12",
                            "--corruptions", "noise,eyes_covered", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    printed = capsys.readouterr().out
    assert "| noise | " in printed and "| eyes_covered | " in printed
    assert report["examples"] == 7 * 12 and list(report["corruptions"]) == ["noise", "eyes_covered"]
    # the clean faces score as the ship step scores them
    predictor = ship.served_predictor(report["model"])
    truth, probabilities = ship.publictest_probabilities(predictor, str(FER2013), per_class=12)
    clean = probability_metrics(truth, probabilities, predictor[1])
    assert report["clean"]["accuracy"] == clean["accuracy"]
    assert report["clean"]["macro_f1"] == clean["macro_f1"]
    for row in report["corruptions"].values():
        accuracies = [row["severities"][str(s)]["accuracy"] for s in robustness.SEVERITIES]
        assert row["mean_accuracy"] == pytest.approx(np.mean(accuracies), abs=1e-4)
        assert set(row["severities"]["1"]["recall"]) == set(report["classes"])
    # the worst noise costs this model a lot: a fact the README reports, checked loosely
    assert report["corruptions"]["noise"]["severities"]["3"]["accuracy"] < report["clean"]["accuracy"] - 0.15


def test_robustness_names_a_wrong_corruption_or_signature_in_one_line(capsys):
    assert robustness.main(["--data", str(FER2013), "--model", COMPACT, "--corruptions", "fog,noise"]) == 2
    assert capsys.readouterr().err == ("error: --corruptions fog: choose from " +
                                       ", ".join(robustness.CORRUPTIONS) + "\n")
    assert robustness.main(["--data", str(FER2013), "--model", COMPACT, "--signature", "serving_default"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "no image signature 'serving_default'" in error
    assert "predict_image_flip" in error and error.count("\n") == 1


def test_the_readme_robustness_table_is_the_one_the_benchmark_files_give():
    readme = (REPO / "README.md").read_text()
    for name, row_name in (("resnet18", "`fer2013-resnet18`"), ("dcnn", "`fer2013-dcnn`"),
                           ("compact", "`fer2013-compact`"),
                           ("compact_1796635826", "`fer2013-compact` before camera distortions (1796635826)")):
        report = json.loads((REPO / "benchmarks" / f"robustness_{name}_publictest.json").read_text())
        cells = [f"{report['clean']['accuracy']:.1%}"] + [
            f"{row['mean_accuracy']:.1%}" for row in report["corruptions"].values()]
        assert f"| {row_name} | " + " | ".join(cells) + " |" in readme, name
        assert list(report["corruptions"]) == list(robustness.CORRUPTIONS)
    # the shipped compact model's file is of its shipped version
    shipped = json.loads((REPO / "models" / "fer2013-compact" / ship.METADATA_JSON).read_text())
    report = json.loads((REPO / "benchmarks" / "robustness_compact_publictest.json").read_text())
    assert report["model"] == f"models/fer2013-compact/{shipped['version']}"
    assert report["clean"]["accuracy"] == shipped["metrics_publictest"]["accuracy"]
