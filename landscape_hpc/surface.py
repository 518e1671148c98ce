"""`python -m landscape_hpc.surface`: the surface command (landscape_hpc/commands/surface.py).

At the package's face `landscape_hpc.surface` is the library function (`lh.surface(model,
data, ...)`, api/surface.py); this file only lets `python -m landscape_hpc.surface` start the
command. Import the command's functions from landscape_hpc.commands.surface.
"""

if __name__ == "__main__":
    from landscape_hpc.commands.surface import main

    main()
