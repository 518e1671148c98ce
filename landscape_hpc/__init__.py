"""landscape_hpc: loss landscapes of neural networks, on a laptop or across a GPU cluster."""

__version__ = "0.1.0"
