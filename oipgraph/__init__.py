"""oipgraph: optimal input patterns (OIPs) for the feature maps of a trained CNN."""

__version__ = "0.1.0"
