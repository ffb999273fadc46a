"""Running a trained model: the animator (a checkpoint, or a baseline that copies the source), video
reconstruction and cross-identity animation of test pairs (the ``reconstruct`` and ``animate`` stages' libraries)."""
