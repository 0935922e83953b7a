"""Training: the recipe, the loop, checkpoints, distributed and mixed-precision switches."""
