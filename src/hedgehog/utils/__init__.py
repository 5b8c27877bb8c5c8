"""Leaves that any package may import (they import no other hedgehog package): ``errors`` (the user-facing error
types), ``atomic_files`` (writes that never leave a torn file), ``results`` (``results.json``), ``provenance`` (the
commit that ran), ``resolvers`` (the ``${hh.*}`` config resolvers), ``csv_logger``.
"""
