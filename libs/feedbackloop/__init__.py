"""feedbackloop: shared libraries (event contract, plumbing). Nothing here reads the environment."""
