"""Foundations every other sub-package stands on; imports nothing of dlhisto.

=============  ==================================================================================
module         holds
=============  ==================================================================================
``errors``     :class:`InputError` (a message for the user, one line) and quieting libraries
``bounds``     parameter bounds and choices declared beside their defaults; the command line's
               options built from them
``threads``    how many CPU threads every library may use (:func:`limit_threads`)
``pipeline``   stages of a computation that overlap, in worker threads
=============  ==================================================================================
"""
