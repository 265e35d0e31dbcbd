"""Installs the FER2013 TFX pipeline as a package (`fer-pipeline` console script).

Exact versions live in constraints.txt; install with
`pip install -c constraints.txt -e '.[test]'` (what `make setup` does).
"""
from setuptools import find_packages, setup

setup(
    name="fer-tfx-pipeline",
    version="0.1.0",
    description="TFX pipeline for facial emotion recognition on FER2013",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*",
                                    "serving", "serving.*", "kubeflow", "kubeflow.*"]),
    package_data={"pipeline": ["schema/*.pbtxt"], "kubeflow": ["config.yaml", "samples/*.yaml"]},
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "keras==3.12.4",
        "tf_keras==2.16.0",
        "tensorflow-transform==1.16.0",
        "tensorflow-data-validation==1.16.1",
        "tensorflow-model-analysis==0.47.1",
        "apache-beam[gcp]==2.74.0",
        "dill==0.4.1",
        "protobuf==3.20.3",
        "numpy==1.26.4",
        "pillow",
        "matplotlib",  # training curves
        "tensorflow-serving-api==2.16.1",
        # 4.11 is the last OpenCV that ships the Haar face cascades (5.x dropped them).
        "opencv-python-headless==4.11.0.86",
        "kfp==2.5.0",
    ],
    # JAX (CPU) runs the standalone trainer's test on the backend the GPU machine uses.
    extras_require={"test": ["pytest", "jax[cpu]==0.4.30"]},
    entry_points={"console_scripts": ["fer-pipeline=pipeline.cli:main"]},
)
