"""instaseg: pure-PyTorch instance segmentation.

`instaseg.load_model(path_or_name)` gives an object with `.predict`, `.train`, `.val`.
"""

from typing import Any

from instaseg.structures import Instances

__version__ = "0.1.0"
__all__ = ["Instances", "Model", "__version__", "load_model"]


def __getattr__(name: str) -> Any:
    # The model API imports torch models and the engine: load it on first use only, so that
    # `import instaseg` (and the data tools) stay light.
    if name in ("load_model", "Model"):
        from instaseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'instaseg' has no attribute {name!r}")
