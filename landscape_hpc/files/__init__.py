"""The files a run reads and writes: one module per format, each the only code that reads and
writes it (the layouts: docs/file-format.md).

    hdf5        what the HDF5 result files share: where they may be written, how the ranks of an
                MPI run reach one (collective through parallel HDF5, or gathered on rank 0),
                how a file made for another job is refused
    surface     the surface file: grid, metrics, done mask, directions, PCA trajectory
    sweep       the BN sweep's file: one group per MPO job
    checkpoint  model checkpoints (weights_only unless trusted from the command line)
    vtp         the VTK export of a surface for ParaView (a .vtu through meshio)
"""
