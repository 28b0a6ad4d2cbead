"""The layer over the native core: the cffi calls (``core``), the drain
thread's callbacks (``callbacks``) and the token table that routes them to
their Python sinks (``tokens``).  Nothing here knows of the store, of box
directories or of the public API; everything above reaches the native core
through ``core.NativeRuntime``."""
