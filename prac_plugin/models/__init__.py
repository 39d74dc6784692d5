"""Models: timm's factory, the classic lottery-ticket architectures registered into timm, BatchNorm helpers."""
