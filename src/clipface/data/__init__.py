"""Data: face datasets (identity folders), safe image decoding, names, prompts and LFW pair files."""
