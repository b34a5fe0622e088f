"""Photos in: decoding (EXIF orientation, colour, focal length) and the GPU JPEG path."""
