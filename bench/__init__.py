"""pytest-benchmark suites over a run folder: every model x backend x device the machine has."""
