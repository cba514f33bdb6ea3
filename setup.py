"""Build amad_fast and its extension amad_fast._C against the torch already installed.

Install with ``pip install --no-build-isolation .`` (build isolation would fetch a second,
CUDA, torch into a throwaway environment and build against that). Environment switches:

- ``AMAD_FAST_SKIP_EXTENSION=1``: build no extension; the package falls back to Triton/reference.
- ``AMAD_FAST_CUDA=auto|1|0``: CUDA kernels when torch has CUDA and nvcc is found (auto, default),
  always (1: fails loudly if they cannot be built), or never (0).
- ``AMAD_FAST_CXX_FLAGS``: extra flags for the C++ compiler (e.g. ``-march=native``).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name, default):
    return os.environ.get(name, default).strip().lower()


def _sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern), recursive=True))


def extension_modules():
    """The C++ extension, with CUDA sources when usable; ([], {}) when skipped."""
    if _flag("AMAD_FAST_SKIP_EXTENSION", "0") in ("1", "true", "yes"):
        print("amad_fast: AMAD_FAST_SKIP_EXTENSION set, building no C++ extension", file=sys.stderr)
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        sys.exit(
            "amad_fast builds its extension against the torch in this environment, and none was found.\n"
            "Install torch first, then run: pip install --no-build-isolation .\n"
            "(or set AMAD_FAST_SKIP_EXTENSION=1 to install without the extension)"
        )
    want_cuda = _flag("AMAD_FAST_CUDA", "auto")
    if want_cuda not in ("auto", "1", "0"):
        sys.exit(f"AMAD_FAST_CUDA: expected auto, 1 or 0, got {want_cuda!r}")
    cuda_usable = torch.version.cuda is not None and CUDA_HOME is not None
    if want_cuda == "1" and not cuda_usable:
        sys.exit(
            f"AMAD_FAST_CUDA=1 but CUDA cannot be built: torch.version.cuda={torch.version.cuda}, CUDA_HOME={CUDA_HOME}"
        )
    with_cuda = want_cuda == "1" or (want_cuda == "auto" and cuda_usable)

    cxx = ["-O3", "-std=c++17"] + os.environ.get("AMAD_FAST_CXX_FLAGS", "").split()
    if sys.platform.startswith("linux"):
        cxx.append("-fopenmp")  # at::parallel_for is OpenMP in the header: without it, it runs serially
    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    kwargs = {"extra_compile_args": {"cxx": cxx}, "extra_link_args": ["-fopenmp"] if "-fopenmp" in cxx else []}
    if with_cuda:
        sources += _sources("csrc/cuda/*.cpp") + _sources("csrc/cuda/*.cu")
        kwargs["extra_compile_args"]["nvcc"] = ["-O3", "-std=c++17", "-lineinfo"]
        kwargs["define_macros"] = [("AMAD_FAST_WITH_CUDA", None)]
        ext = CUDAExtension("amad_fast._C", sources, **kwargs)
    else:
        ext = CppExtension("amad_fast._C", sources, **kwargs)
    print(f"amad_fast: building amad_fast._C ({'CPU + CUDA' if with_cuda else 'CPU'})", file=sys.stderr)
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = extension_modules()

setup(
    name="amad_fast",
    version="0.1.0",
    description="Kernel-accelerated AutoMask attention and the AMAD time-series anomaly detector",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # kernels/ (Triton sources) installs as amad_fast.kernels
    packages=find_packages(include=["amad_fast", "amad_fast.*"], exclude=["amad_fast.kernels"]) + ["amad_fast.kernels"],
    package_dir={"amad_fast.kernels": "kernels"},
    install_requires=["torch>=2.4", "numpy>=1.22", "tqdm>=4.60", "matplotlib>=3.5"],
    extras_require={
        "triton": ["triton>=3.2"],
        # pyod (tests/test_pyod.py) brings numba, llvmlite and scipy; torch is only its optional extra
        "test": ["pytest>=7", "hypothesis>=6", "pytest-benchmark>=4", "scikit-learn>=1.1", "pyod>=2"],
        "baselines": ["scikit-learn>=1.1"],
    },
    entry_points={"console_scripts": ["amad-fast = amad_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
