"""PrAC index files (*.prac.safetensors): the format, published scores turned into index files, and Hub publishing."""
