"""The command line, ``dlhisto <step>``: each step's arguments, its run in a confined process.

May import every other sub-package; none imports it.

=============  ==================================================================================
module         holds
=============  ==================================================================================
``parser``     the arguments of every step, built from the options dataclasses
``arguments``  arguments many steps share (outputs, display names, pairing, GeoJSON, stains)
``commands``   runs a step: builds its options, calls its function, writes what it returns
``confine``    each step in a child process confined to its inputs and outputs
``landlock``   Linux Landlock through ctypes
=============  ==================================================================================
"""

from .commands import main

__all__ = ["main"]
