"""Running a trained model: the animator (a checkpoint, or a baseline that copies the source) and its one loader,
the one animation loop (the animate stage's and the demo's), video reconstruction and cross-identity animation of
test pairs (the ``reconstruct`` and ``animate`` stages' libraries)."""
