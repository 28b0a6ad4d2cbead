"""What is known about boxes, and how it is kept true: the home's store of
records (``store``), each box's directory and its files (``boxdir``), the
statuses and views of a record (``status``, ``views``), the shim as its
directory shows it (``shim``), how runs and commands end (``exits``),
reconciling a record with reality (``reconcile``), the thread that watches
running shims (``monitor``), and rebuilding a lost store (``recovery``).
Above the native layer (``_core``) and below the API (``box``, ``runtime``)."""
