"""Coverage-guided fuzz targets (atheris) for every decoder and datagram handler of srp."""
