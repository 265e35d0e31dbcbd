"""Copies a Keras .weights.h5 file with its floating-point arrays cast to another dtype.

    python -m components.trainer.weights_dtype IN.weights.h5 OUT.weights.h5 --dtype float16

Halves the file a GPU run has to bring back (the vggnet's 42 MB become 21 MB); Keras's
`load_weights` reads either dtype into a float32 network, so `--warm-start` takes the
float16 file as it is (`--dtype float32` turns it back, rounded). Groups, attributes and
non-float arrays are copied unchanged. Needs only h5py and NumPy (no TensorFlow, no Keras).
"""
import argparse
import os
import sys

import h5py
import numpy as np


def cast(source: str, target: str, dtype: str) -> int:
    """Writes `target`; returns how many arrays were cast."""
    casted = 0
    if os.path.abspath(source) == os.path.abspath(target):
        raise ValueError(f"{target}: the output would overwrite its input; name another file")
    if not h5py.is_hdf5(source):
        raise ValueError(f"{source}: not an HDF5 file (expected a Keras .weights.h5)")
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        def copy_attrs(a, b):
            for key, value in a.attrs.items():
                b.attrs[key] = value

        def visit(name, item):
            nonlocal casted
            if isinstance(item, h5py.Group):
                copy_attrs(item, dst.require_group(name))
                return
            data = item[()]
            if isinstance(data, np.ndarray) and np.issubdtype(data.dtype, np.floating):
                data = data.astype(dtype)
                casted += 1
            copy_attrs(item, dst.create_dataset(name, data=data))
        copy_attrs(src, dst)
        src.visititems(visit)
    return casted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    args = parser.parse_args(argv)
    if not os.path.isfile(args.source):
        parser.error(f"{args.source}: no such file")
    print(f"{args.target}: {cast(args.source, args.target, args.dtype)} arrays as {args.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
