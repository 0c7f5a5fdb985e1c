"""bertgeom.io."""
