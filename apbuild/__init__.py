"""apbuild: firmware images for Linux appliances from Debian's signed binary packages."""

__version__ = "0.1.0"
