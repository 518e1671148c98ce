"""Commands whose names the library's functions take at the package's face: `lh.surface` is the
function (api/surface.py), `python -m landscape_hpc.surface` the command (commands/surface.py,
started through the shim landscape_hpc/surface.py)."""
