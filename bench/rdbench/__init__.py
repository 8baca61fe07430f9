"""The rate-distortion benchmark behind bench/rd.py: diffcodec's rungs against the codecs people use."""
