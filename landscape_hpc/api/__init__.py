"""The library: one function per question, taking what a PyTorch user holds (an nn.Module, data
as tensors, a Dataset or a DataLoader, a loss), exported at the package's face
(landscape_hpc/__init__.py). The commands build these functions' arguments from their configs.

surface     `surface`, `interpolate`; `compute`, the one code path under them and the command
run         a grid of points over the MPI pool, into a file or memory
sharpness   `lines` (n 1D curves at once), `sharpness` (where the loss has risen by a fixed
            amount along each: a flatness scalar)
results     surfaces as xarray Datasets; `save` and `load` (the command's HDF5 format)
directions  `random_directions` (Li et al.'s filter-normalised directions), `pca_directions`
            (PCA of a training trajectory, the path projected)
mpo         `fit_mpo`, `mpo_mask`: multi-point optimisation, a plane that draws a pattern
curvature   `hessian`: extreme eigenvalues and trace at the model's weights; `hessian_map`: over
            a surface's grid
geometry    `tunnel`, `connector`, `tunnel_width`: between and around trained nets (Fort &
            Jastrzebski 2019, sec. 4)
short_dirs  `short_directions`: how many of N random directions at a net are short, with an
            exact binomial interval
swa         `swa_average`: snapshots' weights averaged, BN statistics recomputed at the average
intrinsic_dim  `subspace_training` in random hyperplanes; `wedge`, the n-wedge toy model
options     engine options from keyword arguments, devices, data as the engine takes them
"""
