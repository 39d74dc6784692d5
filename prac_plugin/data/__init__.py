"""Data: Hugging Face and built-in image-classification sources, decoding, augmentation, and batches."""
