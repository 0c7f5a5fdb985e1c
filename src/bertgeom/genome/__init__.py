"""bertgeom.genome."""
