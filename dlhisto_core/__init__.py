"""dlhisto: image analysis for digital histology, one step per Galaxy tool."""

__version__ = "0.1.0"
