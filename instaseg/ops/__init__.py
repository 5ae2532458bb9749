"""Pure tensor and array functions: box geometry and mask codecs. No module state, no I/O."""
