"""bertgeom's k-mer tokenizer for AutoTokenizer (trust_remote_code=True).

It needs the bertgeom package installed (pip install bertgeom); see its README.
"""

from bertgeom.model.hf_tokenizer import BertgeomKmerTokenizer

__all__ = ["BertgeomKmerTokenizer"]
