"""bertgeom: SARS-CoV-2 spike variant classification with BERT, and the geometry of BERT."""

__version__ = "0.1.0"
