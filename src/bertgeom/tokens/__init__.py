"""bertgeom.tokens."""
