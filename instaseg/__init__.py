"""instaseg: pure-PyTorch instance segmentation."""

from instaseg.structures import Instances

__version__ = "0.1.0"
__all__ = ["Instances", "__version__"]
